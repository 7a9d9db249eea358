//! Labelling JSONL of any size (`tilpass predict`, `tilpass annotate`): rows are read in
//! windows of `window` rows (a setting of both; never the whole file), sorted by token length
//! inside the window so that batches pad little, labelled, and written back in input order.
//!
//! **Resuming.** The output is written to `<out>.partial`, beside a sidecar
//! `<out>.run.json` ([`Sidecar`]) that records the settings that shape the output and a
//! fingerprint of the input. A run that finds a partial output of the same settings and input
//! continues after its last complete line (a torn last line is cut off and redone); the window
//! holding the first missing row is labelled again whole, so that its batches — and so its
//! bytes — are those of an uninterrupted run. Other settings or another input are refused,
//! naming the difference. When the input is done the sidecar records `complete`, the row
//! counts and the input's SHA-256, and the partial file is renamed to `out`; running the same
//! job again then does nothing.
//!
//! **Shards.** With `--shard i/n` the job labels the windows `w` (rows `w * window ..
//! (w + 1) * window` of the input, blank lines not counted) with `w % n == i`: each window is
//! labelled by one shard exactly as a single process would label it, so that
//! [`merge_shards`](super::merge_shards) — which takes one window from each shard in turn —
//! rebuilds the single-process output byte for byte.

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::error::{Result, TrainError};
use crate::trainer::Event;

/// The sidecar's `format`.
pub const SIDECAR_FORMAT: &str = "tilpass-stream/1";

/// Bytes at the start of the input hashed for the quick fingerprint checked before a resume.
const HEAD_BYTES: u64 = 1 << 20;

/// One part of a job split for a cluster's array job: `--shard i/n` labels the windows `w`
/// with `w % n == i`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This part, `0..count`.
    pub index: usize,
    /// Number of parts (at least 1).
    pub count: usize,
}

impl Shard {
    /// Whether window `w` belongs to this shard.
    pub fn owns(&self, window_index: usize) -> bool {
        window_index % self.count == self.index
    }
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("`{s}`: expected `i/n` with 0 <= i < n (e.g. `3/8`)");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Serialize for Shard {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Shard {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A quick fingerprint of an input file, compared before a resume: its size and the SHA-256
/// of its first MiB.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputPrint {
    /// Size in bytes.
    pub bytes: u64,
    /// SHA-256 (hex) of the first MiB.
    pub head_sha256: String,
}

impl InputPrint {
    /// The fingerprint of `path`.
    pub fn of(path: &Path) -> Result<Self> {
        let io = |e| TrainError::from(tilpass_core::Error::io(path, e));
        let f = File::open(path).map_err(io)?;
        let bytes = f.metadata().map_err(io)?.len();
        let mut h = Sha256::new();
        let mut head = Vec::new();
        f.take(HEAD_BYTES).read_to_end(&mut head).map_err(io)?;
        h.update(&head);
        Ok(Self {
            bytes,
            head_sha256: hex(&h.finalize()),
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The sidecar `<out>.run.json` of a streamed output: what made it and how far it got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sidecar {
    /// [`SIDECAR_FORMAT`].
    pub format: String,
    /// The job (`predict`, `annotate`).
    pub job: String,
    /// The settings that shape the output (the run config without `out` and the settings
    /// that only steer the process, such as `max_rows`).
    pub config: Value,
    /// The input's quick fingerprint.
    pub input: InputPrint,
    /// Whether every row of the input (of this shard) is in the output.
    pub complete: bool,
    /// When complete: rows in the output.
    pub rows: Option<usize>,
    /// When complete: rows in the input (blank lines not counted), all shards together.
    pub input_rows: Option<usize>,
    /// When complete: SHA-256 (hex) of the whole input.
    pub input_sha256: Option<String>,
}

impl Sidecar {
    /// The shard the output is of (`config.shard`), if any.
    pub fn shard(&self) -> Result<Option<Shard>> {
        match self.config.get("shard") {
            None | Some(Value::Null) => Ok(None),
            Some(v) => serde_json::from_value(v.clone())
                .map(Some)
                .map_err(|e| TrainError::Config(format!("sidecar `shard`: {e}"))),
        }
    }

    /// The window size it was made with (`config.window`).
    pub fn window(&self) -> Result<usize> {
        self.config
            .get("window")
            .and_then(Value::as_u64)
            .map(|w| w as usize)
            .filter(|w| *w >= 1)
            .ok_or_else(|| TrainError::Config("sidecar without a `window` >= 1".into()))
    }
}

/// `<out>.run.json`.
pub fn sidecar_path(out: &Path) -> PathBuf {
    with_suffix(out, ".run.json")
}

/// `<out>.partial`.
pub fn partial_path(out: &Path) -> PathBuf {
    with_suffix(out, ".partial")
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Partial outputs (and their sidecars) this process started and would drop on Ctrl-C
/// (jobs without `keep_partial`); see [`remove_partial_outputs`].
static DROP_ON_INTERRUPT: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Removes the partial outputs of the running jobs that do not keep them (for a Ctrl-C
/// handler, beside [`tilpass_core::remove_temp_files`]).
pub fn remove_partial_outputs() {
    let paths = match DROP_ON_INTERRUPT.lock() {
        Ok(mut l) => std::mem::take(&mut *l),
        Err(_) => return,
    };
    for p in paths {
        let _ = std::fs::remove_file(p);
    }
}

fn track(paths: &[PathBuf], on: bool) {
    if let Ok(mut l) = DROP_ON_INTERRUPT.lock() {
        l.retain(|p| !paths.contains(p));
        if on {
            l.extend(paths.iter().cloned());
        }
    }
}

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hash: Arc<Mutex<Sha256>>,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Ok(mut h) = self.hash.lock() {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// Texts of a window → their token ids, `[rows][tokens]`.
pub(crate) type Encode<'a> = &'a dyn Fn(&[&str]) -> Result<Vec<Vec<u32>>>;

/// A batch of token ids, `[batch][tokens]` → the fields to add to each of its rows.
pub(crate) type Label<'a> = &'a mut dyn FnMut(&[&[u32]]) -> Result<Vec<Map<String, Value>>>;

/// A streamed labelling job: where it reads and writes, and how.
pub(crate) struct Stream<'a> {
    /// The job, for the sidecar.
    pub job: &'static str,
    /// Input JSONL.
    pub data: &'a Path,
    /// Output JSONL.
    pub out: &'a Path,
    /// Field holding the text.
    pub text_field: &'a str,
    /// Rows per window (sorted by length inside it).
    pub window: usize,
    /// Rows per batch.
    pub batch_size: usize,
    /// The part of the input this process labels.
    pub shard: Option<Shard>,
    /// Stop after writing this many rows (the output stays partial and resumable).
    pub max_rows: Option<usize>,
    /// Keep the partial output on an error or Ctrl-C.
    pub keep_partial: bool,
    /// The settings recorded in the sidecar.
    pub config: Value,
}

/// What a streamed job did.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StreamOutcome {
    /// Rows labelled and written by this call.
    pub rows: usize,
    /// Rows that were in the output already when this call started.
    pub resumed_from: usize,
    /// Whether the output is complete (`out` written); false after `max_rows`.
    pub complete: bool,
    /// Seconds it took.
    pub seconds: f64,
}

impl Stream<'_> {
    /// Streams the input through `encode` (texts → token ids, a window at a time) and `label`
    /// (a batch of token ids, `[batch][tokens]` → the fields to add to each row).
    pub(crate) fn run(
        &self,
        encode: Encode<'_>,
        label: Label<'_>,
        progress: &mut dyn FnMut(Event),
    ) -> Result<StreamOutcome> {
        let start = Instant::now();
        let (part, side) = (partial_path(self.out), sidecar_path(self.out));
        for p in [&part, &side] {
            super::jsonl::distinct_output(p, self.data)?;
        }
        let input = InputPrint::of(self.data)?;
        let existing: Option<Sidecar> = if side.is_file() {
            Some(tilpass_core::read_json(&side)?)
        } else {
            None
        };
        let fresh = Sidecar {
            format: SIDECAR_FORMAT.into(),
            job: self.job.into(),
            config: self.config.clone(),
            input: input.clone(),
            complete: false,
            rows: None,
            input_rows: None,
            input_sha256: None,
        };
        let resume_from = if part.exists() {
            let Some(s) = existing.as_ref() else {
                return Err(TrainError::setting(
                    "out",
                    self.out.display(),
                    format!(
                        "an output without a stray partial file: {} has no sidecar {} (remove it)",
                        part.display(),
                        side.display()
                    ),
                ));
            };
            self.check_same(s, &side)?;
            Some(truncate_to_complete_lines(&part)?)
        } else {
            if let Some(s) = &existing
                && s.complete
                && self.out.is_file()
                && self.check_same(s, &side).is_ok()
            {
                return Ok(StreamOutcome {
                    rows: 0,
                    resumed_from: s.rows.unwrap_or(0),
                    complete: true,
                    seconds: start.elapsed().as_secs_f64(),
                });
            }
            None
        };
        let created = resume_from.is_none();
        if created {
            write_sidecar(&side, &fresh)?;
            File::create(&part).map_err(|e| tilpass_core::Error::io(&part, e))?;
        }
        let tracked = [part.clone(), side.clone()];
        track(&tracked, created && !self.keep_partial);
        let result = self.stream(
            resume_from.unwrap_or(0),
            &part,
            &side,
            fresh,
            encode,
            label,
            progress,
        );
        track(&tracked, false);
        match result {
            Ok(mut o) => {
                o.seconds = start.elapsed().as_secs_f64();
                Ok(o)
            }
            Err(e) => {
                if created && !self.keep_partial {
                    let _ = std::fs::remove_file(&part);
                    let _ = std::fs::remove_file(&side);
                }
                Err(e)
            }
        }
    }

    /// An error unless the sidecar `s` is of this job, settings and input.
    fn check_same(&self, s: &Sidecar, side: &Path) -> Result<()> {
        let refuse = |what: String| {
            Err(TrainError::Resume {
                path: side.display().to_string(),
                message: format!(
                    "the partial output {} was made {what}; give the same settings to continue \
                     it, or remove it and its sidecar to start again",
                    partial_path(self.out).display()
                ),
            })
        };
        if s.format != SIDECAR_FORMAT || s.job != self.job {
            return refuse(format!("by `{}` ({})", s.job, s.format));
        }
        if s.input != InputPrint::of(self.data)? {
            return refuse(format!(
                "from another input than {} (size or first MiB differ)",
                self.data.display()
            ));
        }
        if s.config != self.config {
            let (was, now) = (s.config.as_object(), self.config.as_object());
            let mut keys: Vec<&String> =
                was.into_iter().chain(now).flat_map(|m| m.keys()).collect();
            keys.dedup();
            let key = keys
                .into_iter()
                .find(|k| s.config.get(k.as_str()) != self.config.get(k.as_str()));
            return refuse(match key {
                Some(k) => format!(
                    "with `{k}` = {} (now {})",
                    s.config.get(k.as_str()).unwrap_or(&Value::Null),
                    self.config.get(k.as_str()).unwrap_or(&Value::Null)
                ),
                None => "with other settings".into(),
            });
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn stream(
        &self,
        done: usize,
        part: &Path,
        side: &Path,
        mut sidecar: Sidecar,
        encode: Encode<'_>,
        label: Label<'_>,
        progress: &mut dyn FnMut(Event),
    ) -> Result<StreamOutcome> {
        let started = Instant::now();
        let io_out = |e| TrainError::from(tilpass_core::Error::io(part, e));
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(part)
            .map_err(io_out)?;
        let mut w = BufWriter::new(file);
        let hash = Arc::new(Mutex::new(Sha256::new()));
        let reader = Hashing {
            inner: File::open(self.data).map_err(|e| tilpass_core::Error::io(self.data, e))?,
            hash: Arc::clone(&hash),
        };
        let lines = tilpass_core::TextLines::from_reader(
            self.data,
            reader,
            tilpass_core::limits::DEFAULT_MAX_LINE_BYTES,
        );
        // Local rows (this shard's) before the window holding the first missing row need no work.
        let redo_from = done / self.window * self.window;
        let mut k = 0usize; // rows of the input (non-blank lines)
        let mut local = 0usize; // rows of this shard
        let mut written = 0usize; // rows written by this call
        let mut buf: Vec<(usize, usize, Value)> = Vec::with_capacity(self.window.min(1 << 16));
        let mut stopped = false;
        for item in lines {
            let (line, text) = item?;
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            let window_index = k / self.window;
            k += 1;
            if !self.shard.is_none_or(|s| s.owns(window_index)) {
                continue;
            }
            let j = local;
            local += 1;
            if j < redo_from {
                continue;
            }
            let value = serde_json::from_str::<Value>(text).map_err(|e| TrainError::Row {
                path: self.data.display().to_string(),
                line,
                message: e.to_string(),
            })?;
            buf.push((line, j, value));
            if k.is_multiple_of(self.window) && !buf.is_empty() {
                let n = self.window_out(&mut buf, done, &mut written, &mut w, encode, label)?;
                w.flush().map_err(io_out)?;
                progress(Event::Rows {
                    done: done + written,
                    seconds: started.elapsed().as_secs_f64(),
                });
                if n {
                    stopped = true;
                    break;
                }
            }
        }
        if !stopped && !buf.is_empty() {
            stopped = self.window_out(&mut buf, done, &mut written, &mut w, encode, label)?;
            progress(Event::Rows {
                done: done + written,
                seconds: started.elapsed().as_secs_f64(),
            });
        }
        w.flush().map_err(io_out)?;
        w.get_ref().sync_all().map_err(io_out)?;
        drop(w);
        if stopped {
            return Ok(StreamOutcome {
                rows: written,
                resumed_from: done,
                complete: false,
                seconds: 0.0,
            });
        }
        if local < done {
            return Err(TrainError::Resume {
                path: part.display().to_string(),
                message: format!(
                    "holds {done} rows but this input has {local} for this job: not its output \
                     (remove it and {})",
                    side.display()
                ),
            });
        }
        let digest = hash
            .lock()
            .map(|h| hex(&h.clone().finalize()))
            .unwrap_or_default();
        sidecar.complete = true;
        sidecar.rows = Some(local);
        sidecar.input_rows = Some(k);
        sidecar.input_sha256 = Some(digest);
        write_sidecar(side, &sidecar)?;
        std::fs::rename(part, self.out).map_err(|e| tilpass_core::Error::io(self.out, e))?;
        Ok(StreamOutcome {
            rows: written,
            resumed_from: done,
            complete: true,
            seconds: 0.0,
        })
    }

    /// Labels a window (sorted by length, `batch_size` rows a batch) and writes its rows from
    /// local index `done` on, in input order; true when `max_rows` is reached.
    #[allow(clippy::too_many_arguments)]
    fn window_out(
        &self,
        buf: &mut Vec<(usize, usize, Value)>,
        done: usize,
        written: &mut usize,
        w: &mut BufWriter<File>,
        encode: Encode<'_>,
        label: Label<'_>,
    ) -> Result<bool> {
        if buf.is_empty() {
            return Ok(false);
        }
        let texts = buf
            .iter()
            .map(|(line, _, v)| super::jsonl::text_field(v, self.text_field, self.data, *line))
            .collect::<Result<Vec<&str>>>()?;
        let ids = encode(&texts)?;
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| ids[i].len());
        let mut added: Vec<Option<Map<String, Value>>> = vec![None; ids.len()];
        for chunk in order.chunks(self.batch_size.max(1)) {
            let batch: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
            let fields = label(&batch)?;
            if fields.len() != chunk.len() {
                return Err(TrainError::Config(format!(
                    "labelled {} rows of a batch of {}",
                    fields.len(),
                    chunk.len()
                )));
            }
            for (&i, f) in chunk.iter().zip(fields) {
                added[i] = Some(f);
            }
        }
        let path = partial_path(self.out);
        let mut reached = false;
        for ((_, j, mut row), fields) in buf.drain(..).zip(added) {
            if j < done {
                continue;
            }
            if self.max_rows.is_some_and(|m| *written >= m) {
                reached = true;
                break;
            }
            if let (Value::Object(m), Some(f)) = (&mut row, fields) {
                m.extend(f);
            }
            writeln!(w, "{row}").map_err(|e| tilpass_core::Error::io(&path, e))?;
            *written += 1;
        }
        Ok(reached || self.max_rows.is_some_and(|m| *written >= m))
    }
}

fn write_sidecar(path: &Path, s: &Sidecar) -> Result<()> {
    let text = serde_json::to_string_pretty(s).map_err(|e| TrainError::Config(e.to_string()))?;
    Ok(tilpass_core::write_atomic(path, text.as_bytes())?)
}

/// Cuts a torn last line off `path`; returns the number of complete lines left.
fn truncate_to_complete_lines(path: &Path) -> Result<usize> {
    let io = |e| TrainError::from(tilpass_core::Error::io(path, e));
    let mut r = BufReader::new(File::open(path).map_err(io)?);
    let (mut lines, mut end, mut pos) = (0usize, 0u64, 0u64);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = r.read_until(b'\n', &mut line).map_err(io)?;
        if n == 0 {
            break;
        }
        pos += n as u64;
        if line.last() == Some(&b'\n') {
            lines += 1;
            end = pos;
        }
    }
    if end != pos {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io)?;
        f.set_len(end).map_err(io)?;
        let mut f = f;
        f.seek(SeekFrom::End(0)).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    Ok(lines)
}
