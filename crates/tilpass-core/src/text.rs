//! Reading untrusted text files: a UTF-8 byte-order mark at the start is dropped (as Python's
//! `utf-8-sig` codec does), invalid UTF-8 is an error naming the file and line, and lines are
//! bounded in length so that a file without newlines cannot exhaust memory.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::limits::DEFAULT_MAX_LINE_BYTES;

/// The UTF-8 encoding of U+FEFF, the byte-order mark some editors put at the start of a file.
pub const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// `bytes` without a leading UTF-8 byte-order mark.
///
/// ```
/// assert_eq!(tilpass_core::strip_bom(b"\xEF\xBB\xBF{}"), b"{}");
/// assert_eq!(tilpass_core::strip_bom(b"{}"), b"{}");
/// ```
pub fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes)
}

/// Decodes a whole file's bytes as UTF-8 after dropping a leading byte-order mark; invalid
/// UTF-8 is [`Error::InvalidUtf8`] with the 1-based line and byte column.
pub fn decode_utf8(path: &Path, bytes: Vec<u8>) -> Result<String> {
    let skip = if bytes.starts_with(UTF8_BOM) {
        UTF8_BOM.len()
    } else {
        0
    };
    match std::str::from_utf8(&bytes[skip..]) {
        Ok(_) => {
            let mut bytes = bytes;
            bytes.drain(..skip);
            Ok(String::from_utf8(bytes).expect("checked above"))
        }
        Err(e) => {
            let at = skip + e.valid_up_to();
            let line_start = bytes[..at]
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(skip, |i| i + 1);
            Err(Error::InvalidUtf8 {
                path: path.to_path_buf(),
                line: bytes[..at].iter().filter(|b| **b == b'\n').count() + 1,
                column: at - line_start + 1,
            })
        }
    }
}

/// Reads a UTF-8 text file whole (see [`decode_utf8`]); errors name the file.
pub fn read_text(path: impl AsRef<Path>) -> Result<String> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_utf8(path, bytes)
}

/// The lines of a UTF-8 text file, streamed: each item is `(line, text)` with the 1-based line
/// number and the text without its `\n` (or `\r\n`). A byte-order mark at the start of the file
/// is dropped.
///
/// A line that is not valid UTF-8 is [`Error::InvalidUtf8`] and a line longer than the limit
/// (default [`DEFAULT_MAX_LINE_BYTES`]) is [`Error::LineTooLong`], both naming the file and line;
/// iteration goes on with the next line after either (a caller may skip bad lines). Only the
/// first `limit` bytes of a long line are ever held in memory. An I/O error ends the iteration.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let p = dir.path().join("a.txt");
/// std::fs::write(&p, "\u{feff}one\r\ntwo\n").unwrap();
/// let lines: Vec<_> = tilpass_core::TextLines::open(&p).unwrap().map(Result::unwrap).collect();
/// assert_eq!(lines, [(1, "one".to_string()), (2, "two".to_string())]);
/// ```
pub struct TextLines {
    path: PathBuf,
    reader: Box<dyn BufRead + Send>,
    line: usize,
    max: usize,
    done: bool,
}

impl std::fmt::Debug for TextLines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextLines")
            .field("path", &self.path)
            .field("line", &self.line)
            .field("max", &self.max)
            .finish()
    }
}

impl TextLines {
    /// Opens a file with the default line limit.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with_limit(path, DEFAULT_MAX_LINE_BYTES)
    }

    /// Opens a file with lines of at most `max_line_bytes` bytes (at least 1).
    pub fn open_with_limit(path: impl AsRef<Path>, max_line_bytes: usize) -> Result<Self> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        Ok(Self::from_reader(
            path,
            BufReader::new(file),
            max_line_bytes,
        ))
    }

    /// Reads lines from any reader; `path` is the name errors give.
    pub fn from_reader(
        path: impl Into<PathBuf>,
        reader: impl Read + Send + 'static,
        max_line_bytes: usize,
    ) -> Self {
        Self {
            path: path.into(),
            reader: Box::new(BufReader::new(reader)),
            line: 0,
            max: max_line_bytes.max(1),
            done: false,
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads one raw line into `buf` (without the `\n`), keeping at most `self.max + 1` bytes;
    /// returns `Ok(None)` at the end of the file and `Ok(Some(too_long))` otherwise.
    fn read_raw(&mut self, buf: &mut Vec<u8>) -> std::io::Result<Option<bool>> {
        let mut any = false;
        let mut too_long = false;
        loop {
            let chunk = match self.reader.fill_buf() {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if chunk.is_empty() {
                return Ok(any.then_some(too_long));
            }
            any = true;
            let (take, newline) = match chunk.iter().position(|b| *b == b'\n') {
                Some(i) => (i, true),
                None => (chunk.len(), false),
            };
            let room = (self.max + 1).saturating_sub(buf.len());
            buf.extend_from_slice(&chunk[..take.min(room)]);
            if buf.len() > self.max {
                too_long = true;
            }
            self.reader.consume(take + usize::from(newline));
            if newline {
                return Ok(Some(too_long));
            }
        }
    }
}

impl Iterator for TextLines {
    type Item = Result<(usize, String)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let mut buf = Vec::new();
        let too_long = match self.read_raw(&mut buf) {
            Ok(None) => {
                self.done = true;
                return None;
            }
            Ok(Some(t)) => t,
            Err(e) => {
                self.done = true;
                return Some(Err(Error::io(
                    &self.path,
                    std::io::Error::new(e.kind(), format!("line {}: {e}", self.line + 1)),
                )));
            }
        };
        self.line += 1;
        if too_long {
            return Some(Err(Error::LineTooLong {
                path: self.path.clone(),
                line: self.line,
                limit: self.max,
            }));
        }
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        if self.line == 1 && buf.starts_with(UTF8_BOM) {
            buf.drain(..UTF8_BOM.len());
        }
        Some(match String::from_utf8(buf) {
            Ok(s) => Ok((self.line, s)),
            Err(e) => Err(Error::InvalidUtf8 {
                path: self.path.clone(),
                line: self.line,
                column: e.utf8_error().valid_up_to() + 1,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(bytes: &[u8], max: usize) -> Vec<std::result::Result<(usize, String), String>> {
        TextLines::from_reader("f.jsonl", std::io::Cursor::new(bytes.to_vec()), max)
            .map(|r| r.map_err(|e| e.to_string()))
            .collect()
    }

    #[test]
    fn bom_crlf_and_a_missing_final_newline() {
        assert_eq!(
            lines(b"\xEF\xBB\xBFa\r\n\nb", 100),
            vec![
                Ok((1, "a".into())),
                Ok((2, String::new())),
                Ok((3, "b".into()))
            ]
        );
        assert!(lines(b"", 100).is_empty());
        // A BOM later in the file is content, not a marker.
        assert_eq!(
            lines(b"a\n\xEF\xBB\xBFb", 100)[1],
            Ok((2, "\u{feff}b".into()))
        );
    }

    #[test]
    fn invalid_utf8_and_long_lines_name_file_and_line_and_reading_goes_on() {
        let got = lines(b"ok\nbad \xff here\nxxxxxxxxxxxxx\nlast\n", 12);
        assert_eq!(got[0], Ok((1, "ok".into())));
        let e = got[1].clone().unwrap_err();
        assert!(e.contains("f.jsonl:2") && e.contains("UTF-8"), "{e}");
        let e = got[2].clone().unwrap_err();
        assert!(e.contains("f.jsonl:3") && e.contains("12 bytes"), "{e}");
        assert_eq!(got[3], Ok((4, "last".into())));
        assert_eq!(got.len(), 4);
    }

    #[test]
    fn a_line_of_exactly_the_limit_is_accepted() {
        assert_eq!(lines(b"12345678\n", 8), vec![Ok((1, "12345678".into()))]);
        assert!(lines(b"123456789", 8)[0].is_err());
    }

    #[test]
    fn whole_files_drop_the_bom_and_name_the_bad_line() {
        let p = Path::new("x.json");
        assert_eq!(decode_utf8(p, b"\xEF\xBB\xBF{}".to_vec()).unwrap(), "{}");
        let e = decode_utf8(p, b"{\n\"a\": \"\xc3\"\n}".to_vec()).unwrap_err();
        assert!(
            matches!(
                e,
                Error::InvalidUtf8 {
                    line: 2,
                    column: 7,
                    ..
                }
            ),
            "{e:?}"
        );
    }
}
