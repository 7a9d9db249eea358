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

    /// Opens the weights (single or sharded safetensors).
    pub fn checkpoint(&self) -> Result<Checkpoint> {
        Checkpoint::open(&self.path)
    }
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
