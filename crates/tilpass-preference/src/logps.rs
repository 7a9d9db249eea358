//! Log-probability inputs: per-token log-probs with their completion masks, the sequence
//! reductions the losses take (sum, average, LD-DPO weighting), the SFT term and WPO weights, and
//! the host-side checks every loss runs on its inputs.

use burn::tensor::{DType, Device, Int, Tensor, TensorData};

use crate::error::{PreferenceError, Result};

/// Per-token log-probabilities of completions and the mask of completion tokens.
///
/// `logps[b, t]` is log p(y_t | x, y_<t) at the (shifted) position `t` of row `b`, `[batch, seq]`;
/// `mask[b, t]` is 1.0 on completion tokens and 0.0 on prompt and padding, `[batch, seq]`, in the
/// same float dtype. Log-probs outside the mask are ignored (TRL's fused head gives 0 there).
#[derive(Debug, Clone)]
pub struct TokenLogps {
    /// Log-probabilities, `[batch, seq]`.
    pub logps: Tensor<2>,
    /// Completion mask (0.0 / 1.0), `[batch, seq]`.
    pub mask: Tensor<2>,
}

impl TokenLogps {
    /// Pairs per-token log-probs with their completion mask (checked when used).
    pub fn new(logps: Tensor<2>, mask: Tensor<2>) -> Self {
        Self { logps, mask }
    }

    /// Checks shapes (equal, non-empty), finite log-probs and a 0/1 mask; returns the mask on the
    /// host, row-major, with its `[batch, seq]` shape.
    pub(crate) fn check(&self, name: &'static str) -> Result<(Vec<f64>, [usize; 2])> {
        let dims = self.logps.dims();
        if self.mask.dims() != dims {
            return Err(PreferenceError::Shape {
                input: name,
                got: format!("{:?} (mask {:?})", dims, self.mask.dims()),
                expected: "log-probs and mask of the same [batch, seq] shape".into(),
            });
        }
        if dims[0] == 0 || dims[1] == 0 {
            return Err(PreferenceError::Shape {
                input: name,
                got: format!("{dims:?}"),
                expected: "at least one row and one position".into(),
            });
        }
        check_finite(name, &host(&self.logps, name)?)?;
        let mask = host(&self.mask, name)?;
        if let Some(i) = mask.iter().position(|&m| m != 0.0 && m != 1.0) {
            return Err(PreferenceError::BadValue {
                input: name,
                index: i,
                value: mask[i],
                expected: "a completion mask of 0.0 and 1.0",
            });
        }
        Ok((mask, dims))
    }

    /// Completion tokens per row (the mask's row sums).
    pub fn lengths(&self, name: &'static str) -> Result<Vec<usize>> {
        let (mask, [b, t]) = self.check(name)?;
        Ok((0..b)
            .map(|r| {
                mask[r * t..(r + 1) * t]
                    .iter()
                    .filter(|&&m| m == 1.0)
                    .count()
            })
            .collect())
    }
}

/// Reads a tensor back as `f64`s.
pub(crate) fn host<const D: usize>(t: &Tensor<D>, name: &'static str) -> Result<Vec<f64>> {
    t.clone()
        .try_into_vec_as::<f64>()
        .map_err(|e| PreferenceError::Read {
            input: name,
            message: format!("{e:?}"),
        })
}

/// Fails on the first NaN or infinity.
pub(crate) fn check_finite(name: &'static str, values: &[f64]) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(PreferenceError::BadValue {
            input: name,
            index: i,
            value: values[i],
            expected: "finite values",
        }),
        None => Ok(()),
    }
}

/// Checks a `[batch]` input (its length when `len` is given, else non-empty) and finite values;
/// returns them on the host.
pub(crate) fn check_1d(t: &Tensor<1>, name: &'static str, len: Option<usize>) -> Result<Vec<f64>> {
    let [n] = t.dims();
    match len {
        Some(len) if n != len => {
            return Err(PreferenceError::Shape {
                input: name,
                got: format!("[{n}]"),
                expected: format!("[{len}] (one value per example)"),
            });
        }
        None if n == 0 => {
            return Err(PreferenceError::Shape {
                input: name,
                got: "[0]".into(),
                expected: "at least one example".into(),
            });
        }
        _ => {}
    }
    let v = host(t, name)?;
    check_finite(name, &v)?;
    Ok(v)
}

/// Checks a one-element input (a scalar loss term, `[1]`).
pub(crate) fn check_scalar(t: &Tensor<1>, name: &'static str) -> Result<f64> {
    Ok(check_1d(t, name, Some(1))?[0])
}

/// A `[n]` tensor of `values` on `device` in `dtype` (constants next to the inputs).
pub(crate) fn constant(values: Vec<f64>, device: &Device, dtype: DType) -> Tensor<1> {
    let n = values.len();
    Tensor::from_data(
        TensorData::new(values, [n]).convert_dtype(dtype),
        (device, dtype),
    )
}

/// A `[rows, cols]` tensor of `values` (row-major) on `device` in `dtype`.
pub(crate) fn constant_2d(
    values: Vec<f64>,
    dims: [usize; 2],
    device: &Device,
    dtype: DType,
) -> Tensor<2> {
    Tensor::from_data(
        TensorData::new(values, dims).convert_dtype(dtype),
        (device, dtype),
    )
}

/// `t[indices]` along dimension 0 (differentiable).
pub(crate) fn take(t: Tensor<1>, indices: &[usize]) -> Tensor<1> {
    let idx: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
    let n = idx.len();
    let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [n]), &t.device());
    t.select(0, idx)
}

/// Indices that sort `values` ascending (stable).
pub(crate) fn argsort(values: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    idx.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    idx
}

/// Summed completion log-prob per row, `[batch, seq] -> [batch]`: TRL's `l` (no length
/// normalisation).
pub fn sequence_logps(tokens: &TokenLogps) -> Result<Tensor<1>> {
    tokens.check("per-token log-probs")?;
    Ok(masked_sum(&tokens.logps, &tokens.mask))
}

/// Average completion log-prob per row, `[batch, seq] -> [batch]` (ORPO; CPO with ipo / simpo).
/// A row without completion tokens is an error (TRL would divide by zero).
pub fn average_logps(tokens: &TokenLogps) -> Result<Tensor<1>> {
    let lengths = tokens.lengths("per-token log-probs")?;
    if let Some(r) = lengths.iter().position(|&l| l == 0) {
        return Err(PreferenceError::BadValue {
            input: "per-token log-probs",
            index: r,
            value: 0.0,
            expected: "at least one completion token in every row",
        });
    }
    let lens = constant(
        lengths.iter().map(|&l| l as f64).collect(),
        &tokens.logps.device(),
        tokens.logps.dtype(),
    );
    Ok(masked_sum(&tokens.logps, &tokens.mask).div(lens))
}

fn masked_sum(logps: &Tensor<2>, mask: &Tensor<2>) -> Tensor<1> {
    logps.clone().mul(mask.clone()).sum_dim(1).squeeze_dim(1)
}

/// LD-DPO (`ld_alpha`) log-probs of chosen and rejected completions, `[batch]` each: with
/// m = min(|y_c|, |y_r|) per pair, the sum over the first m completion tokens plus `alpha` times
/// the sum over the rest. Apply it alike to the policy and the reference.
pub fn ld_alpha_logps(
    alpha: f64,
    chosen: &TokenLogps,
    rejected: &TokenLogps,
) -> Result<(Tensor<1>, Tensor<1>)> {
    if !(0.0..=1.0).contains(&alpha) {
        return Err(PreferenceError::InvalidSetting {
            setting: "ld_alpha",
            value: alpha.to_string(),
            expected: "a number in [0, 1]".into(),
        });
    }
    let (cm, [b, tc]) = chosen.check("chosen per-token log-probs")?;
    let (rm, [br, tr]) = rejected.check("rejected per-token log-probs")?;
    if br != b {
        return Err(PreferenceError::Shape {
            input: "rejected per-token log-probs",
            got: format!("[{br}, {tr}]"),
            expected: format!("{b} rows like the chosen"),
        });
    }
    let len =
        |m: &[f64], t: usize, r: usize| m[r * t..(r + 1) * t].iter().filter(|&&v| v == 1.0).count();
    let shared: Vec<usize> = (0..b)
        .map(|r| len(&cm, tc, r).min(len(&rm, tr, r)))
        .collect();
    let weights = |m: &[f64], t: usize| -> Vec<f64> {
        let mut w = vec![0.0; m.len()];
        for r in 0..b {
            let mut pos = 0;
            for j in 0..t {
                if m[r * t + j] == 1.0 {
                    pos += 1;
                    w[r * t + j] = if pos <= shared[r] { 1.0 } else { alpha };
                }
            }
        }
        w
    };
    let one = |tokens: &TokenLogps, m: &[f64], t: usize| {
        let w = constant_2d(
            weights(m, t),
            [b, t],
            &tokens.logps.device(),
            tokens.logps.dtype(),
        );
        masked_sum(&tokens.logps, &w)
    };
    Ok((one(chosen, &cm, tc), one(rejected, &rm, tr)))
}

/// Token-mean negative log-likelihood of the chosen completions over the whole batch (all
/// completion tokens together), `[1]`: DPO's `sft` loss term.
pub fn sft_nll(chosen: &TokenLogps) -> Result<Tensor<1>> {
    let lengths = chosen.lengths("chosen per-token log-probs")?;
    let total: usize = lengths.iter().sum();
    if total == 0 {
        return Err(PreferenceError::BadValue {
            input: "chosen per-token log-probs",
            index: 0,
            value: 0.0,
            expected: "at least one completion token in the batch",
        });
    }
    Ok(chosen
        .logps
        .clone()
        .mul(chosen.mask.clone())
        .sum()
        .div_scalar(total as f64)
        .neg())
}

/// WPO pair weights `w_c * w_r`, `[batch]`, without gradient: per completion,
/// w = exp(mean over its tokens of (log p_t - log sum_v p_v^2)). `*_log_sum_sq` holds
/// log sum_v p_v^2 of the policy's distribution at each position, `[batch, seq]` like the
/// log-probs.
pub fn wpo_weights(
    chosen: &TokenLogps,
    chosen_log_sum_sq: &Tensor<2>,
    rejected: &TokenLogps,
    rejected_log_sum_sq: &Tensor<2>,
) -> Result<Tensor<1>> {
    let one = |tokens: &TokenLogps, lssp: &Tensor<2>, name: &'static str| -> Result<Tensor<1>> {
        let lengths = tokens.lengths(name)?;
        if lssp.dims() != tokens.logps.dims() {
            return Err(PreferenceError::Shape {
                input: "log_sum_sq_probs",
                got: format!("{:?}", lssp.dims()),
                expected: format!("{:?} like the log-probs", tokens.logps.dims()),
            });
        }
        check_finite("log_sum_sq_probs", &host(lssp, "log_sum_sq_probs")?)?;
        let lens = constant(
            lengths.iter().map(|&l| l.max(1) as f64).collect(),
            &tokens.logps.device(),
            tokens.logps.dtype(),
        );
        let aligned = tokens.logps.clone().detach().sub(lssp.clone().detach());
        Ok(masked_sum(&aligned, &tokens.mask).div(lens).exp())
    };
    let wc = one(chosen, chosen_log_sum_sq, "chosen per-token log-probs")?;
    let wr = one(
        rejected,
        rejected_log_sum_sq,
        "rejected per-token log-probs",
    )?;
    if wc.dims() != wr.dims() {
        return Err(PreferenceError::Shape {
            input: "rejected per-token log-probs",
            got: format!("{:?}", wr.dims()),
            expected: format!("{:?} rows like the chosen", wc.dims()),
        });
    }
    Ok(wc.mul(wr).detach())
}

/// The mean of host values (a batch's metric; the batch is never empty: [`check_1d`] refuses
/// an empty input first).
pub(crate) fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}
