//! The reparameterisation networks of prompt learning (training only: PEFT saves their output,
//! never their weights): prefix tuning's projection MLP and P-tuning's MLP or bidirectional
//! LSTM encoder. tilpass keeps their weights in a sidecar file,
//! `tilpass_prompt_encoder.safetensors` (PEFT's in-memory parameter names), so training can
//! resume — which PEFT itself cannot do.

use std::path::Path;

use burn::module::{Module, Param};
use burn::tensor::activation::{relu, sigmoid};
use burn::tensor::{Device, Tensor, TensorData};
use tilpass_core::{Checkpoint, HostTensor, SaveDtype, save_safetensors};
use tilpass_models::Linear;
use tilpass_models::layers::load_linear;

use crate::error::{PeftError, Result};

/// File name of the sidecar.
pub const ENCODER_SIDECAR: &str = "tilpass_prompt_encoder.safetensors";

/// Which network produces the virtual tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncoderKind {
    /// Prefix tuning with `prefix_projection`: `Linear → tanh → Linear`.
    PrefixMlp,
    /// P-tuning `MLP`: `Linear → ReLU → Linear → ReLU → Linear`.
    PTuningMlp,
    /// P-tuning `LSTM`: a bidirectional LSTM, then `Linear → ReLU → Linear`.
    PTuningLstm,
}

/// One direction of one LSTM layer, in PyTorch's gate order (input, forget, cell, output).
#[derive(Module, Debug)]
pub struct LstmDirection {
    /// `[in, 4h]` (PyTorch's `weight_ih` transposed).
    w_ih: Param<Tensor<2>>,
    /// `[h, 4h]`.
    w_hh: Param<Tensor<2>>,
    /// `[4h]`.
    b_ih: Param<Tensor<1>>,
    /// `[4h]`.
    b_hh: Param<Tensor<1>>,
}

/// A prompt encoder: the virtual-token embedding table and the network applied to it.
#[derive(Module, Debug)]
pub struct PromptEncoder {
    /// `embedding.weight`, `[n, input width]`.
    pub embedding: Param<Tensor<2>>,
    linears: Vec<Linear>,
    lstm: Vec<LstmDirection>,
    #[module(skip)]
    kind: EncoderKind,
}

fn uniform(state: &mut u64, n: usize, bound: f64) -> Vec<f32> {
    let mut rng = tilpass_core::SplitMix64::from_state(*state);
    let out = rng.uniform_vec(n, bound);
    *state = state.wrapping_add((n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    out
}

impl PromptEncoder {
    /// The kind of network.
    pub fn kind(&self) -> EncoderKind {
        self.kind
    }

    /// A new encoder with PyTorch's default initialisation (embedding N(0, 1), linear and LSTM
    /// weights uniform in ±1/√fan_in): `n` virtual tokens of width `d_in`, hidden width
    /// `hidden`, output width `d_out`, `lstm_layers` for the LSTM.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        kind: EncoderKind,
        n: usize,
        d_in: usize,
        hidden: usize,
        d_out: usize,
        lstm_layers: usize,
        seed: u64,
        device: &Device,
    ) -> Self {
        let mut state = seed ^ 0x0123_4567_89AB_CDEF;
        let mut lin = |i: usize, o: usize| {
            let b = 1.0 / (i as f64).sqrt();
            Linear::new(
                Tensor::from_data(
                    TensorData::new(uniform(&mut state, i * o, b), [i, o]),
                    device,
                ),
                Some(Tensor::from_data(
                    TensorData::new(uniform(&mut state, o, b), [o]),
                    device,
                )),
            )
        };
        let linears = match kind {
            EncoderKind::PrefixMlp => vec![lin(d_in, hidden), lin(hidden, d_out)],
            EncoderKind::PTuningMlp => {
                vec![lin(d_in, hidden), lin(hidden, hidden), lin(hidden, d_out)]
            }
            EncoderKind::PTuningLstm => vec![lin(2 * hidden, 2 * hidden), lin(2 * hidden, d_out)],
        };
        let mut lstm = Vec::new();
        if kind == EncoderKind::PTuningLstm {
            let b = 1.0 / (hidden as f64).sqrt();
            for layer in 0..lstm_layers.max(1) {
                let input = if layer == 0 { d_in } else { 2 * hidden };
                for _ in 0..2 {
                    let t2 = |st: &mut u64, r: usize, c: usize| {
                        Param::from_tensor(Tensor::from_data(
                            TensorData::new(uniform(st, r * c, b), [r, c]),
                            device,
                        ))
                    };
                    let t1 = |st: &mut u64, r: usize| {
                        Param::from_tensor(Tensor::from_data(
                            TensorData::new(uniform(st, r, b), [r]),
                            device,
                        ))
                    };
                    lstm.push(LstmDirection {
                        w_ih: t2(&mut state, input, 4 * hidden),
                        w_hh: t2(&mut state, hidden, 4 * hidden),
                        b_ih: t1(&mut state, 4 * hidden),
                        b_hh: t1(&mut state, 4 * hidden),
                    });
                }
            }
        }
        // nn.Embedding's N(0, 1) by Box–Muller on the same generator.
        let u = uniform(&mut state, 2 * n * d_in, 1.0);
        let emb: Vec<f32> = u
            .chunks(2)
            .map(|p| {
                let u1 = ((f64::from(p[0]) + 1.0) / 2.0).max(1e-300);
                let u2 = (f64::from(p[1]) + 1.0) / 2.0;
                ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
            })
            .collect();
        Self {
            embedding: Param::from_tensor(Tensor::from_data(
                TensorData::new(emb, [n, d_in]),
                device,
            )),
            linears,
            lstm,
            kind,
        }
    }

    fn lstm_dir(&self, d: &LstmDirection, x: Tensor<2>, reverse: bool) -> Tensor<2> {
        let [n, _] = x.dims();
        let h4 = d.w_hh.dims()[1];
        let hsz = h4 / 4;
        let device = x.device();
        let xs = x.matmul(d.w_ih.val()) + d.b_ih.val().unsqueeze::<2>();
        let mut h = Tensor::<2>::zeros([1, hsz], &device);
        let mut c = Tensor::<2>::zeros([1, hsz], &device);
        let mut outs = vec![None; n];
        let order: Vec<usize> = if reverse {
            (0..n).rev().collect()
        } else {
            (0..n).collect()
        };
        for t in order {
            let g = xs.clone().slice([t..t + 1, 0..h4])
                + h.clone().matmul(d.w_hh.val())
                + d.b_hh.val().unsqueeze::<2>();
            let gate = |k: usize| g.clone().slice([0..1, k * hsz..(k + 1) * hsz]);
            c = sigmoid(gate(1)) * c + sigmoid(gate(0)) * gate(2).tanh();
            h = sigmoid(gate(3)) * c.clone().tanh();
            outs[t] = Some(h.clone());
        }
        Tensor::cat(
            outs.into_iter()
                .map(|o| o.expect("every step ran"))
                .collect(),
            0,
        )
    }

    /// Every parameter, mutable, named as in the sidecar file (PEFT's in-memory names:
    /// `embedding.weight`, `mlp_head.0.weight`, `lstm_head.weight_ih_l0`, ...); linear weights
    /// are held `[in, out]` (the sidecar stores them transposed).
    pub fn params_mut(&mut self) -> Vec<(String, crate::lora::ParamMut<'_>)> {
        use crate::lora::ParamMut;
        let names = self.linear_names();
        let mut out = vec![(
            "embedding.weight".to_string(),
            ParamMut::D2(&mut self.embedding),
        )];
        for (name, l) in names.into_iter().zip(&mut self.linears) {
            out.push((format!("{name}.weight"), ParamMut::D2(&mut l.weight)));
            if let Some(b) = &mut l.bias {
                out.push((format!("{name}.bias"), ParamMut::D1(b)));
            }
        }
        for (i, d) in self.lstm.iter_mut().enumerate() {
            let sfx = format!("_l{}{}", i / 2, if i % 2 == 1 { "_reverse" } else { "" });
            out.push((
                format!("lstm_head.weight_ih{sfx}"),
                ParamMut::D2(&mut d.w_ih),
            ));
            out.push((
                format!("lstm_head.weight_hh{sfx}"),
                ParamMut::D2(&mut d.w_hh),
            ));
            out.push((format!("lstm_head.bias_ih{sfx}"), ParamMut::D1(&mut d.b_ih)));
            out.push((format!("lstm_head.bias_hh{sfx}"), ParamMut::D1(&mut d.b_hh)));
        }
        out
    }

    /// One SGD step on every parameter with a gradient; returns how many were updated.
    pub fn sgd_step(&mut self, grads: &burn::tensor::Gradients, lr: f64) -> usize {
        let mut n = usize::from(crate::lora::sgd(&mut self.embedding, grads, lr));
        for l in &mut self.linears {
            n += usize::from(crate::lora::sgd(&mut l.weight, grads, lr));
            if let Some(b) = &mut l.bias {
                n += usize::from(crate::lora::sgd(b, grads, lr));
            }
        }
        for d in &mut self.lstm {
            n += usize::from(crate::lora::sgd(&mut d.w_ih, grads, lr));
            n += usize::from(crate::lora::sgd(&mut d.w_hh, grads, lr));
            n += usize::from(crate::lora::sgd(&mut d.b_ih, grads, lr));
            n += usize::from(crate::lora::sgd(&mut d.b_hh, grads, lr));
        }
        n
    }

    /// The virtual-token table the model sees, `[n, output width]`.
    pub fn forward(&self) -> Tensor<2> {
        let x = self.embedding.val();
        match self.kind {
            EncoderKind::PrefixMlp => self.linears[1].forward(self.linears[0].forward(x).tanh()),
            EncoderKind::PTuningMlp => {
                let h = relu(self.linears[0].forward(x));
                let h = relu(self.linears[1].forward(h));
                self.linears[2].forward(h)
            }
            EncoderKind::PTuningLstm => {
                let mut x = x;
                for pair in self.lstm.chunks(2) {
                    let f = self.lstm_dir(&pair[0], x.clone(), false);
                    let r = self.lstm_dir(&pair[1], x, true);
                    x = Tensor::cat(vec![f, r], 1);
                }
                self.linears[1].forward(relu(self.linears[0].forward(x)))
            }
        }
    }

    fn linear_names(&self) -> Vec<String> {
        let ids: &[usize] = match self.kind {
            EncoderKind::PrefixMlp => &[0, 2],
            EncoderKind::PTuningMlp => &[0, 2, 4],
            EncoderKind::PTuningLstm => &[0, 2],
        };
        let head = if self.kind == EncoderKind::PrefixMlp {
            "transform"
        } else {
            "mlp_head"
        };
        ids.iter().map(|i| format!("{head}.{i}")).collect()
    }

    /// Loads an encoder from a sidecar file (or PEFT's in-memory state dict saved the same way).
    pub fn load(path: impl AsRef<Path>, kind: EncoderKind, device: &Device) -> Result<Self> {
        let ck = Checkpoint::open(path.as_ref())?;
        let emb = ck.read_f32("embedding.weight")?;
        let dims =
            |name: &str| -> Result<Vec<usize>> { Ok(ck.info(&format!("{name}.weight"))?.shape) };
        let mut me = Self {
            embedding: Param::from_tensor(emb.to_tensor(device)?),
            linears: Vec::new(),
            lstm: Vec::new(),
            kind,
        };
        for name in me.linear_names() {
            let s = dims(&name)?; // [out, in]
            me.linears
                .push(load_linear(&ck, &name, s[1], s[0], true, device)?);
        }
        if kind == EncoderKind::PTuningLstm {
            let mut layer = 0;
            while ck.contains(&format!("lstm_head.weight_ih_l{layer}")) {
                for sfx in ["", "_reverse"] {
                    let t = |n: &str| -> Result<HostTensor> {
                        Ok(ck.read_f32(&format!("lstm_head.{n}_l{layer}{sfx}"))?)
                    };
                    me.lstm.push(LstmDirection {
                        w_ih: Param::from_tensor(t("weight_ih")?.transposed()?.to_tensor(device)?),
                        w_hh: Param::from_tensor(t("weight_hh")?.transposed()?.to_tensor(device)?),
                        b_ih: Param::from_tensor(t("bias_ih")?.to_tensor(device)?),
                        b_hh: Param::from_tensor(t("bias_hh")?.to_tensor(device)?),
                    });
                }
                layer += 1;
            }
            if me.lstm.is_empty() {
                return Err(PeftError::Mismatch {
                    path: path.as_ref().display().to_string(),
                    message: "no lstm_head weights for an LSTM prompt encoder".into(),
                });
            }
        }
        Ok(me)
    }

    /// Writes the sidecar (PEFT's in-memory names, PyTorch layouts).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let mut t: Vec<(String, HostTensor)> = vec![(
            "embedding.weight".into(),
            HostTensor::from_tensor(&self.embedding.val()),
        )];
        for (name, l) in self.linear_names().into_iter().zip(&self.linears) {
            t.push((
                format!("{name}.weight"),
                HostTensor::from_tensor(&l.weight.val().transpose()),
            ));
            if let Some(b) = &l.bias {
                t.push((format!("{name}.bias"), HostTensor::from_tensor(&b.val())));
            }
        }
        for (i, d) in self.lstm.iter().enumerate() {
            let sfx = format!("_l{}{}", i / 2, if i % 2 == 1 { "_reverse" } else { "" });
            t.push((
                format!("lstm_head.weight_ih{sfx}"),
                HostTensor::from_tensor(&d.w_ih.val().transpose()),
            ));
            t.push((
                format!("lstm_head.weight_hh{sfx}"),
                HostTensor::from_tensor(&d.w_hh.val().transpose()),
            ));
            t.push((
                format!("lstm_head.bias_ih{sfx}"),
                HostTensor::from_tensor(&d.b_ih.val()),
            ));
            t.push((
                format!("lstm_head.bias_hh{sfx}"),
                HostTensor::from_tensor(&d.b_hh.val()),
            ));
        }
        save_safetensors(
            path,
            t.iter().map(|(k, v)| (k.as_str(), v)),
            SaveDtype::F32,
            None,
        )?;
        Ok(())
    }
}
