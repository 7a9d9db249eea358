//! Precomputed reference log-probs on disk (TRL's `precompute_ref_log_probs`, kept across
//! runs as TRL users ask in trl#3985): one JSON file per dataset with the per-sequence
//! reference log-probs of every batch ([`RefLogps`]) and the key they were made for.
//!
//! The key ([`RefCacheKey`]) holds SHA-256 hashes of the reference model's files
//! (`config.json` and every `*.safetensors`), of the reference adapter's files when the
//! reference is a base with an adapter, of the tokenised batches (ids, attention and
//! completion masks, batch boundaries: this covers `max_length`, `truncation`,
//! `pad_to_multiple_of`, the chat template and `batch_size`), and the settings that change the
//! values but not the tokens (`ld_alpha`, the device and float dtype). A file whose key differs
//! is reported ([`CacheLookup::Stale`] names what differs) and rebuilt; a file that does not
//! parse, has another format, or whose values fail their SHA-256 checksum or do not fit the
//! batches is reported as [`CacheLookup::Corrupt`] and rebuilt, never used. Values are stored
//! as the bits of their `f64`s, so a reused cache gives exactly the values computed now.
//! Files are written atomically (a temporary file renamed into place).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tilpass_data::DatasetSpec;

use crate::dpo_trainer::{DpoBatch, RefLogps};
use crate::error::Result;

/// The `format` field of a cache file.
pub const CACHE_FORMAT: &str = "tilpass-ref-logps";
/// The version of the file layout.
pub const CACHE_VERSION: u32 = 1;

/// What a cache file was made for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefCacheKey {
    /// SHA-256 of the reference model's files ([`hash_model_dir`]).
    pub model: String,
    /// SHA-256 of the reference adapter's files when the reference is a base with an adapter
    /// (`None`: the base alone, e.g. a LoRA run's disabled adapters).
    pub adapter: Option<String>,
    /// SHA-256 of the tokenised batches ([`hash_batches`]).
    pub data: String,
    /// Settings that change the values but not the tokens (`ld_alpha`, `device`, `dtype`).
    pub settings: BTreeMap<String, serde_json::Value>,
}

impl RefCacheKey {
    /// The parts of the key that differ from `other` (`model weights`, `adapter`,
    /// `tokenised data`, setting names).
    pub fn differences(&self, other: &RefCacheKey) -> Vec<String> {
        let mut d = Vec::new();
        if self.model != other.model {
            d.push("model weights".to_string());
        }
        if self.adapter != other.adapter {
            d.push("adapter".to_string());
        }
        if self.data != other.data {
            d.push("tokenised data (data, max_length, truncation, batch size, ...)".to_string());
        }
        let names: std::collections::BTreeSet<&String> =
            self.settings.keys().chain(other.settings.keys()).collect();
        for n in names {
            if self.settings.get(n) != other.settings.get(n) {
                d.push(n.clone());
            }
        }
        d
    }
}

/// One batch's values as stored: the bits of each `f64`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredBatch {
    chosen: Vec<u64>,
    rejected: Vec<u64>,
}

/// The file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheFile {
    format: String,
    version: u32,
    key: RefCacheKey,
    ld_alpha: Option<f64>,
    /// SHA-256 of the stored bits ([`checksum`]).
    checksum: String,
    batches: Vec<StoredBatch>,
}

/// What [`load`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum CacheLookup {
    /// A file made for this key: the values of every batch.
    Hit(Vec<RefLogps>),
    /// No file.
    Missing,
    /// A file made for another key; what differs.
    Stale(Vec<String>),
    /// A file that cannot be used (unreadable, another format, a failed checksum, values that
    /// do not fit the batches); why.
    Corrupt(String),
}

fn hex(d: impl AsRef<[u8]>) -> String {
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 over the files of a model or adapter directory that hold its weights and shape:
/// `config.json` / `adapter_config.json` and every `*.safetensors` / `*.bin`, by name, each
/// with its name and length.
pub fn hash_model_dir(dir: &Path) -> Result<String> {
    let io = |p: &Path, e: std::io::Error| -> crate::error::PreferenceError {
        tilpass_train::TrainError::from(tilpass_core::Error::io(p, e)).into()
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            p.is_file()
                && (name == "config.json"
                    || name == "adapter_config.json"
                    || name.ends_with(".safetensors")
                    || name.ends_with(".bin"))
        })
        .collect();
    files.sort();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for p in files {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
        h.update(name.unwrap_or_default().as_bytes());
        h.update([0]);
        let mut f = std::fs::File::open(&p).map_err(|e| io(&p, e))?;
        let mut len = 0u64;
        loop {
            let n = f.read(&mut buf).map_err(|e| io(&p, e))?;
            if n == 0 {
                break;
            }
            len += n as u64;
            h.update(&buf[..n]);
        }
        h.update(len.to_le_bytes());
    }
    Ok(hex(h.finalize()))
}

/// SHA-256 over the tokenised batches: per batch its shape, ids, attention mask and
/// completion mask.
pub fn hash_batches(batches: &[DpoBatch]) -> String {
    let mut h = Sha256::new();
    h.update((batches.len() as u64).to_le_bytes());
    for b in batches {
        h.update((b.input.batch as u64).to_le_bytes());
        h.update((b.input.seq as u64).to_le_bytes());
        for t in &b.input.input_ids {
            h.update(t.to_le_bytes());
        }
        h.update(&b.input.attention_mask);
        h.update(&b.completion_mask);
    }
    hex(h.finalize())
}

fn checksum(batches: &[StoredBatch]) -> String {
    let mut h = Sha256::new();
    h.update((batches.len() as u64).to_le_bytes());
    for b in batches {
        for side in [&b.chosen, &b.rejected] {
            h.update((side.len() as u64).to_le_bytes());
            for v in side {
                h.update(v.to_le_bytes());
            }
        }
    }
    hex(h.finalize())
}

/// Where the cache of `spec` goes: in `cache_dir` when given; else next to a data file
/// (`<file>.ref-logps.json`); else (built-in data) in the user's cache directory
/// (`$XDG_CACHE_HOME/tilpass/ref-logps/` or `~/.cache/tilpass/ref-logps/`), or in `out` when
/// neither variable is set.
pub fn cache_path(spec: &DatasetSpec, cache_dir: Option<&Path>, out: &Path) -> PathBuf {
    let stem = match spec {
        DatasetSpec::File(p) => p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "data".into()),
        DatasetSpec::Builtin { name, split } => {
            format!("builtin-{name}-{}", split.as_deref().unwrap_or("train"))
        }
    };
    let file = format!("{stem}.ref-logps.json");
    if let Some(d) = cache_dir {
        return d.join(file);
    }
    if let DatasetSpec::File(p) = spec {
        return p.with_file_name(file);
    }
    let user = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        });
    match user {
        Some(u) => u.join("tilpass").join("ref-logps").join(file),
        None => out.join(file),
    }
}

/// Reads the cache at `path` for `key` and `batches` (the batches it must fit).
pub fn load(path: &Path, key: &RefCacheKey, batches: &[DpoBatch]) -> CacheLookup {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return CacheLookup::Missing,
        Err(e) => return CacheLookup::Corrupt(format!("unreadable: {e}")),
    };
    let file: CacheFile = match serde_json::from_str(&text) {
        Ok(f) => f,
        Err(e) => return CacheLookup::Corrupt(format!("not a cache file: {e}")),
    };
    if file.format != CACHE_FORMAT || file.version != CACHE_VERSION {
        return CacheLookup::Corrupt(format!(
            "format {} version {}, expected {CACHE_FORMAT} version {CACHE_VERSION}",
            file.format, file.version
        ));
    }
    let differs = key.differences(&file.key);
    if !differs.is_empty() {
        return CacheLookup::Stale(differs);
    }
    if checksum(&file.batches) != file.checksum {
        return CacheLookup::Corrupt("the values do not match their checksum".into());
    }
    if file.batches.len() != batches.len() {
        return CacheLookup::Corrupt(format!(
            "{} batches, the data has {}",
            file.batches.len(),
            batches.len()
        ));
    }
    let mut out = Vec::with_capacity(batches.len());
    for (i, (s, b)) in file.batches.iter().zip(batches).enumerate() {
        let r = RefLogps {
            chosen: s.chosen.iter().map(|v| f64::from_bits(*v)).collect(),
            rejected: s.rejected.iter().map(|v| f64::from_bits(*v)).collect(),
            ld_alpha: file.ld_alpha,
        };
        let fits = r.chosen.len() == b.pairs
            && r.rejected.len() == b.pairs
            && r.chosen.iter().chain(&r.rejected).all(|v| v.is_finite());
        if !fits {
            return CacheLookup::Corrupt(format!(
                "batch {i}: expected {} finite values per side",
                b.pairs
            ));
        }
        out.push(r);
    }
    CacheLookup::Hit(out)
}

/// Writes `values` for `key` to `path` atomically (creating its directory).
pub fn store(path: &Path, key: &RefCacheKey, values: &[RefLogps]) -> Result<()> {
    let batches: Vec<StoredBatch> = values
        .iter()
        .map(|r| StoredBatch {
            chosen: r.chosen.iter().map(|v| v.to_bits()).collect(),
            rejected: r.rejected.iter().map(|v| v.to_bits()).collect(),
        })
        .collect();
    let file = CacheFile {
        format: CACHE_FORMAT.into(),
        version: CACHE_VERSION,
        key: key.clone(),
        ld_alpha: values.first().and_then(|r| r.ld_alpha),
        checksum: checksum(&batches),
        batches,
    };
    let core = |e: tilpass_core::Error| -> crate::error::PreferenceError {
        tilpass_train::TrainError::from(e).into()
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| core(tilpass_core::Error::io(dir, e)))?;
    }
    let text = serde_json::to_string(&file).map_err(|e| {
        crate::error::PreferenceError::from(tilpass_train::TrainError::Config(e.to_string()))
    })?;
    tilpass_core::write_atomic(path, text).map_err(core)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(pairs: usize) -> DpoBatch {
        let rows = 2 * pairs;
        DpoBatch::new(
            (0..rows * 3).map(|i| i as u32 % 7 + 1).collect(),
            vec![1; rows * 3],
            (0..rows * 3).map(|i| u8::from(i % 3 != 0)).collect(),
            rows,
            3,
        )
        .unwrap()
    }

    fn key(data: &[DpoBatch]) -> RefCacheKey {
        RefCacheKey {
            model: "m".into(),
            adapter: None,
            data: hash_batches(data),
            settings: [("ld_alpha".to_string(), serde_json::Value::Null)].into(),
        }
    }

    #[test]
    fn round_trip_stale_and_corrupt_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/x.ref-logps.json");
        let data = vec![batch(2), batch(1)];
        let k = key(&data);
        assert_eq!(load(&path, &k, &data), CacheLookup::Missing);
        let values = vec![
            RefLogps {
                chosen: vec![-1.25, 0.1 + 0.2],
                rejected: vec![-3.0, f64::from(-7.3f32)],
                ld_alpha: None,
            },
            RefLogps {
                chosen: vec![-2.0],
                rejected: vec![-1e-300],
                ld_alpha: None,
            },
        ];
        store(&path, &k, &values).unwrap();
        // Bit-exact values back.
        assert_eq!(load(&path, &k, &data), CacheLookup::Hit(values.clone()));
        // Another model, other data: stale, naming what differs.
        let mut other = k.clone();
        other.model = "n".into();
        other
            .settings
            .insert("ld_alpha".into(), serde_json::json!(0.5));
        match load(&path, &other, &data) {
            CacheLookup::Stale(d) => {
                assert_eq!(d, vec!["model weights".to_string(), "ld_alpha".into()])
            }
            x => panic!("{x:?}"),
        }
        let fewer = vec![batch(2)];
        match load(&path, &key(&fewer), &fewer) {
            CacheLookup::Stale(d) => assert!(d[0].starts_with("tokenised data"), "{d:?}"),
            x => panic!("{x:?}"),
        }
        // A changed value fails the checksum; a cut file does not parse.
        let text = std::fs::read_to_string(&path).unwrap();
        let bits = (-1.25f64).to_bits().to_string();
        let flipped = (-1.5f64).to_bits().to_string();
        std::fs::write(&path, text.replacen(&bits, &flipped, 1)).unwrap();
        assert!(
            matches!(load(&path, &k, &data), CacheLookup::Corrupt(m) if m.contains("checksum"))
        );
        std::fs::write(&path, &text[..text.len() / 2]).unwrap();
        assert!(matches!(load(&path, &k, &data), CacheLookup::Corrupt(_)));
        std::fs::write(&path, "").unwrap();
        assert!(matches!(load(&path, &k, &data), CacheLookup::Corrupt(_)));
    }

    #[test]
    fn cache_locations() {
        let out = Path::new("run");
        let file = DatasetSpec::File("data/pairs.jsonl".into());
        assert_eq!(
            cache_path(&file, None, out),
            Path::new("data/pairs.jsonl.ref-logps.json")
        );
        assert_eq!(
            cache_path(&file, Some(Path::new("c")), out),
            Path::new("c/pairs.jsonl.ref-logps.json")
        );
        let builtin = DatasetSpec::norsk_pref(Some("eval"));
        assert!(
            cache_path(&builtin, None, out).ends_with("builtin-norsk-pref-eval.ref-logps.json")
        );
    }

    #[test]
    fn model_hash_follows_the_weights() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        std::fs::write(dir.path().join("model.safetensors"), [1u8, 2, 3]).unwrap();
        std::fs::write(dir.path().join("README.md"), "x").unwrap();
        let a = hash_model_dir(dir.path()).unwrap();
        std::fs::write(dir.path().join("README.md"), "y").unwrap();
        assert_eq!(a, hash_model_dir(dir.path()).unwrap());
        std::fs::write(dir.path().join("model.safetensors"), [1u8, 2, 4]).unwrap();
        assert_ne!(a, hash_model_dir(dir.path()).unwrap());
    }
}
