//! A Hugging Face model directory: `config.json` plus safetensors weights.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::fs::read_json;

/// File name of a model's configuration.
pub const CONFIG_FILE: &str = "config.json";

/// A model directory as `save_pretrained` writes it (or as downloaded from the HF hub).
#[derive(Debug, Clone)]
pub struct ModelDir {
    path: PathBuf,
    config: serde_json::Value,
}

impl ModelDir {
    /// Opens a directory and reads its `config.json`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if !path.is_dir() {
            return Err(Error::MissingFile {
                dir: path,
                what: "model directory".into(),
                looked_for: "a directory".into(),
            });
        }
        let config_path = path.join(CONFIG_FILE);
        if !config_path.is_file() {
            return Err(Error::MissingFile {
                dir: path,
                what: "model configuration".into(),
                looked_for: CONFIG_FILE.into(),
            });
        }
        let config = read_json(&config_path)?;
        Ok(Self { path, config })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `config.json` as parsed JSON.
    pub fn config_json(&self) -> &serde_json::Value {
        &self.config
    }

    /// `config.json` deserialised into a typed config; errors name the file.
    ///
    /// A value of the wrong type or range (a negative head count, a string for a size) names
    /// the top-level field(s) holding it, as serde alone does not.
    pub fn config<T: DeserializeOwned>(&self) -> Result<T> {
        T::deserialize(&self.config).map_err(|e| {
            let message = e.to_string();
            Error::Json {
                path: self.path.join(CONFIG_FILE),
                message: match blame_fields(&self.config, &message) {
                    Some(fields) => format!("{fields}: {message}"),
                    None => message,
                },
            }
        })
    }

    /// `model_type` from `config.json`, when present.
    pub fn model_type(&self) -> Option<&str> {
        self.config.get("model_type").and_then(|v| v.as_str())
    }

    /// Opens the weights (single or sharded safetensors). A checkpoint with more layers than
    /// `config.json` declares (`num_hidden_layers`, `n_layer`, `num_layers`;
    /// `num_decoder_layers` for `decoder.` tensors) is an error listing a few of the tensors
    /// that would be left unused.
    pub fn checkpoint(&self) -> Result<Checkpoint> {
        let ckpt = Checkpoint::open(&self.path)?;
        self.check_layers(&ckpt)?;
        Ok(ckpt)
    }

    /// The layer count `config.json` declares for a tensor named `key`.
    fn declared_layers(&self, key: &str) -> Option<(&'static str, u64)> {
        let get = |k: &'static str| self.config.get(k).and_then(|v| v.as_u64()).map(|v| (k, v));
        if (key.starts_with("decoder.") || key.contains(".decoder."))
            && let Some(n) = get("num_decoder_layers")
        {
            return Some(n);
        }
        get("num_hidden_layers")
            .or_else(|| get("n_layer"))
            .or_else(|| get("num_layers"))
    }

    fn check_layers(&self, ckpt: &Checkpoint) -> Result<()> {
        let mut beyond: Vec<&str> = Vec::new();
        let mut field = "";
        let mut declared = 0;
        for key in ckpt.keys() {
            let Some(index) = layer_index(key) else {
                continue;
            };
            // A count of 0 is the config's own error (its `validate()` names it).
            if let Some((f, n)) = self.declared_layers(key)
                && n > 0
                && index >= n
            {
                beyond.push(key);
                (field, declared) = (f, n);
            }
        }
        if beyond.is_empty() {
            return Ok(());
        }
        let count = beyond.len();
        beyond.sort_unstable();
        beyond.truncate(3);
        Err(Error::invalid(format!(
            "{}: `{field}` is {declared} but the checkpoint holds {count} tensor(s) of further \
             layers (e.g. {}) that would be left unused: the config does not belong to these \
             weights",
            self.path.join(CONFIG_FILE).display(),
            beyond
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }
}

/// The layer index in a tensor name such as `model.layers.3.mlp.up_proj.weight` (`layers`,
/// `layer`, `h` or `block` followed by a number).
fn layer_index(key: &str) -> Option<u64> {
    let parts: Vec<&str> = key.split('.').collect();
    parts.windows(2).find_map(|w| {
        matches!(w[0], "layers" | "layer" | "h" | "block")
            .then(|| w[1].parse().ok())
            .flatten()
    })
}

/// For serde's "invalid type: integer `-1`, expected usize" / "invalid value: ..." messages,
/// the top-level keys whose value is the one quoted (e.g. "field `num_attention_heads` = -1").
fn blame_fields(config: &serde_json::Value, message: &str) -> Option<String> {
    let rest = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "))?;
    let shown = match (rest.find('`'), rest.find('"')) {
        (Some(i), q) if q.is_none_or(|q| i < q) => {
            let tail = &rest[i + 1..];
            tail[..tail.find('`')?].to_string()
        }
        (_, Some(q)) => {
            // A string value, shown with its JSON quotes.
            let tail = &rest[q..];
            let end = tail[1..].find("\", expected").map(|e| e + 2)?;
            tail[..end].to_string()
        }
        _ => return None,
    };
    let obj = config.as_object()?;
    let matches: Vec<String> = obj
        .iter()
        .filter(|(_, v)| match v {
            serde_json::Value::Number(n) => {
                n.to_string() == shown
                    || n.as_f64()
                        .zip(shown.parse::<f64>().ok())
                        .is_some_and(|(a, b)| a == b)
            }
            serde_json::Value::String(_) | serde_json::Value::Bool(_) => v.to_string() == shown,
            _ => false,
        })
        .map(|(k, v)| format!("`{k}` = {v}"))
        .take(3)
        .collect();
    (!matches.is_empty()).then(|| format!("field {}", matches.join(" or ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_config_and_model_type() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            r#"{"model_type":"llama","hidden_size":64}"#,
        )
        .unwrap();
        let md = ModelDir::open(dir.path()).unwrap();
        assert_eq!(md.model_type(), Some("llama"));
        #[derive(serde::Deserialize)]
        struct C {
            hidden_size: usize,
        }
        assert_eq!(md.config::<C>().unwrap().hidden_size, 64);
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Needs {
            vocab_size: usize,
        }
        let err = md.config::<Needs>().unwrap_err().to_string();
        assert!(
            err.contains("config.json") && err.contains("vocab_size"),
            "{err}"
        );
    }

    #[test]
    fn a_negative_or_mistyped_size_names_its_field() {
        let dir = tempfile::tempdir().unwrap();
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct C {
            hidden_size: usize,
            num_attention_heads: usize,
        }
        for (body, field) in [
            (
                r#"{"hidden_size": 64, "num_attention_heads": -4}"#,
                "`num_attention_heads` = -4",
            ),
            (
                r#"{"hidden_size": "64", "num_attention_heads": 4}"#,
                "`hidden_size` = \"64\"",
            ),
            (
                r#"{"hidden_size": 64.5, "num_attention_heads": 4}"#,
                "`hidden_size` = 64.5",
            ),
        ] {
            std::fs::write(dir.path().join(CONFIG_FILE), body).unwrap();
            let md = ModelDir::open(dir.path()).unwrap();
            let err = md.config::<C>().unwrap_err().to_string();
            assert!(err.contains(field) && err.contains("config.json"), "{err}");
        }
    }

    #[test]
    fn missing_config_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = ModelDir::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("config.json"), "{err}");
    }
}
