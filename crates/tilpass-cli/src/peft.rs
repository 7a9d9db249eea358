//! `tilpass peft info|merge`: inspecting adapters and folding them into a model.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use serde_json::json;
use tilpass::Result;
use tilpass::models::{AnyModel, DecoderLm, HasLinears};
use tilpass::peft::{LoraConfig, PeftModel};

use crate::common::print;

#[derive(Subcommand)]
/// `tilpass peft` subcommands.
pub enum PeftCommand {
    /// Prints an adapter's config summary; with --model, the layers it adapts and PEFT's
    /// trainable-parameter count.
    Info {
        /// The adapter directory.
        adapter: PathBuf,
        /// A model directory to check the adapter against.
        #[arg(long)]
        model: Option<PathBuf>,
    },
    /// Folds an adapter into a decoder's weights and saves the plain model (HF layout).
    Merge {
        /// The base model directory.
        #[arg(long)]
        model: PathBuf,
        /// The adapter directory.
        #[arg(long)]
        adapter: PathBuf,
        /// Where to write the merged model (config.json + model.safetensors).
        #[arg(long)]
        out: PathBuf,
    },
}

/// Runs `tilpass peft ...`.
pub fn peft_cmd(c: PeftCommand) -> Result<()> {
    match c {
        PeftCommand::Info { adapter, model } => {
            let cfg = LoraConfig::read(&adapter)?;
            let ckpt =
                tilpass::core::Checkpoint::open(adapter.join(tilpass::peft::ADAPTER_WEIGHTS))?;
            let params: usize = ckpt
                .keys()
                .map(|k| {
                    ckpt.info(k)
                        .map(|i| i.shape.iter().product::<usize>())
                        .unwrap_or(0)
                })
                .sum();
            let mut out = json!({
                "peft_type": cfg.peft_type, "task_type": cfg.task_type, "r": cfg.r,
                "lora_alpha": cfg.lora_alpha, "use_rslora": cfg.use_rslora, "use_dora": cfg.use_dora,
                "target_modules": cfg.target_modules, "modules_to_save": cfg.modules_to_save,
                "tensors": ckpt.len(), "parameters": params,
            });
            if let Some(dir) = model {
                let device = tilpass::device("flex")?;
                fn report<M: HasLinears>(m: M, adapter: &Path) -> Result<serde_json::Value> {
                    let mut p = PeftModel::new(m);
                    p.load_adapter(adapter, "default")?;
                    let targets = p.targets(&p.adapters()["default"].clone())?;
                    let r = p.trainable_parameters();
                    Ok(
                        json!({"adapted_modules": targets, "trainable_parameters": r.trainable,
                              "total_parameters": r.total, "trainable_percent": r.percent()}),
                    )
                }
                out["model"] = report(AnyModel::load(&dir, &device)?, &adapter)?;
            }
            print(&out);
            Ok(())
        }
        PeftCommand::Merge {
            model,
            adapter,
            out,
        } => {
            tilpass::core::check_output_is_not_input("out", &out, &[&model, &adapter])?;
            let device = tilpass::device("flex")?;
            let base = DecoderLm::load(&model, &device)?;
            let mut peft = PeftModel::new(base);
            peft.load_adapter(&adapter, "default")?;
            let merged = peft.merge_and_unload()?;
            merged.save(&out, tilpass::core::SaveDtype::F32)?;
            print(&json!({"merged": out.display().to_string()}));
            Ok(())
        }
    }
}
