//! Reading and writing Hugging Face checkpoints: single or sharded `safetensors` files.
//!
//! [`Checkpoint`] opens `model.safetensors`, a sharded `model.safetensors.index.json`, or any
//! `.safetensors` file, memory-maps the shards and reads tensors on demand, cast to `f32`
//! (from `bf16`, `f16`, `f32` or `f64`). Keys can be renamed with a [`KeyRemap`]. Every error
//! names the file and the tensor.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use memmap2::Mmap;
use safetensors::tensor::{Dtype, Metadata, SafeTensors};

use crate::error::{Error, Result};
use crate::fs::write_atomic_with;

/// File name of a single-file checkpoint.
pub const SAFETENSORS_FILE: &str = "model.safetensors";
/// File name of the index of a sharded checkpoint.
pub const SAFETENSORS_INDEX_FILE: &str = "model.safetensors.index.json";

/// A tensor copied to the host as `f32`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values in row-major order.
    pub data: Vec<f32>,
}

impl HostTensor {
    /// Builds a host tensor, checking that `data` has as many values as `shape` asks for.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self> {
        let numel: usize = shape.iter().product();
        if numel != data.len() {
            return Err(Error::InvalidConfig {
                context: "HostTensor::new".into(),
                message: format!("shape {shape:?} needs {numel} values, got {}", data.len()),
            });
        }
        Ok(Self { shape, data })
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.data.len()
    }

    /// The transpose of a rank-2 tensor, as a new contiguous tensor (`[r, c]` -> `[c, r]`).
    ///
    /// Fails for other ranks.
    pub fn transposed(&self) -> Result<Self> {
        let [r, c] = self.shape[..] else {
            return Err(Error::InvalidConfig {
                context: "HostTensor::transposed".into(),
                message: format!("expected a rank-2 tensor, shape is {:?}", self.shape),
            });
        };
        let mut data = vec![0f32; r * c];
        for i in 0..r {
            for j in 0..c {
                data[j * r + i] = self.data[i * c + j];
            }
        }
        Ok(Self {
            shape: vec![c, r],
            data,
        })
    }

    /// Copies this tensor to `device` as a rank-`D` burn tensor.
    ///
    /// Fails when the rank is not `D`.
    pub fn to_tensor<const D: usize>(&self, device: &Device) -> Result<Tensor<D>> {
        if self.shape.len() != D {
            return Err(Error::InvalidConfig {
                context: "HostTensor::to_tensor".into(),
                message: format!("expected a rank-{D} tensor, shape is {:?}", self.shape),
            });
        }
        let data = TensorData::new(self.data.clone(), self.shape.clone());
        Ok(Tensor::from_data(data, device))
    }

    /// Copies a burn tensor to the host (converting its values to `f32`).
    pub fn from_tensor<const D: usize>(tensor: &Tensor<D>) -> Self {
        let shape = tensor.dims().to_vec();
        let data = tensor
            .to_data()
            .try_into_vec_as::<f32>()
            .expect("float tensor data converts to f32");
        Self { shape, data }
    }
}

/// Where a tensor lives and what it looks like in its file.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// The name under which the checkpoint exposes it (after remapping).
    pub name: String,
    /// The name in the file.
    pub stored_name: String,
    /// The stored element type.
    pub dtype: Dtype,
    /// The stored shape.
    pub shape: Vec<usize>,
    /// The shard that holds it.
    pub file: PathBuf,
}

/// An ordered list of regex renaming rules, applied one after the other to every key.
///
/// ```
/// use tilpass_core::KeyRemap;
/// let remap = KeyRemap::new([(r"^model\.", ""), (r"\.weight$", ".w")]).unwrap();
/// assert_eq!(remap.apply("model.layers.0.q_proj.weight"), "layers.0.q_proj.w");
/// ```
#[derive(Debug, Clone, Default)]
pub struct KeyRemap {
    rules: Vec<(regex::Regex, String)>,
}

impl KeyRemap {
    /// Builds a remapping from `(pattern, replacement)` pairs (`regex` syntax, `$1` captures).
    pub fn new<P: AsRef<str>, R: Into<String>>(
        rules: impl IntoIterator<Item = (P, R)>,
    ) -> Result<Self> {
        let rules = rules
            .into_iter()
            .map(|(p, r)| {
                let p = p.as_ref();
                regex::Regex::new(p)
                    .map(|re| (re, r.into()))
                    .map_err(|e| Error::InvalidPattern {
                        pattern: p.to_string(),
                        message: e.to_string(),
                    })
            })
            .collect::<Result<_>>()?;
        Ok(Self { rules })
    }

    /// Applies every rule in order.
    pub fn apply(&self, key: &str) -> String {
        let mut out = key.to_string();
        for (re, rep) in &self.rules {
            if let Cow::Owned(s) = re.replace_all(&out, rep.as_str()) {
                out = s;
            }
        }
        out
    }
}

struct Shard {
    path: PathBuf,
    mmap: Mmap,
    header_len: usize,
    metadata: Metadata,
}

impl Shard {
    fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only; checkpoints are not expected to change while open (the
        // same assumption HF's safetensors makes).
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let (header_len, metadata) =
            SafeTensors::read_metadata(&mmap).map_err(|e| Error::Safetensors {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        Ok(Self {
            path: path.to_path_buf(),
            mmap,
            header_len,
            metadata,
        })
    }

    fn bytes(&self, stored_name: &str) -> &[u8] {
        let info = self
            .metadata
            .info(stored_name)
            .expect("index only holds names present in the shard");
        let start = 8 + self.header_len + info.data_offsets.0;
        let end = 8 + self.header_len + info.data_offsets.1;
        &self.mmap[start..end]
    }
}

/// A safetensors checkpoint, single-file or sharded, with tensors read on demand.
pub struct Checkpoint {
    location: PathBuf,
    shards: Vec<Shard>,
    /// exposed name -> (shard index, stored name)
    index: BTreeMap<String, (usize, String)>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("location", &self.location)
            .field("shards", &self.shards.len())
            .field("tensors", &self.index.len())
            .finish()
    }
}

#[derive(serde::Deserialize)]
struct ShardIndex {
    weight_map: BTreeMap<String, String>,
}

impl Checkpoint {
    /// Opens a checkpoint from a model directory (`model.safetensors` or
    /// `model.safetensors.index.json`), an index file, or a single `.safetensors` file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if path.is_dir() {
            let index = path.join(SAFETENSORS_INDEX_FILE);
            let single = path.join(SAFETENSORS_FILE);
            if single.is_file() {
                return Self::open_files(path, &[single]);
            }
            if index.is_file() {
                return Self::open_index(&index);
            }
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| Error::io(path, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
                .collect();
            found.sort();
            if found.len() == 1 {
                return Self::open_files(path, &found);
            }
            let has_bin = path.join("pytorch_model.bin").exists();
            return Err(Error::MissingFile {
                dir: path.to_path_buf(),
                what: "safetensors weights".into(),
                looked_for: format!(
                    "{SAFETENSORS_FILE}, {SAFETENSORS_INDEX_FILE}{}",
                    if has_bin {
                        "; found pytorch_model.bin, which tilpass does not read: convert it to safetensors"
                    } else {
                        ""
                    }
                ),
            });
        }
        if path.extension().is_some_and(|x| x == "json") {
            return Self::open_index(path);
        }
        Self::open_files(path, &[path.to_path_buf()])
    }

    fn open_index(index_path: &Path) -> Result<Self> {
        let index: ShardIndex = crate::fs::read_json(index_path)?;
        let dir = match index_path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let mut files: Vec<&String> = index.weight_map.values().collect();
        files.sort();
        files.dedup();
        for f in &files {
            check_shard_name(index_path, dir, f)?;
        }
        let paths: Vec<PathBuf> = files.iter().map(|f| dir.join(f)).collect();
        for p in &paths {
            if !p.is_file() {
                return Err(Error::MissingFile {
                    dir: dir.to_path_buf(),
                    what: "a shard listed in the index".into(),
                    looked_for: p.file_name().unwrap_or_default().to_string_lossy().into(),
                });
            }
        }
        let ckpt = Self::open_files(dir, &paths)?;
        // Every tensor the index promises must be in the shard it names.
        for (name, file) in &index.weight_map {
            match ckpt.index.get(name) {
                Some((shard, _)) if ckpt.shards[*shard].path == dir.join(file) => {}
                _ => {
                    return Err(Error::MissingTensor {
                        name: name.clone(),
                        location: dir.join(file),
                        hint: format!(" (listed in {})", index_path.display()),
                    });
                }
            }
        }
        Ok(ckpt)
    }

    /// Opens the given shard files as one checkpoint. A tensor name must occur only once.
    pub fn open_files(location: impl AsRef<Path>, files: &[PathBuf]) -> Result<Self> {
        let mut shards = Vec::with_capacity(files.len());
        let mut index = BTreeMap::new();
        for (i, f) in files.iter().enumerate() {
            let shard = Shard::open(f)?;
            for name in shard.metadata.offset_keys() {
                if let Some((other, _)) = index.insert(name.clone(), (i, name.clone())) {
                    return Err(Error::Safetensors {
                        path: f.clone(),
                        message: format!(
                            "tensor `{name}` is also in {}",
                            shards
                                .get(other)
                                .map(|s: &Shard| s.path.display().to_string())
                                .unwrap_or_default()
                        ),
                    });
                }
            }
            shards.push(shard);
        }
        Ok(Self {
            location: location.as_ref().to_path_buf(),
            shards,
            index,
        })
    }

    /// The directory or file this checkpoint was opened from.
    pub fn location(&self) -> &Path {
        &self.location
    }

    /// The shard files, in order.
    pub fn files(&self) -> Vec<&Path> {
        self.shards.iter().map(|s| s.path.as_path()).collect()
    }

    /// All tensor names (after remapping), sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when the checkpoint holds no tensor.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// True when a tensor of that name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// The `__metadata__` of every shard, merged.
    pub fn metadata(&self) -> HashMap<String, String> {
        let mut out = HashMap::new();
        for s in &self.shards {
            if let Some(m) = s.metadata.metadata() {
                out.extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        out
    }

    /// Renames every key with `remap`. Fails if two keys end up with the same name.
    pub fn remap(mut self, remap: &KeyRemap) -> Result<Self> {
        let mut index = BTreeMap::new();
        for (name, entry) in std::mem::take(&mut self.index) {
            let target = remap.apply(&name);
            if let Some(prev) = index.insert(target.clone(), entry.clone()) {
                return Err(Error::RemapCollision {
                    first: prev.1,
                    second: entry.1,
                    target,
                });
            }
        }
        self.index = index;
        Ok(self)
    }

    fn missing(&self, name: &str) -> Error {
        // Suggest keys sharing the last two path components, a common symptom of prefix trouble.
        let tail: Vec<&str> = name.rsplit('.').take(2).collect();
        let mut close: Vec<&str> = self
            .keys()
            .filter(|k| {
                let kt: Vec<&str> = k.rsplit('.').take(2).collect();
                kt == tail
            })
            .take(3)
            .collect();
        if close.is_empty() {
            close = self.keys().take(3).collect();
        }
        let hint = if close.is_empty() {
            " (the checkpoint is empty)".to_string()
        } else {
            format!(" (it has e.g. {})", close.join(", "))
        };
        Error::MissingTensor {
            name: name.to_string(),
            location: self.location.clone(),
            hint,
        }
    }

    /// Dtype, shape and file of one tensor.
    pub fn info(&self, name: &str) -> Result<TensorInfo> {
        let (shard, stored) = self.index.get(name).ok_or_else(|| self.missing(name))?;
        let s = &self.shards[*shard];
        let info = s.metadata.info(stored).expect("indexed");
        Ok(TensorInfo {
            name: name.to_string(),
            stored_name: stored.clone(),
            dtype: info.dtype,
            shape: info.shape.clone(),
            file: s.path.clone(),
        })
    }

    /// Reads a floating-point tensor as `f32` (from bf16, f16, f32 or f64).
    pub fn read_f32(&self, name: &str) -> Result<HostTensor> {
        let info = self.info(name)?;
        // A sparse file can claim a tensor far larger than the memory it would take as f32.
        let numel =
            crate::limits::mul_all(&info.shape.iter().map(|d| *d as u128).collect::<Vec<_>>());
        crate::limits::check_memory(
            format!(
                "tensor `{name}` in {} (shape {:?}, as f32)",
                info.file.display(),
                info.shape
            ),
            numel.saturating_mul(4),
        )?;
        let (shard, stored) = &self.index[name];
        let bytes = self.shards[*shard].bytes(stored);
        let data = cast_to_f32(bytes, info.dtype).ok_or_else(|| Error::UnsupportedDtype {
            name: name.to_string(),
            file: info.file.clone(),
            dtype: format!("{:?}", info.dtype),
            expected: "F32, F16, BF16 or F64".into(),
        })?;
        Ok(HostTensor {
            shape: info.shape,
            data,
        })
    }

    /// Reads a tensor as `f32` and checks its shape.
    pub fn read_f32_shaped(&self, name: &str, expected: &[usize]) -> Result<HostTensor> {
        let info = self.info(name)?;
        if info.shape != expected {
            return Err(Error::ShapeMismatch {
                name: name.to_string(),
                file: info.file,
                expected: expected.to_vec(),
                found: info.shape,
            });
        }
        self.read_f32(name)
    }

    /// Loads a tensor of the given shape onto `device`.
    pub fn tensor<const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        device: &Device,
    ) -> Result<Tensor<D>> {
        self.read_f32_shaped(name, &shape)?.to_tensor(device)
    }
}

/// A shard named by an index must be a file inside the index's directory: no absolute path,
/// no `..`, and no symbolic link that leads out of the directory (checked on the resolved path
/// when the file exists).
fn check_shard_name(index_path: &Path, dir: &Path, name: &str) -> Result<()> {
    use std::path::Component;
    let escapes = |reason: &str| Error::PathEscapes {
        file: index_path.to_path_buf(),
        entry: name.to_string(),
        reason: reason.to_string(),
    };
    let rel = Path::new(name);
    if name.is_empty() {
        return Err(escapes("an empty file name"));
    }
    for c in rel.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => return Err(escapes("it contains `..`")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(escapes("it is an absolute path"));
            }
        }
    }
    let full = dir.join(rel);
    if let (Ok(real_dir), Ok(real)) = (dir.canonicalize(), full.canonicalize())
        && !real.starts_with(&real_dir)
        && !in_hub_cache_blobs(&real_dir, &real)
    {
        return Err(escapes(&format!(
            "it resolves (through a symbolic link) to {}",
            real.display()
        )));
    }
    Ok(())
}

/// True for the Hugging Face hub cache layout, where `REPO/snapshots/REV/FILE` is a link to
/// `REPO/blobs/HASH`: such a link leaves the snapshot directory but stays in its repository.
fn in_hub_cache_blobs(real_dir: &Path, real: &Path) -> bool {
    let Some(snapshots) = real_dir.parent() else {
        return false;
    };
    if snapshots.file_name().is_none_or(|n| n != "snapshots") {
        return false;
    }
    match snapshots.parent() {
        Some(repo) => real.parent() == Some(repo.join("blobs").as_path()),
        None => false,
    }
}

/// Converts little-endian bytes of a float dtype to `f32`; `None` for other dtypes.
pub fn cast_to_f32(bytes: &[u8], dtype: Dtype) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
            .collect(),
        _ => return None,
    })
}

/// Element type to store when writing safetensors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SaveDtype {
    /// 32-bit float (lossless).
    #[default]
    F32,
    /// bfloat16 (round to nearest even).
    Bf16,
    /// IEEE half precision.
    F16,
}

struct Encoded {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl safetensors::View for &Encoded {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

fn encode(t: &HostTensor, dtype: SaveDtype) -> Encoded {
    let (dt, bytes) = match dtype {
        SaveDtype::F32 => (
            Dtype::F32,
            t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
        SaveDtype::Bf16 => (
            Dtype::BF16,
            t.data
                .iter()
                .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
                .collect(),
        ),
        SaveDtype::F16 => (
            Dtype::F16,
            t.data
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect(),
        ),
    };
    Encoded {
        dtype: dt,
        shape: t.shape.clone(),
        bytes,
    }
}

/// Writes tensors to one safetensors file, atomically (temporary file, then rename).
///
/// `metadata` goes into `__metadata__`; HF expects `{"format": "pt"}`, which is added when absent.
pub fn save_safetensors<'a>(
    path: impl AsRef<Path>,
    tensors: impl IntoIterator<Item = (&'a str, &'a HostTensor)>,
    dtype: SaveDtype,
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let path = path.as_ref();
    let encoded: Vec<(String, Encoded)> = tensors
        .into_iter()
        .map(|(n, t)| (n.to_string(), encode(t, dtype)))
        .collect();
    let mut meta = metadata.unwrap_or_default();
    meta.entry("format".into()).or_insert_with(|| "pt".into());
    let mut bytes =
        safetensors::serialize(encoded.iter().map(|(n, e)| (n.as_str(), e)), Some(meta)).map_err(
            |e| Error::Safetensors {
                path: path.to_path_buf(),
                message: e.to_string(),
            },
        )?;
    sort_metadata_keys(&mut bytes);
    write_atomic_with(path, |f| std::io::Write::write_all(f, &bytes))
}

/// safetensors writes `__metadata__` in `HashMap` order, which changes from run to run when
/// there are several entries: rewrite the header with the metadata keys sorted (the same
/// length, so offsets and padding stay), so that equal tensors and metadata give equal bytes.
fn sort_metadata_keys(bytes: &mut [u8]) {
    let Some(n) = bytes
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(|b| u64::from_le_bytes(b) as usize)
    else {
        return;
    };
    let Some(header) = bytes.get(8..8 + n) else {
        return;
    };
    let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(header) else {
        return;
    };
    match v.get_mut("__metadata__").and_then(|m| m.as_object_mut()) {
        Some(meta) if meta.len() > 1 => meta.sort_keys(),
        _ => return,
    }
    if let Ok(text) = serde_json::to_vec(&v)
        && text.len() <= n
    {
        bytes[8..8 + text.len()].copy_from_slice(&text);
        bytes[8 + text.len()..8 + n].fill(b' ');
    }
}

/// Writes tensors as a sharded checkpoint in `dir`: `model-0000i-of-0000N.safetensors` files of
/// at most `max_shard_bytes` each (a larger single tensor gets a shard of its own) plus
/// `model.safetensors.index.json`, as `transformers`' `save_pretrained` does.
pub fn save_sharded<'a>(
    dir: impl AsRef<Path>,
    tensors: impl IntoIterator<Item = (&'a str, &'a HostTensor)>,
    dtype: SaveDtype,
    max_shard_bytes: usize,
) -> Result<Vec<PathBuf>> {
    let dir = dir.as_ref();
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let bytes_per = match dtype {
        SaveDtype::F32 => 4,
        _ => 2,
    };
    let mut groups: Vec<Vec<(&str, &HostTensor)>> = vec![vec![]];
    let mut current = 0usize;
    let mut total = 0usize;
    for (name, t) in tensors {
        let size = t.numel() * bytes_per;
        total += size;
        if current > 0 && current + size > max_shard_bytes {
            groups.push(vec![]);
            current = 0;
        }
        current += size;
        groups.last_mut().expect("non-empty").push((name, t));
    }
    let n = groups.len();
    let mut weight_map = BTreeMap::new();
    let mut files = vec![];
    for (i, group) in groups.iter().enumerate() {
        let file = format!("model-{:05}-of-{:05}.safetensors", i + 1, n);
        for (name, _) in group {
            weight_map.insert(name.to_string(), file.clone());
        }
        let path = dir.join(&file);
        save_safetensors(&path, group.iter().copied(), dtype, None)?;
        files.push(path);
    }
    let index = serde_json::json!({
        "metadata": {"total_size": total},
        "weight_map": weight_map,
    });
    let index_path = dir.join(SAFETENSORS_INDEX_FILE);
    let text = serde_json::to_string_pretty(&index).expect("JSON value");
    write_atomic_with(&index_path, |f| {
        std::io::Write::write_all(f, text.as_bytes())
    })?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_written_in_key_order_so_equal_inputs_give_equal_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let x = t(&[2, 3], 0.5);
        let mut files = Vec::new();
        for i in 0..8 {
            // A fresh HashMap each time: its iteration order changes between instances.
            let meta: HashMap<String, String> = ["step", "zeta", "alpha", "format", "mid"]
                .iter()
                .map(|k| (k.to_string(), format!("{k}-value")))
                .collect();
            let p = dir.path().join(format!("{i}.safetensors"));
            save_safetensors(&p, [("x", &x)], SaveDtype::F32, Some(meta)).unwrap();
            files.push(std::fs::read(&p).unwrap());
        }
        assert!(files.iter().all(|f| f == &files[0]), "byte-identical");
        let n = u64::from_le_bytes(files[0][..8].try_into().unwrap()) as usize;
        let header = std::str::from_utf8(&files[0][8..8 + n]).unwrap();
        let at = |k: &str| header.find(&format!("\"{k}\"")).unwrap();
        assert!(
            at("alpha") < at("format") && at("format") < at("mid"),
            "{header}"
        );
        assert!(
            at("mid") < at("step") && at("step") < at("zeta"),
            "{header}"
        );
        let back = Checkpoint::open(dir.path().join("0.safetensors")).unwrap();
        assert_eq!(back.read_f32("x").unwrap().data, x.data);
        assert_eq!(back.metadata()["step"], "step-value");
    }

    fn t(shape: &[usize], start: f32) -> HostTensor {
        let n: usize = shape.iter().product();
        HostTensor::new(shape.to_vec(), (0..n).map(|i| start + i as f32).collect()).unwrap()
    }

    #[test]
    fn single_file_round_trip_and_listing() {
        let dir = tempfile::tempdir().unwrap();
        let a = t(&[2, 3], 0.0);
        let b = t(&[4], 10.0);
        save_safetensors(
            dir.path().join(SAFETENSORS_FILE),
            [("model.a.weight", &a), ("model.b", &b)],
            SaveDtype::F32,
            None,
        )
        .unwrap();
        let ckpt = Checkpoint::open(dir.path()).unwrap();
        assert_eq!(
            ckpt.keys().collect::<Vec<_>>(),
            ["model.a.weight", "model.b"]
        );
        assert_eq!(ckpt.read_f32("model.a.weight").unwrap(), a);
        assert_eq!(ckpt.read_f32_shaped("model.b", &[4]).unwrap(), b);
        assert_eq!(
            ckpt.metadata().get("format").map(String::as_str),
            Some("pt")
        );
    }

    #[test]
    fn half_precision_casts_exactly() {
        // bf16 0x3F80 = 1.0, 0xC020 = -2.5, 0x3E00 = 0.125; f16 0x3C00 = 1.0, 0xC500 = -5.0.
        let bf: Vec<u8> = [0x3F80u16, 0xC020, 0x3E00]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(
            cast_to_f32(&bf, Dtype::BF16).unwrap(),
            vec![1.0, -2.5, 0.125]
        );
        let f16: Vec<u8> = [0x3C00u16, 0xC500]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(cast_to_f32(&f16, Dtype::F16).unwrap(), vec![1.0, -5.0]);
        assert!(cast_to_f32(&[0; 8], Dtype::I64).is_none());
    }

    #[test]
    fn bf16_sharded_checkpoint_loads_through_its_index() {
        let dir = tempfile::tempdir().unwrap();
        let names = ["x.0", "x.1", "x.2"];
        let tensors: Vec<HostTensor> = (0..3).map(|i| t(&[8, 8], i as f32)).collect();
        let files = save_sharded(
            dir.path(),
            names.iter().copied().zip(tensors.iter()),
            SaveDtype::Bf16,
            150,
        )
        .unwrap();
        assert_eq!(files.len(), 3, "each 128-byte tensor gets its own shard");
        let ckpt = Checkpoint::open(dir.path()).unwrap();
        assert_eq!(ckpt.files().len(), 3);
        for (n, want) in names.iter().zip(&tensors) {
            assert_eq!(ckpt.info(n).unwrap().dtype, Dtype::BF16);
            // Small integers are exact in bf16.
            assert_eq!(&ckpt.read_f32(n).unwrap(), want);
        }
    }

    #[test]
    fn index_naming_a_missing_shard_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let a = t(&[2], 0.0);
        save_sharded(dir.path(), [("a", &a)], SaveDtype::F32, 1 << 20).unwrap();
        std::fs::remove_file(dir.path().join("model-00001-of-00001.safetensors")).unwrap();
        let err = Checkpoint::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("model-00001-of-00001.safetensors"), "{err}");
    }

    #[test]
    fn errors_name_tensor_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = t(&[2, 3], 0.0);
        let path = dir.path().join("w.safetensors");
        save_safetensors(
            &path,
            [("layers.0.attn.q_proj.weight", &a)],
            SaveDtype::F32,
            None,
        )
        .unwrap();
        let ckpt = Checkpoint::open(&path).unwrap();
        let err = ckpt
            .read_f32("model.layers.0.attn.q_proj.weight")
            .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::MissingTensor { .. }));
        assert!(
            msg.contains("model.layers.0.attn.q_proj.weight")
                && msg.contains("layers.0.attn.q_proj.weight"),
            "{msg}"
        );
        let err = ckpt
            .read_f32_shaped("layers.0.attn.q_proj.weight", &[3, 2])
            .unwrap_err();
        assert!(matches!(err, Error::ShapeMismatch { .. }));
        let msg = err.to_string();
        assert!(
            msg.contains("w.safetensors") && msg.contains("[3, 2]"),
            "{msg}"
        );
    }

    #[test]
    fn remapping_renames_and_detects_collisions() {
        let dir = tempfile::tempdir().unwrap();
        let a = t(&[1], 0.0);
        let path = dir.path().join("w.safetensors");
        save_safetensors(
            &path,
            [("bert.embeddings.word", &a), ("bert.pooler", &a)],
            SaveDtype::F32,
            None,
        )
        .unwrap();
        let remap = KeyRemap::new([(r"^bert\.", "")]).unwrap();
        let ckpt = Checkpoint::open(&path).unwrap().remap(&remap).unwrap();
        assert_eq!(
            ckpt.keys().collect::<Vec<_>>(),
            ["embeddings.word", "pooler"]
        );
        assert_eq!(ckpt.info("pooler").unwrap().stored_name, "bert.pooler");
        let clash = KeyRemap::new([(r"^bert\..*$", "same")]).unwrap();
        let err = Checkpoint::open(&path).unwrap().remap(&clash).unwrap_err();
        assert!(matches!(err, Error::RemapCollision { .. }), "{err}");
        assert!(KeyRemap::new([("(", "")]).is_err());
    }

    #[test]
    fn directory_without_weights_says_what_it_looked_for() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pytorch_model.bin"), b"x").unwrap();
        let msg = Checkpoint::open(dir.path()).unwrap_err().to_string();
        assert!(
            msg.contains("model.safetensors") && msg.contains("pytorch_model.bin"),
            "{msg}"
        );
    }

    fn write_index(dir: &Path, shard: &str) {
        let index = serde_json::json!({"metadata": {}, "weight_map": {"a": shard}});
        std::fs::write(dir.join(SAFETENSORS_INDEX_FILE), index.to_string()).unwrap();
    }

    #[test]
    fn an_index_cannot_name_files_outside_its_directory() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("model");
        std::fs::create_dir(&dir).unwrap();
        let outside = root.path().join("secret.safetensors");
        save_safetensors(&outside, [("a", &t(&[2], 0.0))], SaveDtype::F32, None).unwrap();
        for (entry, reason) in [
            ("../secret.safetensors", ".."),
            (outside.to_str().unwrap(), "absolute"),
            ("", "empty"),
        ] {
            write_index(&dir, entry);
            let err = Checkpoint::open(&dir).unwrap_err();
            assert!(matches!(err, Error::PathEscapes { .. }), "{entry}: {err:?}");
            let msg = err.to_string();
            assert!(
                msg.contains(SAFETENSORS_INDEX_FILE) && msg.contains(reason),
                "{msg}"
            );
        }
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(&outside, dir.join("link.safetensors")).unwrap();
            write_index(&dir, "link.safetensors");
            let err = Checkpoint::open(&dir).unwrap_err();
            assert!(matches!(err, Error::PathEscapes { .. }), "{err:?}");
            assert!(err.to_string().contains("symbolic link"), "{err}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn hub_cache_links_into_the_repository_blobs_still_load() {
        // REPO/snapshots/REV/model-1.safetensors -> REPO/blobs/HASH, as huggingface_hub lays out.
        let root = tempfile::tempdir().unwrap();
        let blobs = root.path().join("blobs");
        let snap = root.path().join("snapshots/abc123");
        std::fs::create_dir_all(&blobs).unwrap();
        std::fs::create_dir_all(&snap).unwrap();
        let a = t(&[2], 1.0);
        save_safetensors(blobs.join("0f1e2d"), [("a", &a)], SaveDtype::F32, None).unwrap();
        std::os::unix::fs::symlink("../../blobs/0f1e2d", snap.join("model-1.safetensors")).unwrap();
        write_index(&snap, "model-1.safetensors");
        let ckpt = Checkpoint::open(&snap).unwrap();
        assert_eq!(ckpt.read_f32("a").unwrap(), a);
    }

    #[test]
    fn hostile_headers_are_safetensors_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.safetensors");
        // A header length of 2^63 and one of 2^32: nothing is allocated for either.
        for n in [1u64 << 63, 1 << 32, u64::MAX] {
            let mut bytes = n.to_le_bytes().to_vec();
            bytes.extend_from_slice(b"{}");
            std::fs::write(&path, &bytes).unwrap();
            let err = Checkpoint::open(&path).unwrap_err();
            assert!(matches!(err, Error::Safetensors { .. }), "{n}: {err:?}");
        }
        // A tensor claiming 2^62 elements in an 8-byte data section.
        let header = br#"{"a":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,8]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        bytes.extend_from_slice(&[0; 8]);
        std::fs::write(&path, &bytes).unwrap();
        let err = Checkpoint::open(&path).unwrap_err();
        assert!(matches!(err, Error::Safetensors { .. }), "{err:?}");
    }

    #[cfg(unix)]
    #[test]
    fn a_sparse_file_claiming_a_huge_tensor_is_too_large_before_reading() {
        // 2^40 bf16 values (2 TiB as a sparse file, 4 TiB as f32).
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sparse.safetensors");
        let numel: u64 = 1 << 40;
        let header = format!(
            r#"{{"a":{{"dtype":"BF16","shape":[{numel}],"data_offsets":[0,{}]}}}}"#,
            numel * 2
        );
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        if f.set_len(bytes.len() as u64 + numel * 2).is_err() {
            eprintln!("skipped: this file system has no sparse files of 2 TiB");
            return;
        }
        let ckpt = Checkpoint::open(&path).unwrap();
        let err = ckpt.read_f32("a").unwrap_err();
        assert!(matches!(err, Error::TooLarge { .. }), "{err:?}");
        assert!(err.to_string().contains("tensor `a`"), "{err}");
    }

    #[test]
    fn truncated_file_is_a_safetensors_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.safetensors");
        std::fs::write(&path, [200u8, 0, 0, 0, 0, 0, 0, 0, b'{']).unwrap();
        let err = Checkpoint::open(&path).unwrap_err();
        assert!(matches!(err, Error::Safetensors { .. }), "{err}");
        assert!(err.to_string().contains("bad.safetensors"));
    }
}
