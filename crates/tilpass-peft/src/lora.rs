//! LoRA and DoRA adapters on a model's linear layers: adding, loading and saving in HF PEFT's
//! format, switching, disabling, merging.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::Param;
use burn::nn::{Dropout, DropoutConfig};
use burn::tensor::{Device, Tensor, TensorData};
use serde::Serialize;
use tilpass_core::{Checkpoint, HostTensor, SaveDtype, save_safetensors};
use tilpass_models::{HasLinears, LoraBranch};

use crate::config::{ADAPTER_WEIGHTS, LoraConfig, TargetModules, default_targets};
use crate::error::{PeftError, Result};

/// Prefix of every key in `adapter_model.safetensors`.
pub const KEY_PREFIX: &str = "base_model.model.";

/// A mutable trainable parameter of either rank (adapters hold matrices and vectors).
#[derive(Debug)]
pub enum ParamMut<'a> {
    /// A vector (DoRA magnitude, bias).
    D1(&'a mut Param<Tensor<1>>),
    /// A matrix (LoRA A / B, weights, prompt tables).
    D2(&'a mut Param<Tensor<2>>),
}

/// Trainable parameters against the whole, as PEFT's `get_nb_trainable_parameters`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TrainableReport {
    /// Adapter parameters (+ `modules_to_save` copies).
    pub trainable: usize,
    /// Base model + adapters.
    pub total: usize,
}

impl TrainableReport {
    /// `trainable / total` in percent.
    pub fn percent(&self) -> f64 {
        100.0 * self.trainable as f64 / self.total.max(1) as f64
    }
}

impl std::fmt::Display for TrainableReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "trainable params: {} || all params: {} || trainable%: {:.4}",
            self.trainable,
            self.total,
            self.percent()
        )
    }
}

/// Whether layer `path` is module `name` or inside it, PEFT's `modules_to_save` matching
/// (`key.endswith(name)` on whole path components): `classifier` covers `classifier`, and
/// `head` covers `head.nonlinearity.1`.
fn within_module(path: &str, name: &str) -> bool {
    let mut end = 0;
    for part in path.split('.') {
        end += part.len();
        let prefix = &path[..end];
        if prefix == name || prefix.ends_with(&format!(".{name}")) {
            return true;
        }
        end += 1;
    }
    false
}

/// A model with named LoRA adapters (HF PEFT's `PeftModel`). The adapters live inside the
/// model's [`Linear`](tilpass_models::Linear) layers, so the model's own `forward` runs them; `Deref` gives the model.
#[derive(Debug)]
pub struct PeftModel<M> {
    model: M,
    adapters: BTreeMap<String, LoraConfig>,
    /// `modules_to_save`: per path, the base layer's weight and bias (to restore when disabled).
    originals: BTreeMap<String, (Tensor<2>, Option<Tensor<1>>)>,
}

impl<M> std::ops::Deref for PeftModel<M> {
    type Target = M;
    fn deref(&self) -> &M {
        &self.model
    }
}

impl<M> std::ops::DerefMut for PeftModel<M> {
    fn deref_mut(&mut self) -> &mut M {
        &mut self.model
    }
}

fn host(t: Tensor<2>) -> Result<HostTensor> {
    Ok(HostTensor::from_tensor(&t))
}

impl<M: HasLinears> PeftModel<M> {
    /// Wraps a model without adapters.
    pub fn new(model: M) -> Self {
        Self {
            model,
            adapters: BTreeMap::new(),
            originals: BTreeMap::new(),
        }
    }

    /// The model (with its adapters).
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The model with its adapters inside (they keep running in its `forward`); the adapter
    /// bookkeeping (configs, `modules_to_save` originals) is dropped. For inference.
    pub fn into_model(self) -> M {
        self.model
    }

    /// The adapters' names and configs.
    pub fn adapters(&self) -> &BTreeMap<String, LoraConfig> {
        &self.adapters
    }

    fn device(&self) -> Result<Device> {
        self.model
            .linears()
            .first()
            .map(|(_, l)| l.weight.device())
            .ok_or_else(|| PeftError::Config("the model has no linear layers".into()))
    }

    /// The module paths `cfg` selects for LoRA (not `modules_to_save`), or an error listing
    /// the layer names when nothing matches.
    pub fn targets(&self, cfg: &LoraConfig) -> Result<Vec<String>> {
        let model_type = self.model.model_type();
        let targets = match &cfg.target_modules {
            Some(t) => t.clone(),
            None => TargetModules::List(
                default_targets(&model_type)
                    .ok_or_else(|| {
                        PeftError::Config(format!(
                            "no default target_modules for model_type `{model_type}`: name them"
                        ))
                    })?
                    .into_iter()
                    .map(String::from)
                    .collect(),
            ),
        };
        let saved = cfg.modules_to_save.clone().unwrap_or_default();
        let mut out = Vec::new();
        for (path, _) in self.model.linears() {
            let last = path.rsplit('.').next().unwrap_or(&path);
            let is_saved = saved.iter().any(|s| within_module(&path, s));
            // `all-linear` leaves out the output layer (a classifier head).
            let output = targets.is_all_linear() && (last == "classifier" || last == "score");
            let excluded = match &cfg.exclude_modules {
                Some(e) => e.matches(&path)?,
                None => false,
            };
            if !is_saved && !output && !excluded && targets.matches(&path)? {
                out.push(path);
            }
        }
        if out.is_empty() {
            let mut names: Vec<String> = self
                .model
                .linears()
                .iter()
                .map(|(p, _)| p.rsplit('.').next().unwrap_or(p).to_string())
                .collect();
            names.sort();
            names.dedup();
            return Err(PeftError::NoTargets {
                targets: serde_json::to_string(&targets).unwrap_or_default(),
                model_type,
                candidates: names.join(", "),
            });
        }
        Ok(out)
    }

    /// Adds adapter `name` as `cfg` says, initialised as PEFT does (`init_lora_weights`; a
    /// fresh default adapter changes nothing), with random numbers from `seed`. Returns the
    /// adapted module paths. The new adapter is active.
    pub fn add_adapter(&mut self, name: &str, cfg: &LoraConfig, seed: u64) -> Result<Vec<String>> {
        cfg.validate()?;
        if self.adapters.contains_key(name) {
            return Err(PeftError::DuplicateAdapter(name.into()));
        }
        let mut cfg = cfg.clone();
        if self.model.conv1d_layers() && !cfg.fan_in_fan_out {
            tracing::warn!(
                "the model's layers are Conv1D: setting fan_in_fan_out = true, as PEFT does"
            );
            cfg.fan_in_fan_out = true;
        }
        let targets = self.targets(&cfg)?;
        // The ranks (`r`, `rank_pattern`) come from adapter_config.json: check the memory the
        // A and B matrices need before making them.
        let mut bytes = 0u128;
        for (path, lin) in self.model.linears() {
            if targets.contains(&path) {
                let (r, _) = cfg.rank_and_scale(&path);
                let (d_in, d_out) = lin.dims();
                let n =
                    tilpass_core::limits::mul_all(&[r as u128, d_in as u128 + d_out as u128, 4]);
                bytes = bytes.saturating_add(n);
            }
        }
        tilpass_core::limits::check_memory(
            format!(
                "adapter `{name}`: LoRA rank r = {} on {} modules",
                cfg.r,
                targets.len()
            ),
            bytes,
        )?;
        let device = self.device()?;
        let mut rng = tilpass_core::SplitMix64::from_state(seed ^ 0x005E_ED0F_10A4);
        let init = cfg.init_lora_weights.clone();
        for (path, lin) in self.model.linears_mut() {
            if !targets.contains(&path) {
                continue;
            }
            let (r, scale) = cfg.rank_and_scale(&path);
            let (d_in, d_out) = lin.dims();
            // PEFT's lora_A is nn.Linear(in, r): Kaiming-uniform(a=√5) gives U(±1/√in).
            let a = match init.as_str() {
                Some("gaussian") => rng.normal_vec(d_in * r, 1.0 / r as f64),
                _ => rng.uniform_vec(d_in * r, 1.0 / (d_in as f64).sqrt()),
            };
            let b = if init == serde_json::Value::Bool(false) {
                rng.uniform_vec(r * d_out, 1.0 / (r as f64).sqrt())
            } else {
                vec![0.0; r * d_out]
            };
            let a = Tensor::<2>::from_data(TensorData::new(a, [d_in, r]), &device);
            let b = Tensor::<2>::from_data(TensorData::new(b, [r, d_out]), &device);
            let mut branch = LoraBranch {
                a: Param::from_tensor(a),
                b: Param::from_tensor(b),
                magnitude: None,
                dropout: dropout(cfg.lora_dropout),
                scale,
                name: name.into(),
                active: true,
                merged: false,
                merge_norm: None,
            };
            if cfg.use_dora {
                branch.magnitude = Some(Param::from_tensor(branch.weight_norm(lin.weight.val())));
            }
            lin.lora.push(branch);
        }
        for path in cfg.modules_to_save.clone().unwrap_or_default() {
            for (p, lin) in self.model.linears_mut() {
                if within_module(&p, &path) {
                    self.originals
                        .entry(p.clone())
                        .or_insert_with(|| (lin.weight.val(), lin.bias.as_ref().map(|b| b.val())));
                }
            }
        }
        self.adapters.insert(name.into(), cfg);
        Ok(targets)
    }

    /// Loads an HF PEFT LoRA adapter directory as adapter `name` (active). Every tensor the
    /// config implies must be in the file with the shape this model needs; a missing or
    /// mis-shaped one (an adapter for another architecture or size) is an error naming it.
    pub fn load_adapter(&mut self, dir: impl AsRef<Path>, name: &str) -> Result<LoraConfig> {
        let dir = dir.as_ref();
        let cfg = LoraConfig::read(dir)?;
        let file = dir.join(ADAPTER_WEIGHTS);
        let ckpt = Checkpoint::open(&file)?;
        let mismatch = |message: String| PeftError::Mismatch {
            path: file.display().to_string(),
            message,
        };
        let before: std::collections::HashSet<String> = self.originals.keys().cloned().collect();
        let targets = self.add_adapter(name, &cfg, 0).map_err(|e| match e {
            PeftError::NoTargets { .. } => {
                mismatch(format!("adapter does not fit this model: {e}"))
            }
            other => other,
        })?;
        // On an error the adapter added above is taken off again and every weight it could
        // have replaced is put back, so a failed load leaves the model as it was.
        let saved: Vec<(String, Tensor<2>, Option<Tensor<1>>)> = self
            .model
            .linears()
            .into_iter()
            .filter(|(p, _)| self.originals.contains_key(p))
            .map(|(p, lin)| (p, lin.weight.val(), lin.bias.as_ref().map(|b| b.val())))
            .collect();
        if let Err(e) = self.fill_adapter(&ckpt, &cfg, name, &targets, &file) {
            let before_originals = &before;
            for (path, lin) in self.model.linears_mut() {
                lin.lora.retain(|b| b.name != name);
                if let Some((_, w, b)) = saved.iter().find(|(p, _, _)| *p == path) {
                    lin.weight = Param::from_tensor(w.clone());
                    if let (Some(bias), Some(b)) = (lin.bias.as_mut(), b) {
                        *bias = Param::from_tensor(b.clone());
                    }
                }
            }
            self.adapters.remove(name);
            self.originals.retain(|k, _| before_originals.contains(k));
            return Err(e);
        }
        Ok(cfg)
    }

    /// Fills adapter `name` (just added for `cfg`, on `targets`) from `ckpt` (read from
    /// `file`): every tensor of the file used, every tensor the config implies present with
    /// this model's shape; `modules_to_save` weights replaced.
    fn fill_adapter(
        &mut self,
        ckpt: &Checkpoint,
        cfg: &LoraConfig,
        name: &str,
        targets: &[String],
        file: &Path,
    ) -> Result<()> {
        let mismatch = |message: String| PeftError::Mismatch {
            path: file.display().to_string(),
            message,
        };
        let device = self.device()?;
        // Every tensor of the file must be used: tensors for modules this model does not
        // have (more layers, other modules) mean the adapter was made for another model.
        let saved_modules = cfg.modules_to_save.clone().unwrap_or_default();
        let used = |k: &str| {
            let Some(rest) = k.strip_prefix(KEY_PREFIX) else {
                return false;
            };
            let lora = [".lora_A.weight", ".lora_B.weight", ".lora_magnitude_vector"]
                .iter()
                .find_map(|s| rest.strip_suffix(s));
            if let Some(path) = lora {
                return targets.iter().any(|t| t == path);
            }
            // `modules_to_save` tensors (heads, embeddings) are applied by their users.
            saved_modules
                .iter()
                .any(|m| rest.starts_with(&format!("{m}.")) || rest.contains(&format!(".{m}.")))
        };
        let unused: Vec<&str> = ckpt.keys().filter(|k| !used(k)).collect();
        if !unused.is_empty() {
            let mut names = unused.clone();
            names.sort_unstable();
            names.truncate(3);
            return Err(mismatch(format!(
                "{} tensor(s) for modules this model does not have (e.g. {}): the adapter was \
                 made for another model (more layers or other modules)",
                unused.len(),
                names
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        for (path, lin) in self.model.linears_mut() {
            if !targets.contains(&path) {
                continue;
            }
            let (d_in, d_out) = lin.dims();
            let branch = lin
                .lora
                .iter_mut()
                .find(|b| b.name == name)
                .ok_or_else(|| mismatch(format!("adapter `{name}` has no branch on `{path}`")))?;
            let r = branch.a.dims()[1];
            let key = |suffix: &str| format!("{KEY_PREFIX}{path}.{suffix}");
            let read = |k: &str, shape: &[usize]| {
                if !ckpt.contains(k) {
                    return Err(mismatch(format!(
                        "missing tensor `{k}`: the adapter was made for another model or target set"
                    )));
                }
                ckpt.read_f32_shaped(k, shape)
                    .map_err(|e| mismatch(e.to_string()))
            };
            let a = read(&key("lora_A.weight"), &[r, d_in])?.transposed()?;
            let b = read(&key("lora_B.weight"), &[d_out, r])?.transposed()?;
            branch.a = Param::from_tensor(a.to_tensor(&device)?);
            branch.b = Param::from_tensor(b.to_tensor(&device)?);
            if cfg.use_dora {
                let m = read(&key("lora_magnitude_vector"), &[d_out])?;
                branch.magnitude = Some(Param::from_tensor(m.to_tensor(&device)?));
            }
        }
        for (path, lin) in self.model.linears_mut() {
            if !self.originals.contains_key(&path) {
                continue;
            }
            let (d_in, d_out) = lin.dims();
            let w = format!("{KEY_PREFIX}{path}.weight");
            if !ckpt.contains(&w) {
                continue;
            }
            let weight = ckpt
                .read_f32_shaped(&w, &[d_out, d_in])
                .map_err(|e| mismatch(e.to_string()))?
                .transposed()?;
            lin.weight = Param::from_tensor(weight.to_tensor(&device)?);
            let bk = format!("{KEY_PREFIX}{path}.bias");
            if lin.bias.is_some() && ckpt.contains(&bk) {
                let b = ckpt
                    .read_f32_shaped(&bk, &[d_out])
                    .map_err(|e| mismatch(e.to_string()))?;
                lin.bias = Some(Param::from_tensor(b.to_tensor(&device)?));
            }
        }
        Ok(())
    }

    /// Writes adapter `name` as HF PEFT does: `adapter_config.json` and
    /// `adapter_model.safetensors` (`base_model.model.<path>.lora_{A,B}.weight` as `[r, in]` /
    /// `[out, r]`, DoRA magnitudes, `modules_to_save` weights).
    pub fn save_adapter(&self, name: &str, dir: impl AsRef<Path>) -> Result<()> {
        let cfg = self
            .adapters
            .get(name)
            .ok_or_else(|| PeftError::UnknownAdapter(name.into()))?;
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| tilpass_core::Error::io(dir, e))?;
        let mut tensors: Vec<(String, HostTensor)> = Vec::new();
        for (path, lin) in self.model.linears() {
            for b in lin.lora.iter().filter(|b| b.name == name) {
                tensors.push((
                    format!("{KEY_PREFIX}{path}.lora_A.weight"),
                    host(b.a.val().transpose())?,
                ));
                tensors.push((
                    format!("{KEY_PREFIX}{path}.lora_B.weight"),
                    host(b.b.val().transpose())?,
                ));
                if let Some(m) = &b.magnitude {
                    tensors.push((
                        format!("{KEY_PREFIX}{path}.lora_magnitude_vector"),
                        HostTensor::from_tensor(&m.val()),
                    ));
                }
            }
            if self.originals.contains_key(&path) {
                tensors.push((
                    format!("{KEY_PREFIX}{path}.weight"),
                    host(lin.weight.val().transpose())?,
                ));
                if let Some(bias) = &lin.bias {
                    tensors.push((
                        format!("{KEY_PREFIX}{path}.bias"),
                        HostTensor::from_tensor(&bias.val()),
                    ));
                }
            }
        }
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        let meta = [("format".to_string(), "pt".to_string())]
            .into_iter()
            .collect();
        save_safetensors(
            dir.join(ADAPTER_WEIGHTS),
            tensors.iter().map(|(k, t)| (k.as_str(), t)),
            SaveDtype::F32,
            Some(meta),
        )?;
        cfg.write(dir)
    }

    /// Makes exactly `names` active (the others stay loaded but do nothing); several active
    /// adapters are summed.
    pub fn set_active(&mut self, names: &[&str]) -> Result<()> {
        for n in names {
            if !self.adapters.contains_key(*n) {
                return Err(PeftError::UnknownAdapter(n.to_string()));
            }
        }
        for (_, lin) in self.model.linears_mut() {
            for b in &mut lin.lora {
                b.active = names.contains(&b.name.as_str());
            }
        }
        Ok(())
    }

    /// Names of the active adapters.
    pub fn active(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .model
            .linears()
            .iter()
            .flat_map(|(_, l)| l.lora.iter().filter(|b| b.active).map(|b| b.name.clone()))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Runs `f` with every adapter's dropout off (what PyTorch's `model.eval()` does to PEFT's
    /// `lora_dropout`, as transformers' `Trainer.evaluate` runs), restoring the probabilities
    /// afterwards even when they were 0. Evaluation inside a training run goes through this, so
    /// it neither draws dropout masks nor moves the dropout random stream of the next steps.
    pub fn with_eval_mode<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        let saved: Vec<Vec<f64>> = self
            .model
            .linears_mut()
            .into_iter()
            .map(|(_, lin)| {
                lin.lora
                    .iter_mut()
                    .map(|b| std::mem::replace(&mut b.dropout.prob, 0.0))
                    .collect()
            })
            .collect();
        let out = f(self);
        for ((_, lin), probs) in self.model.linears_mut().into_iter().zip(saved) {
            for (b, p) in lin.lora.iter_mut().zip(probs) {
                b.dropout.prob = p;
            }
        }
        out
    }

    /// Runs `f` on the base model: adapters off and `modules_to_save` layers back to their
    /// original weights (PEFT's `disable_adapter()`, TRL's DPO reference). Errors while an
    /// adapter is merged.
    pub fn with_disabled<R>(&mut self, f: impl FnOnce(&M) -> R) -> Result<R> {
        if self
            .model
            .linears()
            .iter()
            .any(|(_, l)| l.lora.iter().any(|b| b.merged))
        {
            return Err(PeftError::Config(
                "unmerge the adapters before disabling them".into(),
            ));
        }
        let mut saved = Vec::new();
        for (path, lin) in self.model.linears_mut() {
            saved.push(lin.lora.iter().map(|b| b.active).collect::<Vec<_>>());
            for b in &mut lin.lora {
                b.active = false;
            }
            if let Some((w, bias)) = self.originals.get(&path) {
                let current = (lin.weight.clone(), lin.bias.clone());
                lin.weight = Param::from_tensor(w.clone());
                lin.bias = bias.clone().map(Param::from_tensor);
                self.originals
                    .insert(path.clone(), (current.0.val(), current.1.map(|b| b.val())));
            }
        }
        let out = f(&self.model);
        for ((path, lin), flags) in self.model.linears_mut().into_iter().zip(saved) {
            for (b, on) in lin.lora.iter_mut().zip(flags) {
                b.active = on;
            }
            if let Some((w, bias)) = self.originals.get(&path) {
                let base = (lin.weight.val(), lin.bias.as_ref().map(|b| b.val()));
                lin.weight = Param::from_tensor(w.clone());
                lin.bias = bias.clone().map(Param::from_tensor);
                self.originals.insert(path.clone(), base);
            }
        }
        Ok(out)
    }

    /// Folds adapter `name` into the weights (`W += s·A·B`; DoRA: `W ← m ⊙ (W + ΔW) / ‖W + ΔW‖`).
    pub fn merge(&mut self, name: &str) -> Result<()> {
        if !self.adapters.contains_key(name) {
            return Err(PeftError::UnknownAdapter(name.into()));
        }
        for (_, lin) in self.model.linears_mut() {
            let w = lin.weight.val();
            let Some(b) = lin.lora.iter_mut().find(|b| b.name == name && !b.merged) else {
                continue;
            };
            let updated = w.clone() + b.delta();
            let merged = match &b.magnitude {
                None => updated,
                Some(m) => {
                    let norm = b.weight_norm(w);
                    let ratio = (m.val() / norm.clone()).unsqueeze::<2>();
                    b.merge_norm = Some(norm);
                    updated * ratio
                }
            };
            b.merged = true;
            lin.weight = Param::from_tensor(merged.detach());
        }
        Ok(())
    }

    /// Undoes [`Self::merge`] for every merged adapter, newest first.
    pub fn unmerge(&mut self) -> Result<()> {
        for (_, lin) in self.model.linears_mut() {
            let mut w = lin.weight.val();
            for b in lin.lora.iter_mut().rev().filter(|b| b.merged) {
                if let (Some(m), Some(norm)) = (&b.magnitude, &b.merge_norm) {
                    w = w / (m.val() / norm.clone()).unsqueeze::<2>();
                }
                w = w - b.delta();
                b.merged = false;
                b.merge_norm = None;
            }
            lin.weight = Param::from_tensor(w.detach());
        }
        Ok(())
    }

    /// Merges the active adapters and drops every adapter: the plain model, with the same
    /// outputs (PEFT's `merge_and_unload`).
    pub fn merge_and_unload(mut self) -> Result<M> {
        for name in self.active() {
            self.merge(&name)?;
        }
        for (_, lin) in self.model.linears_mut() {
            lin.lora.clear();
        }
        Ok(self.model)
    }

    /// Freezes the base model (no gradients) and keeps every adapter parameter and
    /// `modules_to_save` layer trainable: after this, a backward pass on an autodiff device
    /// computes gradients for the adapters only.
    pub fn freeze_base(&mut self) {
        self.model.freeze();
        for (path, lin) in self.model.linears_mut() {
            for b in &mut lin.lora {
                b.a = b.a.clone().set_require_grad(true);
                b.b = b.b.clone().set_require_grad(true);
                b.magnitude = b.magnitude.take().map(|m| m.set_require_grad(true));
            }
            if self.originals.contains_key(&path) {
                lin.weight = lin.weight.clone().set_require_grad(true);
                lin.bias = lin.bias.take().map(|b| b.set_require_grad(true));
            }
        }
    }

    /// Every trainable parameter — adapter `A`, `B`, DoRA magnitudes, `modules_to_save`
    /// layers — named by its key in `adapter_model.safetensors` (stable across steps, for
    /// optimiser state).
    pub fn trainable_params_mut(&mut self) -> Vec<(String, ParamMut<'_>)> {
        let mut out = Vec::new();
        for (path, lin) in self.model.linears_mut() {
            let saved = self.originals.contains_key(&path);
            let crate_lin = lin;
            for b in &mut crate_lin.lora {
                let tag = if b.name == "default" {
                    String::new()
                } else {
                    format!("{}.", b.name)
                };
                out.push((
                    format!("{KEY_PREFIX}{path}.lora_A.{tag}weight"),
                    ParamMut::D2(&mut b.a),
                ));
                out.push((
                    format!("{KEY_PREFIX}{path}.lora_B.{tag}weight"),
                    ParamMut::D2(&mut b.b),
                ));
                if let Some(m) = &mut b.magnitude {
                    out.push((
                        format!("{KEY_PREFIX}{path}.{tag}lora_magnitude_vector"),
                        ParamMut::D1(m),
                    ));
                }
            }
            if saved {
                out.push((
                    format!("{KEY_PREFIX}{path}.weight"),
                    ParamMut::D2(&mut crate_lin.weight),
                ));
                if let Some(bias) = &mut crate_lin.bias {
                    out.push((format!("{KEY_PREFIX}{path}.bias"), ParamMut::D1(bias)));
                }
            }
        }
        out
    }

    /// One plain SGD step `p ← p − lr·∇p` on every adapter parameter (and `modules_to_save`
    /// layer) that has a gradient in `grads`; returns how many tensors were updated. (The
    /// training engine of `tilpass-train` runs AdamW; this is the minimal step.)
    pub fn sgd_step(&mut self, grads: &burn::tensor::Gradients, lr: f64) -> usize {
        fn step<const D: usize>(
            p: &mut Param<Tensor<D>>,
            grads: &burn::tensor::Gradients,
            lr: f64,
        ) -> bool {
            let Some(g) = p.val().grad(grads) else {
                return false;
            };
            // Update on the inner backend, then re-enter autodiff as a fresh leaf.
            let updated = p.val().inner() - g.mul_scalar(lr);
            *p = Param::from_tensor(Tensor::from_inner(updated).require_grad());
            true
        }
        let mut n = 0;
        for (path, lin) in self.model.linears_mut() {
            for b in &mut lin.lora {
                n += usize::from(step(&mut b.a, grads, lr));
                n += usize::from(step(&mut b.b, grads, lr));
                if let Some(m) = &mut b.magnitude {
                    n += usize::from(step(m, grads, lr));
                }
            }
            if self.originals.contains_key(&path) {
                n += usize::from(step(&mut lin.weight, grads, lr));
                if let Some(bias) = &mut lin.bias {
                    n += usize::from(step(bias, grads, lr));
                }
            }
        }
        n
    }

    /// Trainable adapter parameters against all parameters, counted as PEFT does (adapters
    /// and `modules_to_save` copies are part of the total).
    pub fn trainable_parameters(&self) -> TrainableReport {
        let mut trainable = 0;
        let mut copies = 0;
        for (path, lin) in self.model.linears() {
            for b in &lin.lora {
                trainable += b.a.val().dims().iter().product::<usize>()
                    + b.b.val().dims().iter().product::<usize>()
                    + b.magnitude.as_ref().map(|m| m.val().dims()[0]).unwrap_or(0);
            }
            if self.originals.contains_key(&path) {
                let (i, o) = lin.dims();
                copies += i * o + lin.bias.as_ref().map(|_| o).unwrap_or(0);
            }
        }
        // The model's count includes the adapters; PEFT keeps a separate trainable copy of
        // each `modules_to_save` layer, counted on top.
        TrainableReport {
            trainable: trainable + copies,
            total: self.model.parameter_count() + copies,
        }
    }
}

/// `p ← p − lr·∇p` when `p` has a gradient in `grads` (on the inner backend, then back into
/// autodiff as a fresh leaf); returns whether it did.
pub(crate) fn sgd<const D: usize>(
    p: &mut Param<Tensor<D>>,
    grads: &burn::tensor::Gradients,
    lr: f64,
) -> bool {
    let Some(g) = p.val().grad(grads) else {
        return false;
    };
    let updated = p.val().inner() - g.mul_scalar(lr);
    *p = Param::from_tensor(Tensor::from_inner(updated).require_grad());
    true
}

fn dropout(p: f64) -> Dropout {
    DropoutConfig::new(p).init()
}
