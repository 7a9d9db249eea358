//! The preference losses of `tilpass::preference` equal TRL 1.16.0's (tests/fixtures/preference/
//! losses.json, made by tests/fixtures/generate_preference.py calling TRL's own loss methods):
//! every loss, every logged metric and the gradient w.r.t. the policy log-probs, within 1e-6
//! (relative to the value when it exceeds 1); and the settings TRL refuses are refused.

use std::collections::BTreeMap;

use serde_json::Value;
use tilpass::burn::tensor::{DType, Device, Tensor, TensorData};
use tilpass::preference::{
    CpoConfig, CpoInputs, DpoConfig, DpoInputs, KtoConfig, KtoInputs, OrpoConfig, OrpoInputs,
    PreferenceError, RewardConfig, RewardInputs, TokenLogps, WpoTokens, cpo_loss, dpo_loss,
    kl_rotation, kto_loss, orpo_loss, reward_loss, sequence_logps,
};
use tilpass_tests::{fixture_json, max_abs_diff, max_abs_diff_where};

const TOL_F64_FLEX: f64 = 1e-6;

/// The tolerance: the 1e-6 on the CPU (Flex, float64 where the case is); 2e-5 on
/// another device, which computes in float32 with its own kernels (exp, log, reductions).
fn tol() -> f64 {
    if on_cpu() { TOL_F64_FLEX } else { 2e-5 }
}

/// Whether the tests run on the CPU backend (Flex, the default).
pub(crate) fn on_cpu() -> bool {
    matches!(
        std::env::var("TILPASS_TEST_DEVICE").as_deref(),
        Err(_) | Ok("flex")
    )
}

fn fixture() -> Value {
    fixture_json("preference/losses.json")
}

/// The autodiff test device and the float dtype of a case (float64 where the device has it).
fn device_and_dtype(case: &Value) -> (Device, DType) {
    let device = tilpass_tests::test_device().autodiff();
    let want = match case["dtype"].as_str().unwrap() {
        "float64" => DType::F64,
        "float32" => DType::F32,
        d => panic!("unknown dtype {d}"),
    };
    // Float64 on the CPU only: a GPU device may accept float64 tensors yet lack float64
    // exp / log in its shaders (Vulkan's GLSL.std.450 has them for 16/32-bit floats only).
    let dtype = if want == DType::F64 && !(on_cpu() && device.supports_dtype(DType::F64)) {
        eprintln!("float64 is compared on the CPU only: comparing in float32");
        DType::F32
    } else {
        want
    };
    (device, dtype)
}

fn vec1(v: &Value) -> Vec<f64> {
    serde_json::from_value(v.clone()).unwrap()
}

fn vec2(v: &Value) -> Vec<Vec<f64>> {
    serde_json::from_value(v.clone()).unwrap()
}

fn t1(v: &[f64], device: &Device, dtype: DType) -> Tensor<1> {
    Tensor::from_data(
        TensorData::new(v.to_vec(), [v.len()]).convert_dtype(dtype),
        (device, dtype),
    )
}

fn t2(rows: &[Vec<f64>], device: &Device, dtype: DType) -> Tensor<2> {
    let flat: Vec<f64> = rows.iter().flatten().copied().collect();
    Tensor::from_data(
        TensorData::new(flat, [rows.len(), rows[0].len()]).convert_dtype(dtype),
        (device, dtype),
    )
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.try_into_vec_as::<f64>().unwrap()
}

/// |got - want| / max(1, |want|).
fn scaled_diff(got: f64, want: f64) -> f64 {
    max_abs_diff(&[got], &[want]) / want.abs().max(1.0)
}

/// Largest differences per fixture group, printed at the end of each test.
#[derive(Default)]
struct Worst(BTreeMap<String, [f64; 3]>);

impl Worst {
    fn note(&mut self, group: &str, slot: usize, d: f64) {
        let e = self.0.entry(group.to_string()).or_insert([0.0; 3]);
        e[slot] = e[slot].max(d);
    }

    fn print(&self, what: &str) {
        for (k, [l, m, g]) in &self.0 {
            eprintln!("{what} {k}: loss {l:.2e}, metrics {m:.2e}, grads {g:.2e}");
        }
    }
}

/// Compares a loss and its metrics with the case's; returns the worst (loss, metric) differences.
fn check_loss_and_metrics(
    name: &str,
    case: &Value,
    loss: &Tensor<1>,
    metrics: &[(&'static str, f64)],
) -> (f64, f64) {
    let got = values(loss.clone().inner());
    assert_eq!(got.len(), 1, "{name}: the loss is [1]");
    let want = case["loss"].as_f64().unwrap();
    let dl = scaled_diff(got[0], want);
    assert!(
        dl <= tol(),
        "{name}: loss {} vs TRL {want} ({dl:.2e})",
        got[0]
    );
    let want_m = case["metrics"].as_object().unwrap();
    let ours: BTreeMap<&str, f64> = metrics.iter().copied().collect();
    let mut keys: Vec<&str> = want_m.keys().map(String::as_str).collect();
    keys.sort();
    let mut our_keys: Vec<&str> = ours.keys().copied().collect();
    our_keys.sort();
    assert_eq!(our_keys, keys, "{name}: metric names");
    let mut dm = 0f64;
    for (k, v) in want_m {
        let want = v.as_f64().unwrap();
        let d = scaled_diff(ours[k.as_str()], want);
        assert!(
            d <= tol(),
            "{name}: {k} {} vs TRL {want} ({d:.2e})",
            ours[k.as_str()]
        );
        dm = dm.max(d);
    }
    (dl, dm)
}

/// Compares gradients on the positions where `mask` is 1 (elsewhere TRL's fused head gives
/// constants).
fn check_grads(name: &str, got: &[f64], want: &[f64], mask: &[f64]) -> f64 {
    let scale = want.iter().fold(1f64, |m, v| m.max(v.abs()));
    let d = max_abs_diff_where(got, want, |i| mask[i] == 1.0) / scale;
    assert!(
        d <= tol(),
        "{name}: gradient differs from torch's by {d:.2e}"
    );
    d
}

#[test]
fn dpo_losses_metrics_and_gradients_match_trl() {
    let fx = fixture();
    let mut worst = Worst::default();
    let cases = fx["dpo"].as_array().unwrap();
    assert!(cases.len() >= 50, "{} DPO cases", cases.len());
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let (device, dtype) = device_and_dtype(case);
        let config: DpoConfig = serde_json::from_value(case["config"].clone())
            .unwrap_or_else(|e| panic!("{name}: config: {e}"));
        let cm = vec2(&case["completion_mask"]);
        let mask: Vec<Vec<f64>> = cm.iter().map(|r| r[1..].to_vec()).collect();
        let policy = vec2(&case["policy_logps"]);
        let reference = vec2(&case["ref_logps"]);
        let b = policy.len() / 2;
        let leaf_c = t2(&policy[..b], &device, dtype).require_grad();
        let leaf_r = t2(&policy[b..], &device, dtype).require_grad();
        let m_c = t2(&mask[..b], &device, dtype);
        let m_r = t2(&mask[b..], &device, dtype);
        let pc = TokenLogps::new(leaf_c.clone(), m_c.clone());
        let pr = TokenLogps::new(leaf_r.clone(), m_r.clone());
        let rc = TokenLogps::new(t2(&reference[..b], &device, dtype), m_c);
        let rr = TokenLogps::new(t2(&reference[b..], &device, dtype), m_r);
        let wpo = case.get("log_sum_sq_probs").map(|v| {
            let l = vec2(v);
            WpoTokens {
                chosen_log_sum_sq: t2(&l[..b], &device, dtype),
                rejected_log_sum_sq: t2(&l[b..], &device, dtype),
            }
        });
        let inputs = DpoInputs::from_tokens(&config, &pc, &pr, &rc, &rr, wpo.as_ref())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let out = dpo_loss(&config, &inputs).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (dl, dm) = check_loss_and_metrics(name, case, &out.loss, &out.metrics.entries());
        let grads = out.loss.backward();
        // A side the loss does not depend on (sft: the rejected rows) has no gradient: zeros.
        let grad = |leaf: &Tensor<2>| {
            leaf.grad(&grads)
                .map(values)
                .unwrap_or_else(|| vec![0.0; leaf.dims().iter().product()])
        };
        let mut got = grad(&leaf_c);
        got.extend(grad(&leaf_r));
        let want: Vec<f64> = vec2(&case["grad_policy_logps"]).concat();
        let dg = check_grads(name, &got, &want, &mask.concat());
        worst.note(name, 0, dl);
        worst.note(name, 1, dm);
        worst.note(name, 2, dg);
    }
    worst.print("max scaled difference to TRL:");
}

#[test]
fn dpo_refuses_what_trl_refuses() {
    let fx = fixture();
    for r in fx["dpo_refusals"].as_array().unwrap() {
        let config: DpoConfig = serde_json::from_value(r["config"].clone()).unwrap();
        let err = config.validate().unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("loss_weights") || msg.contains("use_weighting"),
            "{msg} (TRL: {})",
            r["error"]
        );
    }
    let bad = |json: Value| -> PreferenceError {
        let c: DpoConfig = serde_json::from_value(json.clone()).unwrap();
        c.validate().expect_err(&json.to_string())
    };
    let named = |e: PreferenceError, what: &str| {
        assert!(e.to_string().contains(what), "`{e}` should name {what}");
    };
    named(bad(serde_json::json!({"beta": 0.0})), "beta");
    named(bad(serde_json::json!({"beta": -1.0})), "beta");
    named(
        bad(serde_json::json!({"label_smoothing": 0.5})),
        "label_smoothing",
    );
    named(
        bad(serde_json::json!({"label_smoothing": -0.1})),
        "label_smoothing",
    );
    named(
        bad(serde_json::json!({"loss_type": "exo_pair"})),
        "exo_pair",
    );
    named(bad(serde_json::json!({"loss_type": []})), "loss_type");
    named(
        bad(serde_json::json!({"loss_type": "nca_pair", "f_divergence_type": "forward_kl"})),
        "nca_pair",
    );
    named(
        bad(serde_json::json!({"loss_type": "aot", "use_weighting": true})),
        "aot",
    );
    named(bad(serde_json::json!({"ld_alpha": 1.5})), "ld_alpha");
    named(
        bad(serde_json::json!({"discopop_tau": 0.0})),
        "discopop_tau",
    );
    // Unknown names are serde errors naming the value.
    let e =
        serde_json::from_value::<DpoConfig>(serde_json::json!({"loss_type": ["sigmoid", "dpo"]}))
            .unwrap_err();
    assert!(e.to_string().contains("dpo"), "{e}");
    let e = serde_json::from_value::<DpoConfig>(serde_json::json!({"f_divergence_type": "kl"}))
        .unwrap_err();
    assert!(e.to_string().contains("kl"), "{e}");
    let e = serde_json::from_value::<DpoConfig>(serde_json::json!({"betta": 0.1})).unwrap_err();
    assert!(e.to_string().contains("betta"), "{e}");
    // A single name is a one-element list, as in TRL.
    let c: DpoConfig = serde_json::from_value(serde_json::json!({"loss_type": "ipo"})).unwrap();
    assert_eq!(c.loss_names(), ["ipo"]);
    assert_eq!(DpoConfig::default().loss_names(), ["sigmoid"]);
}

#[test]
fn dpo_refuses_bad_inputs() {
    let device = tilpass_tests::test_device();
    let cfg = DpoConfig::default();
    let ok = |v: &[f64]| t1(v, &device, DType::F32);
    let inputs = |pc: Tensor<1>, lens: Vec<usize>| DpoInputs {
        policy_chosen_logps: pc,
        policy_rejected_logps: ok(&[-2.0, -3.0]),
        ref_chosen_logps: ok(&[-1.5, -2.5]),
        ref_rejected_logps: ok(&[-2.0, -2.0]),
        chosen_lengths: lens.clone(),
        rejected_lengths: lens,
        sft_nll: None,
        wpo_weights: None,
    };
    assert!(dpo_loss(&cfg, &inputs(ok(&[-1.0, -2.0]), vec![2, 3])).is_ok());
    let e = dpo_loss(&cfg, &inputs(ok(&[-1.0, f64::NAN]), vec![2, 3])).unwrap_err();
    assert!(
        matches!(
            e,
            PreferenceError::BadValue {
                input: "policy_chosen_logps",
                index: 1,
                ..
            }
        ),
        "{e}"
    );
    let e = dpo_loss(&cfg, &inputs(ok(&[-1.0, f64::NEG_INFINITY]), vec![2, 3])).unwrap_err();
    assert!(matches!(e, PreferenceError::BadValue { .. }), "{e}");
    let e = dpo_loss(&cfg, &inputs(ok(&[-1.0, -2.0, -3.0]), vec![2, 3])).unwrap_err();
    assert!(
        matches!(
            e,
            PreferenceError::Shape {
                input: "policy_rejected_logps",
                ..
            }
        ),
        "{e}"
    );
    let e = dpo_loss(&cfg, &inputs(ok(&[-1.0, -2.0]), vec![2])).unwrap_err();
    assert!(
        matches!(
            e,
            PreferenceError::Shape {
                input: "chosen_lengths",
                ..
            }
        ),
        "{e}"
    );
    let sft: DpoConfig = serde_json::from_value(serde_json::json!({"loss_type": "sft"})).unwrap();
    let e = dpo_loss(&sft, &inputs(ok(&[-1.0, -2.0]), vec![2, 3])).unwrap_err();
    assert!(
        matches!(
            e,
            PreferenceError::MissingInput {
                input: "sft_nll",
                ..
            }
        ),
        "{e}"
    );
    let wpo: DpoConfig =
        serde_json::from_value(serde_json::json!({"use_weighting": true})).unwrap();
    let e = dpo_loss(&wpo, &inputs(ok(&[-1.0, -2.0]), vec![2, 3])).unwrap_err();
    assert!(
        matches!(
            e,
            PreferenceError::MissingInput {
                input: "wpo_weights",
                ..
            }
        ),
        "{e}"
    );
    // Per-token inputs: a mask that is not 0/1, and mismatched shapes.
    let lp = t2(&[vec![-1.0, -2.0]], &device, DType::F32);
    let e = sequence_logps(&TokenLogps::new(
        lp.clone(),
        t2(&[vec![1.0, 0.5]], &device, DType::F32),
    ))
    .unwrap_err();
    assert!(
        matches!(e, PreferenceError::BadValue { index: 1, .. }),
        "{e}"
    );
    let e =
        sequence_logps(&TokenLogps::new(lp, t2(&[vec![1.0]], &device, DType::F32))).unwrap_err();
    assert!(matches!(e, PreferenceError::Shape { .. }), "{e}");
}

#[test]
fn kto_losses_metrics_and_gradients_match_trl() {
    let fx = fixture();
    let mut worst = Worst::default();
    for case in fx["kto"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let (device, dtype) = device_and_dtype(case);
        let config: KtoConfig = serde_json::from_value(case["config"].clone())
            .unwrap_or_else(|e| panic!("{name}: config: {e}"));
        let labels: Vec<bool> = serde_json::from_value(case["labels"].clone()).unwrap();
        let shifted = |key: &str| -> Vec<Vec<f64>> {
            vec2(&case[key]).iter().map(|r| r[1..].to_vec()).collect()
        };
        let mask = shifted("completion_mask");
        let kl_mask = shifted("kl_completion_mask");
        let leaf = t2(&vec2(&case["policy_logps"]), &device, dtype).require_grad();
        let m = t2(&mask, &device, dtype);
        let km = t2(&kl_mask, &device, dtype);
        let seq =
            |t: Tensor<2>, m: &Tensor<2>| sequence_logps(&TokenLogps::new(t, m.clone())).unwrap();
        let kl = config.uses_kl();
        let inputs = KtoInputs {
            policy_logps: seq(leaf.clone(), &m),
            ref_logps: seq(t2(&vec2(&case["ref_logps"]), &device, dtype), &m),
            labels,
            kl_policy_logps: kl
                .then(|| seq(t2(&vec2(&case["kl_policy_logps"]), &device, dtype), &km)),
            kl_ref_logps: kl.then(|| seq(t2(&vec2(&case["kl_ref_logps"]), &device, dtype), &km)),
        };
        let out = kto_loss(&config, &inputs).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (dl, dm) = check_loss_and_metrics(name, case, &out.loss, &out.metrics.entries());
        let grads = out.loss.backward();
        let got = values(leaf.grad(&grads).unwrap());
        let want = vec2(&case["grad_policy_logps"]).concat();
        let dg = check_grads(name, &got, &want, &mask.concat());
        worst.note(name, 0, dl);
        worst.note(name, 1, dm);
        worst.note(name, 2, dg);
        // The KL completions are the batch's completions rotated by one.
        let lens = |m: &[Vec<f64>]| -> Vec<usize> {
            m.iter()
                .map(|r| r.iter().filter(|&&x| x == 1.0).count())
                .collect()
        };
        assert_eq!(kl_rotation(&lens(&mask)), lens(&kl_mask), "{name}");
    }
    worst.print("max scaled difference to TRL:");
}

#[test]
fn kto_refuses_bad_settings_and_batches() {
    let device = tilpass_tests::test_device();
    let one = |v: f64| t1(&[v], &device, DType::F32);
    let inputs = KtoInputs {
        policy_logps: one(-1.0),
        ref_logps: one(-1.5),
        labels: vec![true],
        kl_policy_logps: Some(one(-2.0)),
        kl_ref_logps: Some(one(-2.0)),
    };
    let e = kto_loss(&KtoConfig::default(), &inputs).unwrap_err();
    assert!(e.to_string().contains("more than one example"), "{e}");
    // Without the KL term a batch of one is fine.
    let apo: KtoConfig =
        serde_json::from_value(serde_json::json!({"loss_type": "apo_zero_unpaired"})).unwrap();
    assert!(kto_loss(&apo, &inputs).is_ok());
    let two = |a: f64, b: f64| t1(&[a, b], &device, DType::F32);
    let mut inputs = KtoInputs {
        policy_logps: two(-1.0, -2.0),
        ref_logps: two(-1.5, -2.0),
        labels: vec![true, false],
        kl_policy_logps: None,
        kl_ref_logps: Some(two(-2.0, -2.0)),
    };
    let e = kto_loss(&KtoConfig::default(), &inputs).unwrap_err();
    assert!(
        matches!(
            e,
            PreferenceError::MissingInput {
                input: "kl_policy_logps",
                ..
            }
        ),
        "{e}"
    );
    inputs.kl_policy_logps = Some(two(-2.0, -2.0));
    inputs.labels = vec![true];
    let e = kto_loss(&KtoConfig::default(), &inputs).unwrap_err();
    assert!(
        matches!(
            e,
            PreferenceError::Shape {
                input: "labels",
                ..
            }
        ),
        "{e}"
    );
    for (json, what) in [
        (serde_json::json!({"beta": 0.0}), "beta"),
        (
            serde_json::json!({"desirable_weight": -1.0}),
            "desirable_weight",
        ),
        (
            serde_json::json!({"undesirable_weight": -0.5}),
            "undesirable_weight",
        ),
    ] {
        let c: KtoConfig = serde_json::from_value(json).unwrap();
        let e = c.validate().unwrap_err();
        assert!(e.to_string().contains(what), "{e}");
    }
    assert!(serde_json::from_value::<KtoConfig>(serde_json::json!({"loss_type": "bco"})).is_err());
}

#[test]
fn orpo_losses_metrics_and_gradients_match_trl() {
    let fx = fixture();
    let mut worst = Worst::default();
    for case in fx["orpo"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let (device, dtype) = device_and_dtype(case);
        let config: OrpoConfig = serde_json::from_value(case["config"].clone()).unwrap();
        let c = t1(&vec1(&case["chosen_logps"]), &device, dtype).require_grad();
        let r = t1(&vec1(&case["rejected_logps"]), &device, dtype).require_grad();
        let inputs = OrpoInputs {
            chosen_logps: c.clone(),
            rejected_logps: r.clone(),
            nll_loss: t1(&[case["nll_loss"].as_f64().unwrap()], &device, dtype),
        };
        let out = orpo_loss(&config, &inputs).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (dl, dm) = check_loss_and_metrics(name, case, &out.loss, &out.metrics.entries());
        let grads = out.loss.backward();
        let mut got = values(c.grad(&grads).unwrap());
        got.extend(values(r.grad(&grads).unwrap()));
        let mut want = vec1(&case["grad_chosen_logps"]);
        want.extend(vec1(&case["grad_rejected_logps"]));
        let dg = check_grads(name, &got, &want, &vec![1.0; want.len()]);
        worst.note(name, 0, dl);
        worst.note(name, 1, dm);
        worst.note(name, 2, dg);
    }
    worst.print("max scaled difference to TRL:");
    // A certain completion (log-prob 0) has infinite odds.
    let device = tilpass_tests::test_device();
    let e = orpo_loss(
        &OrpoConfig::default(),
        &OrpoInputs {
            chosen_logps: t1(&[-0.5, 0.0], &device, DType::F32),
            rejected_logps: t1(&[-0.5, -1.0], &device, DType::F32),
            nll_loss: t1(&[1.0], &device, DType::F32),
        },
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            PreferenceError::BadValue {
                input: "chosen_logps",
                index: 1,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn cpo_simpo_alphapo_losses_metrics_and_gradients_match_trl() {
    let fx = fixture();
    let mut worst = Worst::default();
    for case in fx["cpo"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let (device, dtype) = device_and_dtype(case);
        let config: CpoConfig = serde_json::from_value(case["config"].clone())
            .unwrap_or_else(|e| panic!("{name}: config: {e}"));
        let c = t1(&vec1(&case["chosen_logps"]), &device, dtype).require_grad();
        let r = t1(&vec1(&case["rejected_logps"]), &device, dtype).require_grad();
        let inputs = CpoInputs {
            chosen_logps: c.clone(),
            rejected_logps: r.clone(),
            nll_loss: (config.cpo_alpha != 0.0)
                .then(|| t1(&[case["nll_loss"].as_f64().unwrap()], &device, dtype)),
        };
        let out = cpo_loss(&config, &inputs).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (dl, dm) = check_loss_and_metrics(name, case, &out.loss, &out.metrics.entries());
        let grads = out.loss.backward();
        let mut got = values(c.grad(&grads).unwrap());
        got.extend(values(r.grad(&grads).unwrap()));
        let mut want = vec1(&case["grad_chosen_logps"]);
        want.extend(vec1(&case["grad_rejected_logps"]));
        let dg = check_grads(name, &got, &want, &vec![1.0; want.len()]);
        worst.note(name, 0, dl);
        worst.note(name, 1, dm);
        worst.note(name, 2, dg);
    }
    worst.print("max scaled difference to TRL:");
    let device = tilpass_tests::test_device();
    let e = cpo_loss(
        &CpoConfig::default(),
        &CpoInputs {
            chosen_logps: t1(&[-5.0], &device, DType::F32),
            rejected_logps: t1(&[-6.0], &device, DType::F32),
            nll_loss: None,
        },
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            PreferenceError::MissingInput {
                input: "nll_loss",
                ..
            }
        ),
        "{e}"
    );
    let e = serde_json::from_value::<CpoConfig>(serde_json::json!({"loss_type": "kto_pair"}))
        .unwrap_err();
    assert!(e.to_string().contains("kto_pair"), "{e}");
    let c: CpoConfig = serde_json::from_value(serde_json::json!({"label_smoothing": 0.7})).unwrap();
    assert!(
        c.validate()
            .unwrap_err()
            .to_string()
            .contains("label_smoothing")
    );
}

#[test]
fn reward_losses_metrics_and_gradients_match_trl() {
    let fx = fixture();
    let mut worst = Worst::default();
    for case in fx["reward"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let (device, dtype) = device_and_dtype(case);
        let config: RewardConfig = serde_json::from_value(case["config"].clone()).unwrap();
        let c = t1(&vec1(&case["chosen_rewards"]), &device, dtype).require_grad();
        let r = t1(&vec1(&case["rejected_rewards"]), &device, dtype).require_grad();
        let inputs = RewardInputs {
            chosen_rewards: c.clone(),
            rejected_rewards: r.clone(),
            margin: case.get("margin").map(|m| t1(&vec1(m), &device, dtype)),
        };
        let out = reward_loss(&config, &inputs).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (dl, dm) = check_loss_and_metrics(name, case, &out.loss, &out.metrics.entries());
        let grads = out.loss.backward();
        let mut got = values(c.grad(&grads).unwrap());
        got.extend(values(r.grad(&grads).unwrap()));
        let mut want = vec1(&case["grad_chosen_rewards"]);
        want.extend(vec1(&case["grad_rejected_rewards"]));
        let dg = check_grads(name, &got, &want, &vec![1.0; want.len()]);
        worst.note(name, 0, dl);
        worst.note(name, 1, dm);
        worst.note(name, 2, dg);
    }
    worst.print("max scaled difference to TRL:");
    let device = tilpass_tests::test_device();
    let e = reward_loss(
        &RewardConfig::default(),
        &RewardInputs {
            chosen_rewards: t1(&[1.0, 2.0], &device, DType::F32),
            rejected_rewards: t1(&[0.0, 1.0], &device, DType::F32),
            margin: Some(t1(&[0.5], &device, DType::F32)),
        },
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            PreferenceError::Shape {
                input: "margin",
                ..
            }
        ),
        "{e}"
    );
    let c: RewardConfig =
        serde_json::from_value(serde_json::json!({"center_rewards_coefficient": -0.01})).unwrap();
    assert!(
        c.validate()
            .unwrap_err()
            .to_string()
            .contains("center_rewards_coefficient")
    );
}
