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
    pub fn config<T: DeserializeOwned>(&self) -> Result<T> {
        T::deserialize(&self.config).map_err(|e| Error::Json {
            path: self.path.join(CONFIG_FILE),
            message: e.to_string(),
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
    fn missing_config_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = ModelDir::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("config.json"), "{err}");
    }
}
