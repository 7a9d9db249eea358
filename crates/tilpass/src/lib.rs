//! # tilpass
//!
//! Adapting language models to low-resource languages, Norwegian first, in Rust on
//! [burn](https://burn.dev). This facade re-exports the tilpass crates and owns the backend
//! features: `flex` (CPU, default), `wgpu`, `cuda`. **Install mimalloc as your program's
//! global allocator and keep freed memory** (`#[global_allocator] static A: mimalloc::MiMalloc
//! = mimalloc::MiMalloc;` and `mi_option_set(15 /* purge_delay */, -1)` from
//! `libmimalloc-sys` at start-up, as the `tilpass` binary does): burn's CPU backend allocates
//! fresh tensor buffers on every operation, and under the system allocator large freed buffers
//! go back to the kernel, which zeroes the pages again on the next allocation — the LoRA SFT
//! step of the benchmark model ran 1.4–2.2x slower and a 512-token prefill 1.4–2.7x slower
//! with the system allocator than with mimalloc (`tilpass-compare` with and without
//! `--features system-alloc`, alternating, docs/benchmarks.md "Where the time goes").
//!
//! | module | crate | status |
//! | --- | --- | --- |
//! | [`core`] | `tilpass-core` | errors, devices, HF safetensors checkpoints |
//! | [`data`] | `tilpass-data` | TRL dataset formats, readers, filters, statistics |
//! | [`tokenize`] | `tilpass-tokenize` | tokenizers, chat templates, SFT encoding, packing, tokenizer training |
//! | [`models`] | `tilpass-models` | decoders (Llama, Mistral, GPT-2), encoders (BERT, NorBERT3), encoder-decoders (T5, NorT5), generation |
//! | [`peft`] | `tilpass-peft` | LoRA / rsLoRA / DoRA, prefix / prompt / P-tuning, HF PEFT files both ways, merge, several adapters |
//! | [`train`] | `tilpass-train` | AdamW (PyTorch-exact), schedules, the training loop (LoRA / full), SFT, LamBERT classification, checkpoints and resume; the CLI's jobs as run types (`SftRun`, `ClassifyRun`, `AnnotateRun`, `PredictRun`) |
//! | [`preference`] | `tilpass-preference` | losses (DPO family, KTO, ORPO, CPO/SimPO, reward), TRL-exact; the DPO trainer (`tilpass train dpo`); other trainers planned |
//! | [`rag`] | `tilpass-rag` | planned |
//! | [`metrics`] | `tilpass-metrics` | BLEU / chrF / TER (sacrebleu-exact), ROUGE, SQuAD EM/F1, perplexity and bits per byte, classification, retrieval (trec_eval), chat metrics, language ID, LLM-as-judge |
//!
//! ```
//! let device = tilpass::device("flex").unwrap();
//! let x = burn::tensor::Tensor::<2>::ones([2, 3], &device);
//! assert_eq!(x.sum().into_scalar::<f32>(), 6.0);
//! ```

#![warn(missing_docs)]

pub use tilpass_core as core;
pub use tilpass_data as data;
pub use tilpass_metrics as metrics;
pub use tilpass_models as models;
pub use tilpass_peft as peft;
pub use tilpass_preference as preference;
pub use tilpass_rag as rag;
pub use tilpass_tokenize as tokenize;
pub use tilpass_train as train;

pub use burn;
pub use tilpass_core::{DeviceSpec, Error, Result};

use burn::tensor::Device;

/// The backends this build includes (`flex`, `wgpu`, `cuda`).
pub fn compiled_backends() -> Vec<&'static str> {
    let mut v = vec![];
    if cfg!(feature = "flex") {
        v.push("flex");
    }
    if cfg!(feature = "wgpu") {
        v.push("wgpu");
    }
    if cfg!(feature = "cuda") {
        v.push("cuda");
    }
    v
}

/// Makes a burn [`Device`] from a parsed spec; fails with
/// [`Error::BackendNotCompiled`] when this build lacks the backend.
pub fn device_from_spec(spec: DeviceSpec) -> Result<Device> {
    let missing = || Error::BackendNotCompiled {
        spec: spec.to_string(),
        feature: spec.feature(),
    };
    match spec {
        DeviceSpec::Flex => {
            #[cfg(feature = "flex")]
            return Ok(Device::flex());
            #[cfg(not(feature = "flex"))]
            return Err(missing());
        }
        DeviceSpec::Wgpu | DeviceSpec::WgpuCpu | DeviceSpec::WgpuDiscrete(_) => {
            #[cfg(feature = "wgpu")]
            {
                use burn::tensor::DeviceKind;
                let kind = match spec {
                    DeviceSpec::WgpuCpu => DeviceKind::Cpu,
                    DeviceSpec::WgpuDiscrete(i) => DeviceKind::DiscreteGpu(i),
                    _ => DeviceKind::DefaultDevice,
                };
                Ok(Device::wgpu(kind))
            }
            #[cfg(not(feature = "wgpu"))]
            return Err(missing());
        }
        DeviceSpec::Cuda(_i) => {
            #[cfg(feature = "cuda")]
            return Ok(Device::cuda(_i));
            #[cfg(not(feature = "cuda"))]
            return Err(missing());
        }
    }
}

/// Parses a device string (`flex`, `wgpu`, `wgpu-cpu`, `wgpu:N`, `cuda:N`) and makes the device.
pub fn device(spec: &str) -> Result<Device> {
    device_from_spec(spec.parse()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncompiled_backends_are_reported_with_their_feature() {
        #[cfg(not(feature = "cuda"))]
        {
            let err = device("cuda:1").unwrap_err();
            assert!(matches!(
                err,
                Error::BackendNotCompiled {
                    feature: "cuda",
                    ..
                }
            ));
            assert!(err.to_string().contains("--features cuda"), "{err}");
        }
        #[cfg(not(feature = "wgpu"))]
        assert!(matches!(
            device("wgpu-cpu"),
            Err(Error::BackendNotCompiled {
                feature: "wgpu",
                ..
            })
        ));
        assert!(matches!(device("tpu"), Err(Error::InvalidDevice { .. })));
    }

    #[cfg(feature = "flex")]
    #[test]
    fn flex_device_computes() {
        let d = device("flex").unwrap();
        let x = burn::tensor::Tensor::<1>::from_floats([1.0, 2.0, 3.0], &d);
        assert_eq!((x.clone() * x).sum().into_scalar::<f32>(), 14.0);
    }
}

/// The README's Rust examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
