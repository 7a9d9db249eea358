//! Feed-forward activations: transformers' `ACT2FN` names ([`Activation`]), the tanh GELU
//! (`gelu_new`) and the exact GELU with a fast host-side `erf` on Flex.

use burn::tensor::{Device, Tensor, TensorData};

/// `gelu_new`: `0.5 x (1 + tanh(sqrt(2/π) (x + 0.044715 x³)))`.
pub fn gelu_new<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let inner = (x.clone() + x.clone().powi_scalar(3).mul_scalar(0.044715))
        .mul_scalar((2.0 / std::f64::consts::PI).sqrt());
    x.mul_scalar(0.5) * inner.tanh().add_scalar(1.0)
}

/// The activation functions of transformers' `ACT2FN` that the encoders use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `gelu`: exact, with erf.
    Gelu,
    /// `gelu_new` / `gelu_pytorch_tanh` / `gelu_fast`: the tanh approximation.
    GeluTanh,
    /// `relu`.
    Relu,
    /// `silu` / `swish`.
    Silu,
}

impl Activation {
    /// Parses a `hidden_act` / `dense_act_fn` name; `None` when unknown.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "gelu" => Self::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Self::GeluTanh,
            "relu" => Self::Relu,
            "silu" | "swish" => Self::Silu,
            _ => return None,
        })
    }

    /// Applies the activation element-wise.
    pub fn apply<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        use burn::tensor::activation as a;
        match self {
            Self::Gelu => gelu_exact(x),
            Self::GeluTanh => gelu_new(x),
            Self::Relu => a::relu(x),
            Self::Silu => a::silu(x),
        }
    }

    /// `act(x) · up` (without `up`: [`Activation::apply`]); under autodiff on Flex one recorded
    /// operation with a host backward for SiLU and `gelu_new` (`train_kernels::activation_mul`,
    /// with the `flex` feature).
    pub fn apply_mul<const D: usize>(self, x: Tensor<D>, up: Option<Tensor<D>>) -> Tensor<D> {
        #[cfg(feature = "flex")]
        if let Some(y) = crate::train_kernels::activation_mul(self, &x, up.as_ref()) {
            return y;
        }
        match up {
            Some(u) => self.apply(x) * u,
            None => self.apply(x),
        }
    }
}

/// erf(x) for f32 as a rational polynomial (Eigen's / TensorFlow's float `erf`: odd degree-13
/// numerator over even degree-8 denominator on `[-4, 4]`, ±1 beyond), within a few ulp of
/// the exact value and branch-free, so the loop vectorises.
#[inline]
pub fn erf_f32(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.726_142_3e-10 + 2.770_681_4e-8;
    p = p * x2 + -2.101_024e-6;
    p = p * x2 + -5.692_506_4e-5;
    p = p * x2 + -7.349_906e-4;
    p = p * x2 + -2.954_6e-3;
    p = p * x2 + -1.609_603_3e-2;
    let p = p * x;
    let mut q = x2 * -1.456_607_2e-5 + -2.133_740_6e-4;
    q = q * x2 + -1.682_827e-3;
    q = q * x2 + -7.373_329e-3;
    q = q * x2 + -1.426_474e-2;
    p / q
}

/// True for a plain Flex (CPU) device, not wrapped in autodiff (burn prints it
/// `Device<Flex(Cpu)>`; library crates enable no backend, so the variant cannot be matched).
pub fn is_flex(device: &Device) -> bool {
    crate::pool::on_flex(device) && !format!("{device:?}").contains("Autodiff")
}

/// Exact GELU, `x · Φ(x) = 0.5 x (1 + erf(x / √2))` (transformers' `gelu`). On Flex, outside
/// autodiff, it runs on the host with [`erf_f32`] (burn's Flex kernel calls a scalar libm
/// `erf` per element, which took a fifth of a BERT forward pass); elsewhere burn's `gelu`.
pub fn gelu_exact<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let device = x.device();
    if !is_flex(&device) || x.is_require_grad() {
        return burn::tensor::activation::gelu(x);
    }
    let shape = x.dims();
    if x.dtype() != burn::tensor::DType::F32 {
        return burn::tensor::activation::gelu(x);
    }
    let Ok(mut v) = x.into_data().try_into_vec::<f32>() else {
        unreachable!("an f32 tensor converts to Vec<f32>")
    };
    gelu_in_place(&mut v);
    Tensor::from_data(TensorData::new(v, shape), &device)
}

/// Exact GELU of every element, in place, with the widest vectors the CPU has (AVX-512 or
/// AVX2 + FMA, detected at run time; the default x86-64 target compiles the loop to 4-wide
/// SSE). The same operations in the same order on every path, so the results are identical.
fn gelu_in_place(v: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            unsafe { gelu_avx512(v) };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            unsafe { gelu_avx2(v) };
            return;
        }
    }
    gelu_loop(v);
}

/// The GELU loop, inlined into each target-feature variant so that it vectorises for it.
#[inline(always)]
fn gelu_loop(v: &mut [f32]) {
    const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
    for e in v.iter_mut() {
        *e = 0.5 * *e * (1.0 + erf_f32(*e * FRAC_1_SQRT_2));
    }
}

/// [`gelu_loop`] compiled for AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gelu_avx512(v: &mut [f32]) {
    gelu_loop(v);
}

/// [`gelu_loop`] compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_avx2(v: &mut [f32]) {
    gelu_loop(v);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erf by its Taylor series (|x| < 3) / continued fraction, in f64: the reference.
    fn erf_ref(x: f64) -> f64 {
        if x.abs() < 3.0 {
            let mut sum = 0.0;
            let mut term = x;
            let mut n = 0.0;
            while term.abs() > 1e-17 {
                sum += term / (2.0 * n + 1.0);
                n += 1.0;
                term *= -x * x / n;
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            // erfc by Lentz's continued fraction.
            let a = x.abs();
            let mut f = a;
            for k in (1..60).rev() {
                f = a + (k as f64 / 2.0) / f;
            }
            let erfc = (-a * a).exp() / (f * std::f64::consts::PI.sqrt());
            (1.0 - erfc) * x.signum()
        }
    }

    #[test]
    fn vectorised_gelu_equals_the_plain_loop_bit_for_bit() {
        // Odd length (a vector tail), wide range, the clamp edges and a NaN.
        let mut xs: Vec<f32> = (0..10_007).map(|i| (i as f32 - 5_003.0) * 1.7e-3).collect();
        xs.extend([-4.0, 4.0, -7.5, 9.0, 0.0, -0.0, f32::NAN, 1e-30]);
        let mut want = xs.clone();
        super::gelu_loop(&mut want);
        let mut got = xs;
        super::gelu_in_place(&mut got);
        for (g, w) in got.iter().zip(&want) {
            assert!(
                g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                "{g} vs {w}"
            );
        }
    }

    #[test]
    fn fast_erf_is_within_a_few_ulp() {
        let mut worst = 0f64;
        for i in -60_000..=60_000 {
            let x = i as f64 * 1e-4;
            let d = (f64::from(erf_f32(x as f32)) - erf_ref(x)).abs();
            worst = worst.max(d);
        }
        assert!(worst < 5e-7, "max error {worst}");
    }
}
