//! The special tokens a tokenizer declares, as chat templates see them. A module of its own so
//! that [`crate::tokenizer`] (which loads them) and [`crate::chat_template`] (which renders
//! with them) both depend on it, and not on each other.

use serde_json::Value;

/// The special tokens a tokenizer declares (strings, as templates see them).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SpecialTokens {
    /// Beginning of sequence.
    pub bos: Option<String>,
    /// End of sequence (also the end-of-turn token of many chat models).
    pub eos: Option<String>,
    /// Padding.
    pub pad: Option<String>,
    /// Unknown.
    pub unk: Option<String>,
    /// BERT's classification token.
    pub cls: Option<String>,
    /// BERT's separator.
    pub sep: Option<String>,
    /// BERT's mask token.
    pub mask: Option<String>,
    /// `additional_special_tokens`.
    pub additional: Vec<String>,
}

impl SpecialTokens {
    /// `(name, value)` pairs as HF passes them to chat templates (`bos_token`, ...).
    pub fn template_vars(&self) -> Vec<(&'static str, Value)> {
        let mut v = vec![];
        for (k, t) in [
            ("bos_token", &self.bos),
            ("eos_token", &self.eos),
            ("unk_token", &self.unk),
            ("sep_token", &self.sep),
            ("pad_token", &self.pad),
            ("cls_token", &self.cls),
            ("mask_token", &self.mask),
        ] {
            if let Some(t) = t {
                v.push((k, Value::String(t.clone())));
            }
        }
        if !self.additional.is_empty() {
            v.push((
                "additional_special_tokens",
                Value::Array(self.additional.iter().cloned().map(Value::String).collect()),
            ));
        }
        v
    }
}
