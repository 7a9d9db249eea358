//! Parameter tables: one list per model family naming every Hugging Face tensor.
//!
//! A family's table ([`ParamTable::param_table`], and the `*_params(config, ...)` function
//! behind it) is the one place that spells its HF names: each [`ParamSpec`] gives the module
//! path (`model.layers.0.self_attn.q_proj`), the kind of layer (which fixes the tensor names
//! under it, `.weight` / `.bias`, and the layout), the expected shape from the config, and
//! whether it is an adapter target. From it:
//!
//! - loading: a [`Loader`] reads the checkpoint in table order, each model field taking the
//!   next entry (shapes checked, prefixes and tied copies resolved);
//! - saving: [`hf_tensors`] pairs the table with the model's fields ([`ParamTable::param_slots`],
//!   same order) and writes HF names and layouts;
//! - adapters: [`named_linears`] / [`named_linears_mut`] give the `HasLinears` names;
//! - random initialisation ([`crate::init`]) draws one tensor per entry.

use burn::module::{Module, Param};
use burn::nn::Embedding;
use burn::tensor::{Device, Gradients, Tensor};
use tilpass_core::{Checkpoint, HostTensor};

use crate::embedding::load_embedding;
use crate::error::{ModelError, Result};
use crate::linear::{HasLinears, Linear, ParamFn, load_conv1d, load_linear, map_module_params};
use crate::norm::{LayerNorm, RmsNorm};

/// What kind of module an entry is, which fixes its HF tensors and their layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// PyTorch `nn.Linear`: `{name}.weight [out, in]` (transposed into burn's `[in, out]`) and,
    /// with a bias, `{name}.bias [out]`.
    Linear,
    /// GPT-2's `Conv1D`: `{name}.weight [in, out]` (burn's layout already) and `{name}.bias`.
    Conv1d,
    /// `nn.Embedding`: `{name}.weight [n, dim]`.
    Embedding,
    /// RMS norm: `{name}.weight [dim]`.
    RmsNorm,
    /// Layer norm: `{name}.weight [dim]` and `{name}.bias [dim]`.
    LayerNorm,
    /// A bare tensor named `{name}` itself.
    Tensor,
}

/// One entry of a parameter table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamSpec {
    /// HF module path (`model.layers.0.self_attn.q_proj`); for [`ParamKind::Tensor`], the
    /// tensor's name.
    pub name: String,
    /// The kind of module.
    pub kind: ParamKind,
    /// Shape of the HF weight: `[out, in]` for a linear layer (PyTorch's layout), `[in, out]`
    /// for a `Conv1D`, `[n, dim]` for an embedding, `[dim]` for a norm, the tensor's shape.
    pub shape: Vec<usize>,
    /// Linear / `Conv1D`: whether it has a bias `[out]`.
    pub bias: bool,
    /// Whether it is an adapter target, listed by `HasLinears` under `name`.
    pub adapter: bool,
    /// Other names a checkpoint may hold the weight under (tied copies), tried in order when
    /// `name` is absent.
    pub aliases: Vec<String>,
}

impl ParamSpec {
    fn new(name: impl Into<String>, kind: ParamKind, shape: Vec<usize>) -> Self {
        Self {
            name: name.into(),
            kind,
            shape,
            bias: false,
            adapter: false,
            aliases: Vec::new(),
        }
    }

    /// `nn.Linear(d_in, d_out, bias)`.
    pub fn linear(name: impl Into<String>, d_in: usize, d_out: usize, bias: bool) -> Self {
        Self {
            bias,
            ..Self::new(name, ParamKind::Linear, vec![d_out, d_in])
        }
    }

    /// GPT-2 `Conv1D(d_in → d_out)` with a bias.
    pub fn conv1d(name: impl Into<String>, d_in: usize, d_out: usize) -> Self {
        Self {
            bias: true,
            ..Self::new(name, ParamKind::Conv1d, vec![d_in, d_out])
        }
    }

    /// `nn.Embedding(n, dim)`.
    pub fn embedding(name: impl Into<String>, n: usize, dim: usize) -> Self {
        Self::new(name, ParamKind::Embedding, vec![n, dim])
    }

    /// RMS norm over `dim`.
    pub fn rms_norm(name: impl Into<String>, dim: usize) -> Self {
        Self::new(name, ParamKind::RmsNorm, vec![dim])
    }

    /// Layer norm over `dim` (weight and bias).
    pub fn layer_norm(name: impl Into<String>, dim: usize) -> Self {
        Self::new(name, ParamKind::LayerNorm, vec![dim])
    }

    /// A bare tensor of `shape`.
    pub fn tensor(name: impl Into<String>, shape: &[usize]) -> Self {
        Self::new(name, ParamKind::Tensor, shape.to_vec())
    }

    /// Marks the entry as an adapter target.
    pub fn adapter(mut self) -> Self {
        self.adapter = true;
        self
    }

    /// Adds a name the checkpoint may hold the weight under instead.
    pub fn alias(mut self, name: impl Into<String>) -> Self {
        self.aliases.push(name.into());
        self
    }

    /// The HF tensors of the entry under module path `name`: `(tensor name, HF shape)`.
    pub fn tensors_at(&self, name: &str) -> Vec<(String, Vec<usize>)> {
        let w = (format!("{name}.weight"), self.shape.clone());
        let b = |n: usize| (format!("{name}.bias"), vec![n]);
        match self.kind {
            ParamKind::Linear if self.bias => vec![w, b(self.shape[0])],
            ParamKind::Conv1d if self.bias => vec![w, b(self.shape[1])],
            ParamKind::LayerNorm => vec![w, b(self.shape[0])],
            ParamKind::Tensor => vec![(name.to_string(), self.shape.clone())],
            _ => vec![w],
        }
    }

    /// The HF tensors of the entry: `(tensor name, HF shape)`.
    pub fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        self.tensors_at(&self.name)
    }

    /// The name whose tensors hold the values (the first tensor is looked up).
    fn main_tensor(&self, name: &str) -> String {
        match self.kind {
            ParamKind::Tensor => name.to_string(),
            _ => format!("{name}.weight"),
        }
    }
}

/// A model field that an entry maps to.
#[derive(Debug)]
pub enum Slot<'a> {
    /// A linear (or `Conv1D`) layer.
    Linear(&'a Linear),
    /// An embedding table.
    Embedding(&'a Embedding),
    /// An RMS norm.
    RmsNorm(&'a RmsNorm),
    /// A layer norm.
    LayerNorm(&'a LayerNorm),
    /// A bare matrix.
    Matrix(&'a Param<Tensor<2>>),
    /// A bare vector.
    Vector(&'a Param<Tensor<1>>),
}

/// A mutable model field that an entry maps to (see [`Slot`]).
#[derive(Debug)]
pub enum SlotMut<'a> {
    /// A linear (or `Conv1D`) layer.
    Linear(&'a mut Linear),
    /// An embedding table.
    Embedding(&'a mut Embedding),
    /// An RMS norm.
    RmsNorm(&'a mut RmsNorm),
    /// A layer norm.
    LayerNorm(&'a mut LayerNorm),
    /// A bare matrix.
    Matrix(&'a mut Param<Tensor<2>>),
    /// A bare vector.
    Vector(&'a mut Param<Tensor<1>>),
}

impl Slot<'_> {
    fn kind_name(&self) -> &'static str {
        match self {
            Slot::Linear(_) => "linear",
            Slot::Embedding(_) => "embedding",
            Slot::RmsNorm(_) => "RMS norm",
            Slot::LayerNorm(_) => "layer norm",
            Slot::Matrix(_) => "matrix",
            Slot::Vector(_) => "vector",
        }
    }

    /// HF values of the field's tensors, in the order of [`ParamSpec::tensors`].
    fn host(&self, kind: ParamKind) -> Result<Vec<HostTensor>> {
        let h1 = |p: &Param<Tensor<1>>| HostTensor::from_tensor(&p.val());
        let h2 = |p: &Param<Tensor<2>>| HostTensor::from_tensor(&p.val());
        Ok(match (self, kind) {
            (Slot::Linear(l), ParamKind::Linear | ParamKind::Conv1d) => {
                let w = h2(&l.weight);
                let mut out = vec![if kind == ParamKind::Linear {
                    w.transposed()?
                } else {
                    w
                }];
                out.extend(l.bias.as_ref().map(h1));
                out
            }
            (Slot::Embedding(e), ParamKind::Embedding) => vec![h2(&e.weight)],
            (Slot::RmsNorm(n), ParamKind::RmsNorm) => vec![h1(&n.weight)],
            (Slot::LayerNorm(n), ParamKind::LayerNorm) => vec![h1(&n.weight), h1(&n.bias)],
            (Slot::Matrix(m), ParamKind::Tensor) => vec![h2(m)],
            (Slot::Vector(v), ParamKind::Tensor) => vec![h1(v)],
            (slot, kind) => {
                return Err(ModelError::Input(format!(
                    "parameter table out of step: a {kind:?} entry met a {} field",
                    slot.kind_name()
                )));
            }
        })
    }
}

/// A model family with a parameter table.
pub trait ParamTable {
    /// Every HF module of this model (with its optional parts as loaded), in table order.
    fn param_table(&self) -> Vec<ParamSpec>;
    /// The model's fields, one per table entry, in table order.
    fn param_slots(&self) -> Vec<Slot<'_>>;
    /// The same, mutable.
    fn param_slots_mut(&mut self) -> Vec<SlotMut<'_>>;
}

/// A model family: a burn module with a parameter table. Every family is [`HasLinears`]
/// through it (adapter targets from the table; parameter count, freezing and parameter
/// visits from the module), so each family writes only what differs.
pub trait FamilyModel: ParamTable + Module {
    /// HF `model_type`.
    fn model_type(&self) -> String;
    /// True when the HF modules are GPT-2's `Conv1D`.
    fn conv1d_layers(&self) -> bool {
        false
    }
    /// Parameters that the module holds twice but PyTorch counts once (a head tied to the
    /// embeddings).
    fn tied_params(&self) -> usize {
        0
    }
}

impl<M: FamilyModel> HasLinears for M {
    fn linears(&self) -> Vec<(String, &Linear)> {
        named_linears(self)
    }
    fn linears_mut(&mut self) -> Vec<(String, &mut Linear)> {
        named_linears_mut(self)
    }
    fn model_type(&self) -> String {
        FamilyModel::model_type(self)
    }
    fn conv1d_layers(&self) -> bool {
        FamilyModel::conv1d_layers(self)
    }
    fn parameter_count(&self) -> usize {
        self.num_params() - self.tied_params()
    }
    fn freeze(&mut self) {
        *self = self.clone().no_grad();
    }
    fn map_params(&mut self, grads: Option<&Gradients>, f: &mut ParamFn<'_>) {
        *self = map_module_params(self.clone(), grads, f);
    }
}

/// The adapter targets of `model` with their HF module paths, in table order.
pub fn named_linears<M: ParamTable + ?Sized>(model: &M) -> Vec<(String, &Linear)> {
    model
        .param_table()
        .into_iter()
        .zip(model.param_slots())
        .filter_map(|(spec, slot)| match slot {
            Slot::Linear(l) if spec.adapter => Some((spec.name, l)),
            _ => None,
        })
        .collect()
}

/// [`named_linears`], mutable.
pub fn named_linears_mut<M: ParamTable + ?Sized>(model: &mut M) -> Vec<(String, &mut Linear)> {
    let table = model.param_table();
    table
        .into_iter()
        .zip(model.param_slots_mut())
        .filter_map(|(spec, slot)| match slot {
            SlotMut::Linear(l) if spec.adapter => Some((spec.name, l)),
            _ => None,
        })
        .collect()
}

/// Every HF tensor of `model` with its HF name and layout (`[out, in]` linear weights), in
/// table order, for saving. Errors if a field's shape differs from its entry.
pub fn hf_tensors<M: ParamTable + ?Sized>(model: &M) -> Result<Vec<(String, HostTensor)>> {
    let table = model.param_table();
    let slots = model.param_slots();
    if table.len() != slots.len() {
        return Err(ModelError::Input(format!(
            "parameter table has {} entries, the model {} fields",
            table.len(),
            slots.len()
        )));
    }
    let mut out = Vec::new();
    for (spec, slot) in table.iter().zip(&slots) {
        let (names, values) = (spec.tensors(), slot.host(spec.kind)?);
        if names.len() != values.len() {
            return Err(ModelError::Input(format!(
                "{}: the model holds {} tensors, its parameter table names {}",
                spec.name,
                values.len(),
                names.len()
            )));
        }
        for ((name, shape), t) in names.into_iter().zip(values) {
            if t.shape != shape {
                return Err(ModelError::Input(format!(
                    "{name}: the model holds {:?}, its parameter table says {shape:?}",
                    t.shape
                )));
            }
            out.push((name, t));
        }
    }
    Ok(out)
}

/// Reads a checkpoint in table order: each call takes the next entry, checks its kind and
/// loads its tensors (shapes checked against the entry). Names map from the table's prefix to
/// the checkpoint's (`model.` → none, ...); absent names fall back to the entry's aliases.
pub struct Loader<'c> {
    ckpt: &'c Checkpoint,
    specs: std::vec::IntoIter<ParamSpec>,
    prefix: (String, String),
    device: Device,
}

impl<'c> Loader<'c> {
    /// A loader of `table` from `ckpt` onto `device`.
    pub fn new(ckpt: &'c Checkpoint, table: Vec<ParamSpec>, device: &Device) -> Self {
        Self {
            ckpt,
            specs: table.into_iter(),
            prefix: (String::new(), String::new()),
            device: device.clone(),
        }
    }

    /// Table names starting with `table` are read with `checkpoint` instead (checkpoints
    /// saved from the bare model lack the task class's prefix).
    pub fn with_prefix(mut self, table: &str, checkpoint: &str) -> Self {
        self.prefix = (table.into(), checkpoint.into());
        self
    }

    /// The next entry, which must be of `kinds` (and, for a bare tensor, of rank `rank`), and
    /// the module path to read it from.
    fn next(&mut self, kinds: &[ParamKind], rank: Option<usize>) -> Result<(ParamSpec, String)> {
        let spec = self.specs.next().ok_or_else(|| {
            ModelError::Input(format!(
                "parameter table out of step: no entry left for a {kinds:?} field"
            ))
        })?;
        if !kinds.contains(&spec.kind) || rank.is_some_and(|r| r != spec.shape.len()) {
            return Err(ModelError::Input(format!(
                "parameter table out of step: {} is a {:?} entry of shape {:?}, the field a \
                 {kinds:?} of rank {rank:?}",
                spec.name, spec.kind, spec.shape
            )));
        }
        let (from, to) = &self.prefix;
        let map = |n: &str| match n.strip_prefix(from.as_str()) {
            Some(rest) => format!("{to}{rest}"),
            None => n.to_string(),
        };
        let name = std::iter::once(&spec.name)
            .chain(&spec.aliases)
            .map(|n| map(n))
            .find(|n| self.ckpt.contains(&spec.main_tensor(n)))
            .unwrap_or_else(|| map(&spec.name));
        Ok((spec, name))
    }

    /// The next linear or `Conv1D` layer.
    pub fn linear(&mut self) -> Result<Linear> {
        let (s, name) = self.next(&[ParamKind::Linear, ParamKind::Conv1d], None)?;
        let (c, d) = (self.ckpt, &self.device);
        match s.kind {
            ParamKind::Conv1d => load_conv1d(c, &name, s.shape[0], s.shape[1], d),
            _ => load_linear(c, &name, s.shape[1], s.shape[0], s.bias, d),
        }
    }

    /// The next embedding table.
    pub fn embedding(&mut self) -> Result<Embedding> {
        let (s, name) = self.next(&[ParamKind::Embedding], None)?;
        let name = format!("{name}.weight");
        load_embedding(self.ckpt, &name, s.shape[0], s.shape[1], &self.device)
    }

    /// The next RMS norm, with `eps`.
    pub fn rms_norm(&mut self, eps: f64) -> Result<RmsNorm> {
        let (s, name) = self.next(&[ParamKind::RmsNorm], None)?;
        RmsNorm::load(self.ckpt, &name, s.shape[0], eps, &self.device)
    }

    /// The next layer norm, with `eps`.
    pub fn layer_norm(&mut self, eps: f64) -> Result<LayerNorm> {
        let (s, name) = self.next(&[ParamKind::LayerNorm], None)?;
        LayerNorm::load(self.ckpt, &name, s.shape[0], eps, &self.device)
    }

    /// The next bare matrix.
    pub fn matrix(&mut self) -> Result<Param<Tensor<2>>> {
        let (s, name) = self.next(&[ParamKind::Tensor], Some(2))?;
        let shape = [s.shape[0], s.shape[1]];
        Ok(Param::from_tensor(self.ckpt.tensor(
            &name,
            shape,
            &self.device,
        )?))
    }

    /// The next bare vector.
    pub fn vector(&mut self) -> Result<Param<Tensor<1>>> {
        let (s, name) = self.next(&[ParamKind::Tensor], Some(1))?;
        Ok(Param::from_tensor(self.ckpt.tensor(
            &name,
            [s.shape[0]],
            &self.device,
        )?))
    }

    /// Errors unless every entry was read.
    pub fn finish(mut self) -> Result<()> {
        match self.specs.next() {
            None => Ok(()),
            Some(s) => Err(ModelError::Input(format!(
                "parameter table out of step: {} was not read",
                s.name
            ))),
        }
    }
}
