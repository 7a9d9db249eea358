//! Any model directory behind one loader, as transformers' Auto classes pick a class: the
//! family from `config.json`'s `model_type`, the task head from `architectures[0]`.
//!
//! | `architectures[0]` | [`Head`] | families | logits |
//! | --- | --- | --- | --- |
//! | `*ForCausalLM`, `*LMHeadModel` | [`Head::CausalLm`] | llama, mistral, gpt2 | `[batch, seq, vocab]` |
//! | `*ForMaskedLM` (`BertForPreTraining`) | [`Head::MaskedLm`] | bert, ltgbert / norbert | `[batch, seq, vocab]` |
//! | `*ForSequenceClassification` | [`Head::SequenceClassification`] | llama, mistral, gpt2, bert, ltgbert / norbert | `[batch, num_labels]` |
//! | `*ForTokenClassification` | [`Head::TokenClassification`] | bert | `[batch, seq, num_labels]` |
//! | `*ForConditionalGeneration` | [`Head::Seq2SeqLm`] | t5, mt5, nort5 | `[batch, dec_seq, vocab]` |
//! | `BertModel`, `NorbertModel`, `LtgBertModel` | [`Head::Base`] | bert, ltgbert / norbert | none (hidden states) |
//!
//! Any other class is a [`ModelError::UnsupportedArchitecture`] naming it and the heads the
//! family has. A config without `architectures` gets the family's language-model head, the
//! class `AutoModelForCausalLM` / `AutoModelForMaskedLM` / `AutoModelForSeq2SeqLM` would
//! build for it.
//!
//! ```no_run
//! use tilpass_models::{AnyModel, Head};
//! # fn demo(device: &burn::tensor::Device) -> tilpass_models::Result<()> {
//! let model = AnyModel::load("norbert3-xs-sentiment", device)?;
//! assert_eq!(model.head(), Head::SequenceClassification);
//! let logits = model.logits(&[2, 417, 88, 3], None, None)?; // [1, num_labels]
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor};
use tilpass_core::{CONFIG_FILE, ModelDir};
use tilpass_tokenize::{Batch, BatchRow, Padding};

use crate::decoder::{DecoderInput, DecoderLm, SUPPORTED_DECODERS};
use crate::decoder_classifier::DecoderClassifier;
use crate::embed::{EncoderModel, SUPPORTED_ENCODERS};
use crate::encoder::EncoderInput;
use crate::error::{ModelError, Result};
use crate::linear::HasLinears;
use crate::seq2seq::{SUPPORTED_SEQ2SEQ, Seq2SeqLm, Seq2SeqModel};

/// A model family: one architecture of `tilpass-models`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// Llama (`model_type: llama`).
    Llama,
    /// Mistral (`mistral`; the Llama implementation).
    Mistral,
    /// GPT-2 (`gpt2`).
    Gpt2,
    /// BERT (`bert`).
    Bert,
    /// LTG-BERT / NorBERT3 (`ltgbert`, `norbert`, `norbert3`).
    LtgBert,
    /// T5, T5.1.1, mT5 (`t5`, `mt5`).
    T5,
    /// NorT5 (`nort5`).
    NorT5,
}

impl Family {
    /// The family of a `model_type`.
    pub fn from_model_type(model_type: &str) -> Option<Self> {
        Some(match model_type {
            "llama" => Self::Llama,
            "mistral" => Self::Mistral,
            "gpt2" => Self::Gpt2,
            "bert" => Self::Bert,
            "ltgbert" | "norbert" | "norbert3" => Self::LtgBert,
            "t5" | "mt5" => Self::T5,
            "nort5" => Self::NorT5,
            _ => return None,
        })
    }

    /// The family of a config without `model_type`, from its class name: the remote-code
    /// families (NorBERT3's `Norbert*` / `LtgBert*`, `NorT5*`), as the family loaders accept.
    fn from_architecture(architecture: &str) -> Option<Self> {
        if architecture.starts_with("Norbert") || architecture.starts_with("LtgBert") {
            Some(Self::LtgBert)
        } else if architecture.starts_with("NorT5") {
            Some(Self::NorT5)
        } else {
            None
        }
    }

    /// The heads tilpass implements for this family.
    pub fn heads(self) -> &'static [Head] {
        match self {
            Self::Llama | Self::Mistral | Self::Gpt2 => {
                &[Head::CausalLm, Head::SequenceClassification]
            }
            Self::Bert => &[
                Head::MaskedLm,
                Head::SequenceClassification,
                Head::TokenClassification,
                Head::Base,
            ],
            Self::LtgBert => &[Head::MaskedLm, Head::SequenceClassification, Head::Base],
            Self::T5 | Self::NorT5 => &[Head::Seq2SeqLm],
        }
    }

    /// The head of a config without `architectures`: the language-model head that
    /// `AutoModelForCausalLM` / `AutoModelForMaskedLM` / `AutoModelForSeq2SeqLM` builds.
    pub fn default_head(self) -> Head {
        match self {
            Self::Llama | Self::Mistral | Self::Gpt2 => Head::CausalLm,
            Self::Bert | Self::LtgBert => Head::MaskedLm,
            Self::T5 | Self::NorT5 => Head::Seq2SeqLm,
        }
    }

    /// The transformers class of [`Self::default_head`].
    pub fn default_architecture(self) -> String {
        self.class_name(self.default_head())
    }

    /// The transformers class of this family with `head` (`BertForTokenClassification`,
    /// `GPT2LMHeadModel`, `LtgBertModel`, ...).
    pub fn class_name(self, head: Head) -> String {
        let prefix = match self {
            Self::Llama => "Llama",
            Self::Mistral => "Mistral",
            Self::Gpt2 => "GPT2",
            Self::Bert => "Bert",
            Self::LtgBert => "LtgBert",
            Self::T5 => "T5",
            Self::NorT5 => "NorT5",
        };
        let suffix = match head {
            Head::CausalLm if self == Self::Gpt2 => "LMHeadModel",
            Head::CausalLm => "ForCausalLM",
            Head::MaskedLm => "ForMaskedLM",
            Head::SequenceClassification => "ForSequenceClassification",
            Head::TokenClassification => "ForTokenClassification",
            Head::Seq2SeqLm => "ForConditionalGeneration",
            Head::Base => "Model",
        };
        format!("{prefix}{suffix}")
    }

    /// The canonical `model_type`.
    pub fn model_type(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Mistral => "mistral",
            Self::Gpt2 => "gpt2",
            Self::Bert => "bert",
            Self::LtgBert => "ltgbert",
            Self::T5 => "t5",
            Self::NorT5 => "nort5",
        }
    }
}

/// Every `model_type` [`AnyModel::load`] understands.
pub fn supported_model_types() -> Vec<&'static str> {
    SUPPORTED_DECODERS
        .iter()
        .chain(&SUPPORTED_ENCODERS)
        .chain(&SUPPORTED_SEQ2SEQ)
        .copied()
        .collect()
}

/// The task head a checkpoint carries: what its forward pass returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Head {
    /// `*ForCausalLM` / `*LMHeadModel`: next-token logits `[batch, seq, vocab]`.
    CausalLm,
    /// `*ForMaskedLM`: token logits `[batch, seq, vocab]`.
    MaskedLm,
    /// `*ForSequenceClassification`: `[batch, num_labels]`.
    SequenceClassification,
    /// `*ForTokenClassification`: `[batch, seq, num_labels]`.
    TokenClassification,
    /// `*ForConditionalGeneration`: decoder logits `[batch, dec_seq, vocab]`.
    Seq2SeqLm,
    /// A bare encoder (`BertModel`): hidden states `[batch, seq, hidden]`, no logits.
    Base,
}

impl Head {
    /// The head of a transformers class name, by its suffix as above; `None` for a class
    /// tilpass has no head for (`*ForQuestionAnswering`, `*ForMultipleChoice`, ...).
    pub fn from_architecture(name: &str) -> Option<Self> {
        Some(
            if name.ends_with("ForCausalLM") || name.ends_with("LMHeadModel") {
                Self::CausalLm
            } else if name.ends_with("ForMaskedLM") || name == "BertForPreTraining" {
                Self::MaskedLm
            } else if name.ends_with("ForSequenceClassification") {
                Self::SequenceClassification
            } else if name.ends_with("ForTokenClassification") {
                Self::TokenClassification
            } else if name.ends_with("ForConditionalGeneration") {
                Self::Seq2SeqLm
            } else if name.ends_with("Model") && !name.contains("For") && !name.contains("Head") {
                Self::Base
            } else {
                return None;
            },
        )
    }

    /// The class-name pattern and what it gives, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Self::CausalLm => "*ForCausalLM / *LMHeadModel (causal LM)",
            Self::MaskedLm => "*ForMaskedLM (masked LM)",
            Self::SequenceClassification => "*ForSequenceClassification",
            Self::TokenClassification => "*ForTokenClassification",
            Self::Seq2SeqLm => "*ForConditionalGeneration (encoder-decoder LM)",
            Self::Base => "*Model (bare encoder: hidden states, no logits)",
        }
    }
}

/// What a model directory holds, read from its `config.json` without loading weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelKind {
    /// The directory.
    pub dir: PathBuf,
    /// The family, from `model_type`.
    pub family: Family,
    /// The head, from `architectures[0]` (the family's default when absent).
    pub head: Head,
    /// `architectures[0]`, when the config has one.
    pub architecture: Option<String>,
}

impl ModelKind {
    /// Reads `dir/config.json`; errors name the file and, for an unknown `model_type` or a
    /// class without a head here, what is supported.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let md = ModelDir::open(dir.as_ref())?;
        let path = md.path().join(CONFIG_FILE).display().to_string();
        let model_type = md.model_type().unwrap_or("").to_string();
        let architecture = md.config_json()["architectures"][0]
            .as_str()
            .map(str::to_string);
        let family = match Family::from_model_type(&model_type) {
            Some(f) => f,
            None if model_type.is_empty() => architecture
                .as_deref()
                .and_then(Family::from_architecture)
                .ok_or_else(|| unsupported_type(&path, "(none)"))?,
            None => return Err(unsupported_type(&path, &model_type)),
        };
        let head = match &architecture {
            None => family.default_head(),
            Some(a) => Head::from_architecture(a)
                .filter(|h| family.heads().contains(h))
                .ok_or_else(|| ModelError::UnsupportedArchitecture {
                    path: path.clone(),
                    architecture: a.clone(),
                    model_type: if model_type.is_empty() {
                        family.model_type().to_string()
                    } else {
                        model_type.clone()
                    },
                    supported: family
                        .heads()
                        .iter()
                        .map(|h| h.describe())
                        .collect::<Vec<_>>()
                        .join(", "),
                })?,
        };
        Ok(Self {
            dir: md.path().to_path_buf(),
            family,
            head,
            architecture,
        })
    }

    /// The class the model loads as: `architectures[0]`, else the family's class for `head`.
    pub fn class_name(&self) -> String {
        match &self.architecture {
            Some(a) if Head::from_architecture(a) == Some(self.head) => a.clone(),
            _ => self.family.class_name(self.head),
        }
    }
}

fn unsupported_type(path: &str, model_type: &str) -> ModelError {
    ModelError::UnsupportedModelType {
        path: path.to_string(),
        model_type: model_type.to_string(),
        supported: supported_model_types().join(", "),
    }
}

/// Any model `tilpass-models` loads, with the head its `config.json` names (see the module
/// docs); each variant wraps the family loader's type.
#[derive(Debug)]
pub enum AnyModel {
    /// A decoder-only causal LM (Llama, Mistral, GPT-2).
    CausalLm(DecoderLm),
    /// A masked LM (BERT, LTG-BERT).
    MaskedLm(EncoderModel),
    /// A sequence classifier (BERT, LTG-BERT).
    SequenceClassifier(EncoderModel),
    /// A decoder sequence classifier (Llama, Mistral, GPT-2 `*ForSequenceClassification`:
    /// reward models).
    DecoderClassifier(Box<DecoderClassifier>),
    /// A token classifier (BERT).
    TokenClassifier(EncoderModel),
    /// A bare encoder without a head (hidden states only).
    Encoder(EncoderModel),
    /// An encoder-decoder LM (T5, NorT5).
    Seq2SeqLm(Seq2SeqLm),
}

/// Logits of [`AnyModel::logits`]: per sequence (`[batch, num_labels]`) or per token
/// (`[batch, seq, vocab | num_labels]`).
#[derive(Debug, Clone)]
pub enum Logits {
    /// Sequence classification, `[batch, num_labels]`.
    PerSequence(Tensor<2>),
    /// Causal / masked LM and token classification `[batch, seq, _]`; seq2seq
    /// `[batch, dec_seq, vocab]`.
    PerToken(Tensor<3>),
}

impl Logits {
    /// The shape.
    pub fn dims(&self) -> Vec<usize> {
        match self {
            Self::PerSequence(t) => t.dims().to_vec(),
            Self::PerToken(t) => t.dims().to_vec(),
        }
    }

    /// The values, row-major.
    pub fn into_vec(self) -> Result<Vec<f32>> {
        let data = match self {
            Self::PerSequence(t) => t.into_data(),
            Self::PerToken(t) => t.into_data(),
        };
        data.try_into_vec_as::<f32>()
            .map_err(|e| ModelError::Input(format!("reading logits: {e:?}")))
    }
}

impl AnyModel {
    /// Loads `dir` with the family of its `model_type` and the head of its `architectures`
    /// (see the module docs).
    pub fn load(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        Self::load_kind(&ModelKind::from_dir(dir)?, device)
    }

    /// Loads a directory already read with [`ModelKind::from_dir`] (callers may change its
    /// `head` to another the family has, e.g. [`Head::Base`] to skip a head).
    pub fn load_kind(kind: &ModelKind, device: &Device) -> Result<Self> {
        let dir = &kind.dir;
        if !kind.family.heads().contains(&kind.head) {
            return Err(ModelError::UnsupportedArchitecture {
                path: dir.join(CONFIG_FILE).display().to_string(),
                architecture: format!("{:?}", kind.head),
                model_type: kind.family.model_type().into(),
                supported: kind
                    .family
                    .heads()
                    .iter()
                    .map(|h| h.describe())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        // The config's class, or the family's class for a head it does not name (no
        // `architectures`, or a head the caller chose).
        let class = kind.class_name();
        let arch = (kind.architecture.as_deref() != Some(class.as_str())).then_some(class.as_str());
        let encoder = |arch: Option<&str>| {
            EncoderModel::load_as(dir, arch, device).map_err(|e| match &kind.architecture {
                Some(_) => e,
                None => ModelError::UnsupportedConfig {
                    path: dir.join(CONFIG_FILE).display().to_string(),
                    message: format!(
                        "no `architectures`, so the model loads as {class}, which failed: {e}; \
                         name the model's class in `architectures`"
                    ),
                },
            })
        };
        Ok(match kind.head {
            Head::CausalLm => Self::CausalLm(DecoderLm::load(dir, device)?),
            Head::Seq2SeqLm => Self::Seq2SeqLm(Seq2SeqLm::load(dir, device)?),
            Head::MaskedLm => Self::MaskedLm(encoder(arch)?),
            Head::SequenceClassification
                if matches!(kind.family, Family::Llama | Family::Mistral | Family::Gpt2) =>
            {
                Self::DecoderClassifier(Box::new(DecoderClassifier::load(dir, device)?))
            }
            Head::SequenceClassification => Self::SequenceClassifier(encoder(arch)?),
            Head::TokenClassification => Self::TokenClassifier(encoder(arch)?),
            Head::Base => Self::Encoder(encoder(arch)?),
        })
    }

    /// The head.
    pub fn head(&self) -> Head {
        match self {
            Self::CausalLm(_) => Head::CausalLm,
            Self::MaskedLm(_) => Head::MaskedLm,
            Self::SequenceClassifier(_) | Self::DecoderClassifier(_) => {
                Head::SequenceClassification
            }
            Self::TokenClassifier(_) => Head::TokenClassification,
            Self::Encoder(_) => Head::Base,
            Self::Seq2SeqLm(_) => Head::Seq2SeqLm,
        }
    }

    /// The encoder of the encoder variants.
    pub fn encoder(&self) -> Option<&EncoderModel> {
        match self {
            Self::MaskedLm(m)
            | Self::SequenceClassifier(m)
            | Self::TokenClassifier(m)
            | Self::Encoder(m) => Some(m),
            _ => None,
        }
    }

    /// Logits for one unpadded sequence `ids` (`[1, …]` as [`Head`] lists):
    /// causal and masked LM `[1, seq, vocab]`, sequence classifier `[1, num_labels]`, token
    /// classifier `[1, seq, num_labels]`, encoder-decoder `[1, dec_seq, vocab]` over
    /// `decoder_ids` (default: the decoder start token alone). `token_type_ids` (`[seq]`,
    /// default zeros) are for BERT only; `decoder_ids` for encoder-decoders only. A bare
    /// encoder has no logits (an error; see [`EncoderModel::forward_hidden`]).
    pub fn logits(
        &self,
        ids: &[u32],
        token_type_ids: Option<&[u32]>,
        decoder_ids: Option<&[u32]>,
    ) -> Result<Logits> {
        if ids.is_empty() {
            return Err(ModelError::Input("no input ids".into()));
        }
        if decoder_ids.is_some() && !matches!(self, Self::Seq2SeqLm(_)) {
            return Err(ModelError::Input(format!(
                "decoder ids are for encoder-decoder models (T5, NorT5); this is a {} ({})",
                self.model_type(),
                self.head().describe()
            )));
        }
        if let Some(tt) = token_type_ids {
            if !matches!(self.encoder(), Some(EncoderModel::Bert(_))) {
                return Err(ModelError::Input(format!(
                    "token type ids are for BERT models; this is a {}",
                    self.model_type()
                )));
            }
            if tt.len() != ids.len() {
                return Err(ModelError::Input(format!(
                    "{} token type ids for {} input ids",
                    tt.len(),
                    ids.len()
                )));
            }
        }
        let encoder_input = || -> Result<EncoderInput> {
            let mut row = BatchRow::new(ids);
            if let Some(tt) = token_type_ids {
                row = row.with_token_type_ids(tt);
            }
            let batch = Batch::pad([row], Padding::right(0)).map_err(tilpass_core::Error::from)?;
            EncoderInput::from_batch(&batch)
        };
        Ok(match self {
            Self::CausalLm(m) => {
                Logits::PerToken(m.forward(&DecoderInput::unpadded(&[ids.to_vec()])?, None)?)
            }
            Self::MaskedLm(m) => Logits::PerToken(m.mlm_logits(&encoder_input()?)?),
            Self::SequenceClassifier(m) => Logits::PerSequence(m.classify(&encoder_input()?)?),
            Self::DecoderClassifier(m) => {
                Logits::PerSequence(m.scores(&DecoderInput::unpadded(&[ids.to_vec()])?)?)
            }
            Self::TokenClassifier(EncoderModel::Bert(m)) => {
                Logits::PerToken(m.token_logits(&encoder_input()?)?)
            }
            Self::TokenClassifier(m) | Self::Encoder(m) => {
                return Err(ModelError::Input(format!(
                    "this {} encoder has no {} head: it gives hidden states [batch, seq, \
                     hidden], not logits",
                    m.model_type(),
                    if matches!(self, Self::Encoder(_)) {
                        "task"
                    } else {
                        "token-classification"
                    }
                )));
            }
            Self::Seq2SeqLm(m) => {
                let dec = match decoder_ids {
                    Some([]) => return Err(ModelError::Input("no decoder ids".into())),
                    Some(d) => d.to_vec(),
                    None => vec![m.decoder_start_token_id()],
                };
                Logits::PerToken(m.forward(&encoder_input()?, &[dec])?)
            }
        })
    }

    fn inner(&self) -> &dyn HasLinears {
        match self {
            Self::CausalLm(m) => m,
            Self::DecoderClassifier(m) => m.as_ref(),
            Self::MaskedLm(m)
            | Self::SequenceClassifier(m)
            | Self::TokenClassifier(m)
            | Self::Encoder(m) => m,
            Self::Seq2SeqLm(m) => m,
        }
    }

    fn inner_mut(&mut self) -> &mut dyn HasLinears {
        match self {
            Self::CausalLm(m) => m,
            Self::DecoderClassifier(m) => m.as_mut(),
            Self::MaskedLm(m)
            | Self::SequenceClassifier(m)
            | Self::TokenClassifier(m)
            | Self::Encoder(m) => m,
            Self::Seq2SeqLm(m) => m,
        }
    }
}

crate::linear::has_linears_via!(AnyModel, inner, inner_mut);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_follow_the_class_name_suffix() {
        let cases = [
            ("LlamaForCausalLM", Some(Head::CausalLm)),
            ("GPT2LMHeadModel", Some(Head::CausalLm)),
            ("BertForMaskedLM", Some(Head::MaskedLm)),
            ("BertForPreTraining", Some(Head::MaskedLm)),
            (
                "NorbertForSequenceClassification",
                Some(Head::SequenceClassification),
            ),
            (
                "BertForTokenClassification",
                Some(Head::TokenClassification),
            ),
            ("T5ForConditionalGeneration", Some(Head::Seq2SeqLm)),
            ("NorT5ForConditionalGeneration", Some(Head::Seq2SeqLm)),
            ("BertModel", Some(Head::Base)),
            ("LtgBertModel", Some(Head::Base)),
            ("BertForQuestionAnswering", None),
            ("GPT2DoubleHeadsModel", None),
            ("NorbertForPreTraining", None),
        ];
        for (name, want) in cases {
            assert_eq!(Head::from_architecture(name), want, "{name}");
        }
    }

    fn dir_with(config: serde_json::Value) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("config.json"), config.to_string()).unwrap();
        d
    }

    #[test]
    fn kinds_from_config_json() {
        use serde_json::json;
        let k = |c| ModelKind::from_dir(dir_with(c).path());
        let got = k(json!({"model_type": "bert", "architectures": ["BertForTokenClassification"]}))
            .unwrap();
        assert_eq!(
            (got.family, got.head),
            (Family::Bert, Head::TokenClassification)
        );
        // No architectures: the family's LM head, as the Auto class for the task would build.
        let got = k(json!({"model_type": "norbert"})).unwrap();
        assert_eq!((got.family, got.head), (Family::LtgBert, Head::MaskedLm));
        assert_eq!(got.class_name(), "LtgBertForMaskedLM");
        let got = k(json!({"model_type": "mistral"})).unwrap();
        assert_eq!((got.family, got.head), (Family::Mistral, Head::CausalLm));
        // No model_type: the remote-code class names.
        let got = k(json!({"architectures": ["NorT5ForConditionalGeneration"]})).unwrap();
        assert_eq!((got.family, got.head), (Family::NorT5, Head::Seq2SeqLm));
        // Unknown class: named, with what the family supports.
        let err = k(json!({"model_type": "bert", "architectures": ["BertForQuestionAnswering"]}))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("BertForQuestionAnswering") && err.contains("*ForTokenClassification"),
            "{err}"
        );
        // A head the family lacks.
        let err =
            k(json!({"model_type": "norbert", "architectures": ["NorbertForTokenClassification"]}))
                .unwrap_err();
        assert!(
            matches!(err, ModelError::UnsupportedArchitecture { .. }),
            "{err}"
        );
        let err = k(json!({"model_type": "llama", "architectures": ["LlamaForQuestionAnswering"]}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("*ForCausalLM"), "{err}");
        // Decoders have a sequence-classification (reward) head.
        let got =
            k(json!({"model_type": "gpt2", "architectures": ["GPT2ForSequenceClassification"]}))
                .unwrap();
        assert_eq!(
            (got.family, got.head),
            (Family::Gpt2, Head::SequenceClassification)
        );
        // Unknown model_type: every supported one listed.
        let err = k(json!({"model_type": "roberta"})).unwrap_err().to_string();
        assert!(err.contains("roberta") && err.contains("nort5"), "{err}");
    }
}
