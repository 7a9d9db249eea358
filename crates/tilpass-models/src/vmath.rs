//! Elementary functions written without branches or library calls, so that a loop over a
//! slice compiles to vector instructions (the standard library's `f32::tanh` and `f32::exp`
//! are scalar libm calls in every lane).

/// `tanh(x)` for f32, evaluated by [`tanh_f64`] and rounded once: the correctly rounded value
/// except where the exact one lies within ~1e-12 relative of a rounding boundary (then the
/// neighbour, one ulp away; none among ~88 million inputs tested); NaN stays NaN, `±∞` gives
/// `±1`. Branch-free: loops over slices vectorise (8 f64 lanes with AVX-512).
#[inline(always)]
pub fn tanh_f32(x: f32) -> f32 {
    let th = (tanh_f64(f64::from(x).abs()) as f32).copysign(x);
    if x.is_nan() { x } else { th }
}

/// `tanh(a)` for `a >= 0` (not NaN) to ~1e-12 relative, without branches: `e / (e + 2)` with
/// `e = expm1(2a)`, `expm1` from `2a = n·ln 2 + r` (`|r| <= ln 2 / 2`), a degree-11 Taylor
/// polynomial for `expm1(r)` (relative error below 2e-14) and `2^n` from the exponent bits.
/// For f32 results and f64 intermediates rounded once to f32 (such as [`tanh_f32`]); not a
/// substitute for `f64::tanh` where full f64 precision matters.
#[inline(always)]
pub fn tanh_f64(a: f64) -> f64 {
    // tanh(20) = 1 - 8.5e-18 is 1 in f64; 2 · 20 keeps 2^n well inside f64.
    let (scale, q) = exp_parts(2.0 * a.min(20.0));
    // expm1(2a) = 2^n (1 + q) - 1, exact for n = 0 where a is small.
    let e = scale * q + (scale - 1.0);
    e / (e + 2.0)
}

/// `exp(x)` for f32, evaluated in f64 and rounded once: the correctly rounded value except
/// where the exact one lies within ~1e-14 relative of a rounding boundary (then the neighbour,
/// one ulp away), as libm's `expf` (glibc: within 0.502 ulp). Overflow gives `+∞`, underflow
/// subnormals and then `+0`, NaN stays NaN. Branch-free: loops over slices vectorise (8 f64
/// lanes with AVX-512), where `f32::exp` is a libm call per element.
///
/// `x = n·ln 2 + r` with `|r| <= ln 2 / 2`, a degree-11 Taylor polynomial for `exp(r)`
/// (relative error below 2e-14) and `2^n` from the exponent bits.
#[inline(always)]
pub fn exp_rounded_f32(x: f32) -> f32 {
    // exp(-110) is below half the smallest f32 subnormal and exp(90) above f32::MAX, so the
    // clamp changes no result; it keeps 2^n a normal f64. NaN passes through `clamp`.
    let (scale, q) = exp_parts(f64::from(x).clamp(-110.0, 90.0));
    ((1.0 + q) * scale) as f32
}

/// `exp(y) = 2^n · (1 + q)`: `(2^n, q)` with `y = n·ln 2 + r`, `|r| <= ln 2 / 2` and
/// `q = expm1(r)` from a degree-11 Taylor polynomial (relative error below 2e-14), for
/// `-1000 < y < 700` (`2^n` a normal f64) or NaN (then NaN parts). Branch-free.
#[inline(always)]
fn exp_parts(y: f64) -> (f64, f64) {
    const LOG2E: f64 = std::f64::consts::LOG2_E;
    // ln 2 in two parts (the high part with its low 32 bits zero, so `n · LN2_HI` is exact
    // for the |n| < 2^20 used here).
    const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
    const LN2_LO: f64 = std::f64::consts::LN_2 - LN2_HI;
    // 1.5 · 2^52: adding it rounds a small f64 to an integer held in the low mantissa bits.
    const SHIFTER: f64 = 6_755_399_441_055_744.0;
    let t = y * LOG2E + SHIFTER;
    let n = t - SHIFTER;
    let r = (y - n * LN2_HI) - n * LN2_LO;
    // expm1(r) = r + r²/2! + ... + r¹¹/11!, by Horner from the highest term.
    let mut p = 1.0 / 39_916_800.0;
    p = p * r + 1.0 / 3_628_800.0;
    p = p * r + 1.0 / 362_880.0;
    p = p * r + 1.0 / 40_320.0;
    p = p * r + 1.0 / 5_040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    let q = r + r * r * p;
    // 2^n: the integer in t's low bits (two's complement) moved into the exponent field.
    let k = t.to_bits().wrapping_sub(SHIFTER.to_bits());
    (f64::from_bits(k.wrapping_add(1023) << 52), q)
}

#[cfg(test)]
mod tests {
    use super::tanh_f32;

    /// The number of f32 steps between `a` and `b` (same sign assumed or both near zero).
    fn ulps(a: f32, b: f32) -> u32 {
        let key = |v: f32| {
            let i = v.to_bits() as i32;
            if i < 0 { i32::MIN - i } else { i }
        };
        key(a).abs_diff(key(b))
    }

    #[test]
    fn tanh_is_within_one_ulp_of_f64_tanh_everywhere() {
        // Every 97th f32 bit pattern of both signs (~88 million values, all binades, subnormals
        // and the saturated range; every 4099th, ~2 million, in an unoptimised test build):
        // against f64's tanh rounded to f32.
        let step = if cfg!(debug_assertions) { 4099 } else { 97 };
        let (mut worst, mut off) = (0u32, 0usize);
        let mut bits = 0u32;
        while bits < 0x7f80_0000 {
            for x in [f32::from_bits(bits), -f32::from_bits(bits)] {
                let want = (f64::from(x)).tanh() as f32;
                let got = tanh_f32(x);
                let d = ulps(got, want);
                worst = worst.max(d);
                off += usize::from(d > 0);
                assert!(d <= 1, "tanh({x:e}) = {got:e}, f64 gives {want:e}");
            }
            bits += step;
        }
        eprintln!("tanh_f32: worst {worst} ulp, {off} values one ulp off (every {step}th pattern)");
        assert!(
            off < 1000,
            "{off} values one ulp off: the polynomial is too short"
        );
    }

    #[test]
    fn tanh_keeps_the_special_values() {
        assert!(tanh_f32(f32::NAN).is_nan());
        assert_eq!(tanh_f32(f32::INFINITY), 1.0);
        assert_eq!(tanh_f32(f32::NEG_INFINITY), -1.0);
        assert_eq!(tanh_f32(0.0).to_bits(), 0.0f32.to_bits());
        assert_eq!(tanh_f32(-0.0).to_bits(), (-0.0f32).to_bits());
        assert_eq!(tanh_f32(1e-30), 1e-30);
        assert_eq!(tanh_f32(f32::from_bits(1)), f32::from_bits(1));
        assert_eq!(tanh_f32(9.5), (9.5f64.tanh()) as f32);
    }

    #[test]
    fn tanh_f64_is_within_1e_12_relative() {
        let mut worst = 0.0f64;
        for i in 0..200_000 {
            let a = f64::from(i) * 1.3e-4 + 1e-300;
            let (got, want) = (super::tanh_f64(a), a.tanh());
            assert!(got.is_finite());
            worst = worst.max((got - want).abs() / want);
        }
        assert_eq!(super::tanh_f64(50.0), 1.0);
        assert!(worst < 1e-12, "worst relative error {worst:e}");
    }

    #[test]
    fn exp_is_within_one_ulp_of_f64_exp_everywhere() {
        // Every 97th f32 bit pattern of both signs (every 4099th in an unoptimised build),
        // against f64's exp rounded to f32 and against libm's expf; results from +0 through
        // subnormals to +inf.
        use super::exp_rounded_f32;
        let step = if cfg!(debug_assertions) { 4099 } else { 97 };
        let (mut off, mut off_libm, mut worst_libm) = (0usize, 0usize, 0u32);
        let mut bits = 0u32;
        while bits < 0x7f80_0000 {
            for x in [f32::from_bits(bits), -f32::from_bits(bits)] {
                let want = f64::from(x).exp() as f32;
                let got = exp_rounded_f32(x);
                let d = ulps(got, want);
                off += usize::from(d > 0);
                assert!(d <= 1, "exp({x:e}) = {got:e}, f64 gives {want:e}");
                let dl = ulps(got, x.exp());
                worst_libm = worst_libm.max(dl);
                off_libm += usize::from(dl > 0);
            }
            bits += step;
        }
        eprintln!(
            "exp_rounded_f32: {off} values one ulp off f64's exp, {off_libm} off libm's expf \
             (worst {worst_libm} ulp; every {step}th pattern)"
        );
        assert!(
            off < 100,
            "{off} values one ulp off: the polynomial is too short"
        );
        assert!(worst_libm <= 1, "{worst_libm} ulp from libm");
    }

    #[test]
    fn exp_keeps_the_special_values() {
        use super::exp_rounded_f32 as exp;
        assert!(exp(f32::NAN).is_nan());
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp(f32::NEG_INFINITY).to_bits(), 0);
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-0.0), 1.0);
        assert_eq!(exp(88.72283), 88.72283f32.exp());
        assert_eq!(exp(88.7229), f32::INFINITY);
        assert_eq!(exp(-103.0), (-103.0f64).exp() as f32);
        assert!(exp(-103.0) > 0.0 && !exp(-103.0).is_normal());
        assert_eq!(exp(-104.0).to_bits(), 0);
        assert_eq!(exp(1.0), std::f32::consts::E);
    }
}
