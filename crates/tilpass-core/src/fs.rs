//! File-system helpers: atomic writes and JSON reading with file-named errors.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// Temporary files and directories that exist now (written by [`TempFile`], [`write_atomic_with`]
/// or [`temp_dir_for`]), so that an interrupt handler can remove them
/// ([`remove_temp_files`]).
static LIVE_TEMPS: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Numbers the temporary names of this process (with the pid, they are unique).
static TEMP_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn register(p: &Path) {
    if let Ok(mut l) = LIVE_TEMPS.lock() {
        l.push(p.to_path_buf());
    }
}

fn unregister(p: &Path) {
    if let Ok(mut l) = LIVE_TEMPS.lock()
        && let Some(i) = l.iter().position(|q| q == p)
    {
        l.swap_remove(i);
    }
}

/// Removes every temporary file and directory this process is writing now (for a Ctrl-C
/// handler: the outputs being written then never appear, and nothing is left behind).
pub fn remove_temp_files() {
    let paths = match LIVE_TEMPS.lock() {
        Ok(mut l) => std::mem::take(&mut *l),
        Err(_) => return,
    };
    for p in paths {
        if p.is_dir() {
            let _ = std::fs::remove_dir_all(&p);
        } else {
            let _ = std::fs::remove_file(&p);
        }
    }
}

/// The directory `path` goes into (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// A fresh temporary name beside `path`: `.<name>.tmp-<pid>-<n>`, unique in this process.
fn temp_name(path: &Path) -> Result<PathBuf> {
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::io(path, std::io::Error::other("not a file path")))?;
    let n = TEMP_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(parent_dir(path).join(format!(
        ".{}.tmp-{}-{n}",
        file_name.to_string_lossy(),
        std::process::id()
    )))
}

/// A file being written under a temporary name beside its target: [`TempFile::commit`]
/// renames it into place; dropped uncommitted (an error, a panic), it is removed. The
/// temporary name (`.<name>.tmp-<pid>-<n>`) is created exclusively, so it never replaces an
/// existing file (an input of the job included).
#[derive(Debug)]
pub struct TempFile {
    target: PathBuf,
    tmp: PathBuf,
    w: Option<BufWriter<File>>,
}

impl TempFile {
    /// Creates the temporary file for `target` (and `target`'s directory if needed).
    pub fn create(target: impl AsRef<Path>) -> Result<Self> {
        let target = target.as_ref();
        let dir = parent_dir(target);
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        loop {
            let tmp = temp_name(target)?;
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
            {
                Ok(f) => {
                    register(&tmp);
                    return Ok(Self {
                        target: target.to_path_buf(),
                        tmp,
                        w: Some(BufWriter::new(f)),
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(target, e)),
            }
        }
    }

    /// The temporary file's path.
    pub fn temp_path(&self) -> &Path {
        &self.tmp
    }

    /// The file the content goes to on [`TempFile::commit`].
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// The writer of the temporary file.
    pub fn writer(&mut self) -> &mut BufWriter<File> {
        // `w` is taken only by `commit`, which consumes `self`: it is always here.
        self.w.as_mut().expect("a TempFile is open until commit")
    }

    /// Flushes and syncs the content and renames it over the target.
    pub fn commit(mut self) -> Result<()> {
        let Some(mut w) = self.w.take() else {
            return Ok(());
        };
        let result = w
            .flush()
            .and_then(|()| w.get_ref().sync_all())
            .and_then(|()| {
                drop(w);
                std::fs::rename(&self.tmp, &self.target)
            });
        match result {
            Ok(()) => {
                unregister(&self.tmp);
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_file(&self.tmp);
                unregister(&self.tmp);
                Err(Error::io(&self.target, e))
            }
        }
    }
}

impl Drop for TempFile {
    /// An uncommitted file (the job failed) leaves nothing behind.
    fn drop(&mut self) {
        if self.w.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
            unregister(&self.tmp);
        }
    }
}

/// A temporary directory beside `target` (`.<name>.tmp-<pid>-<n>`, created exclusively),
/// registered for [`remove_temp_files`]; the caller renames it into place and then calls
/// [`forget_temp`] (or removes it on failure).
pub fn temp_dir_for(target: impl AsRef<Path>) -> Result<PathBuf> {
    let target = target.as_ref();
    let dir = parent_dir(target);
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    loop {
        let tmp = temp_name(target)?;
        match std::fs::create_dir(&tmp) {
            Ok(()) => {
                register(&tmp);
                return Ok(tmp);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(target, e)),
        }
    }
}

/// Stops tracking a temporary path of [`temp_dir_for`] (it was renamed into place or removed).
pub fn forget_temp(tmp: impl AsRef<Path>) {
    unregister(tmp.as_ref());
}

/// Writes a file atomically: the content goes to a temporary file in the same directory
/// ([`TempFile`]: a unique name, never an existing file), which is flushed, synced and renamed
/// over `path`. A crash leaves either the old file or the new one; an error or an interrupt
/// leaves no temporary file.
pub fn write_atomic_with(
    path: impl AsRef<Path>,
    write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<()> {
    let path = path.as_ref();
    let mut t = TempFile::create(path)?;
    write(t.writer()).map_err(|e| Error::io(path, e))?;
    t.commit()
}

/// Writes a string atomically (see [`write_atomic_with`]).
pub fn write_atomic(path: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> Result<()> {
    write_atomic_with(path, |w| w.write_all(contents.as_ref()))
}

/// Reads and parses a JSON file; errors name the file, line and column. A UTF-8 byte-order
/// mark at the start is dropped (as Python's `utf-8-sig`); invalid UTF-8 is
/// [`Error::InvalidUtf8`] naming the line.
pub fn read_json<T: DeserializeOwned>(path: impl AsRef<Path>) -> Result<T> {
    let path = path.as_ref();
    let text = crate::text::read_text(path)?;
    serde_json::from_str(&text).map_err(|e| Error::json(path, &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/a.txt");
        write_atomic(&p, "one").unwrap();
        write_atomic(&p, "two").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "two");
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.txt")]);
    }

    #[test]
    fn every_f64_written_as_json_reads_back_bit_for_bit() {
        // Checkpoints keep f64 state as JSON (a GRPO/RLOO generation batch's advantages and
        // log-probs, trainer state); a resumed run is bit-identical only if parsing gives back
        // the exact value serde_json printed. Its default parser is off by an ulp for about one
        // value in nine of these (the workspace enables `float_roundtrip`).
        let mut s: u64 = 0x9E37_79B9_7F4A_7C15;
        let values: Vec<f64> = (0..20_000)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let unit = (s >> 11) as f64 / (1u64 << 53) as f64;
                match i % 4 {
                    0 => -unit * 12.0,                                       // a log-prob
                    1 => (unit - 0.5) * 8.0 / 3.0,                           // an advantage
                    2 => f64::from_bits(s & !(0x7ff << 52) | (0x3ff << 52)), // any mantissa
                    _ => unit * 1e-300,
                }
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        write_atomic(&p, serde_json::to_vec(&values).unwrap()).unwrap();
        let back: Vec<f64> = read_json(&p).unwrap();
        assert_eq!(back.len(), values.len());
        let changed = values
            .iter()
            .zip(&back)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(changed, 0, "{changed} of {} values changed", values.len());
    }

    #[test]
    fn a_temporary_name_never_takes_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.jsonl");
        // The next temporary names this process would pick, taken already (say, by inputs).
        let next = TEMP_COUNTER.load(std::sync::atomic::Ordering::Relaxed);
        let taken: Vec<PathBuf> = (next..next + 8)
            .map(|n| {
                let q = dir
                    .path()
                    .join(format!(".a.jsonl.tmp-{}-{n}", std::process::id()));
                std::fs::write(&q, format!("input {n}")).unwrap();
                q
            })
            .collect();
        let mut t = TempFile::create(&p).unwrap();
        assert!(!taken.contains(&t.temp_path().to_path_buf()));
        t.writer().write_all(b"new").unwrap();
        t.commit().unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new");
        for (q, n) in taken.iter().zip(next..) {
            assert_eq!(std::fs::read_to_string(q).unwrap(), format!("input {n}"));
        }
    }

    #[test]
    fn an_uncommitted_temporary_file_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.jsonl");
        let mut t = TempFile::create(&p).unwrap();
        t.writer().write_all(b"partial").unwrap();
        let tmp = t.temp_path().to_path_buf();
        assert!(tmp.is_file());
        drop(t);
        assert!(!tmp.exists() && !p.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.txt");
        write_atomic(&p, "old").unwrap();
        let err = write_atomic_with(&p, |_| Err(std::io::Error::other("boom"))).unwrap_err();
        assert!(err.to_string().contains("a.txt"), "{err}");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "old");
    }

    #[test]
    fn json_with_a_bom_reads_and_bad_utf8_names_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        std::fs::write(&p, b"\xEF\xBB\xBF{\"a\": 1}").unwrap();
        let v: serde_json::Value = read_json(&p).unwrap();
        assert_eq!(v["a"], 1);
        std::fs::write(&p, b"{\n\"a\": \"\xff\"}").unwrap();
        let err = read_json::<serde_json::Value>(&p).unwrap_err();
        assert!(matches!(err, Error::InvalidUtf8 { line: 2, .. }), "{err:?}");
        assert!(err.to_string().contains("config.json:2"), "{err}");
    }

    #[test]
    fn json_errors_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        std::fs::write(&p, "{\n  \"a\": 1,\n  oops\n}").unwrap();
        let err = read_json::<serde_json::Value>(&p).unwrap_err().to_string();
        assert!(
            err.contains("config.json") && err.contains("line 3"),
            "{err}"
        );
    }
}

#[cfg(test)]
mod disk_full_tests {
    use super::*;

    #[test]
    fn a_full_disk_is_a_disk_full_error_and_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, "old").unwrap();
        let err = write_atomic_with(&path, |_| {
            Err(std::io::Error::from(std::io::ErrorKind::StorageFull))
        })
        .unwrap_err();
        assert!(matches!(err, Error::DiskFull { .. }), "{err:?}");
        assert!(err.to_string().contains("no space left"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file stays behind");
    }
}

/// An error when the output `out` (a file or a directory, named by the setting `setting`) is
/// one of `inputs`: writing it would replace what the command reads (`data dedup a.jsonl --out a.jsonl`, `peft merge --model m --out m`). Paths
/// are compared after resolving links and `..`; a path that does not exist yet is compared as
/// written.
pub fn check_output_is_not_input(setting: &str, out: &Path, inputs: &[&Path]) -> Result<()> {
    let resolve = |p: &Path| -> PathBuf {
        if let Ok(c) = std::fs::canonicalize(p) {
            return c;
        }
        // A new output: resolve its existing parent, keep the new name.
        match (p.parent(), p.file_name()) {
            (Some(parent), Some(name)) => {
                let parent = if parent.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    parent
                };
                std::fs::canonicalize(parent)
                    .map(|c| c.join(name))
                    .unwrap_or_else(|_| p.to_path_buf())
            }
            _ => p.to_path_buf(),
        }
    };
    let o = resolve(out);
    for input in inputs {
        let i = resolve(input);
        if o == i {
            return Err(Error::InvalidInput(format!(
                "`{setting}` {}: expected a path apart from the input {}: the output would \
                 replace what the command reads",
                out.display(),
                input.display()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod output_tests {
    use super::check_output_is_not_input;

    #[test]
    fn an_output_that_is_an_input_is_refused_however_it_is_spelled() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.jsonl");
        std::fs::write(&a, "{}").unwrap();
        let other = dir.path().join("b.jsonl");
        check_output_is_not_input("out", &other, &[a.as_path()]).unwrap();
        let same = dir.path().join(".").join("a.jsonl");
        let err = check_output_is_not_input("out", &same, &[a.as_path()]).unwrap_err();
        assert!(err.to_string().contains("`out`"), "{err}");
        let sub = dir.path().join("m");
        std::fs::create_dir(&sub).unwrap();
        let up = sub.join("..").join("m");
        assert!(check_output_is_not_input("out", &up, &[sub.as_path()]).is_err());
        // A new output inside an input directory replaces nothing.
        check_output_is_not_input("out", &sub.join("merged"), &[sub.as_path()]).unwrap();
    }
}
