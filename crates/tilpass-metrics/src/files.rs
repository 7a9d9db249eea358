//! Reading metric inputs from files: hypothesis / reference text (one segment per line) and
//! TREC qrels / run files. A UTF-8 byte-order mark at the start is dropped, and invalid UTF-8,
//! over-long lines and malformed rows are errors naming the file and line.

use std::collections::BTreeMap;
use std::path::Path;

use tilpass_core::TextLines;
use tilpass_core::limits::DEFAULT_MAX_LINE_BYTES;

use crate::error::{MetricsError, Result};
use crate::retrieval::{Qrels, Run};

/// The lines of a UTF-8 text file (one segment per line, `\n` or `\r\n`; a final newline ends
/// the last line rather than starting an empty one). An empty file is an error. Lines are at
/// most [`DEFAULT_MAX_LINE_BYTES`] long.
pub fn read_lines(path: impl AsRef<Path>) -> Result<Vec<String>> {
    read_lines_with_limit(path, DEFAULT_MAX_LINE_BYTES)
}

/// [`read_lines`] with lines of at most `max_line_bytes` bytes.
pub fn read_lines_with_limit(path: impl AsRef<Path>, max_line_bytes: usize) -> Result<Vec<String>> {
    let path = path.as_ref();
    let lines = TextLines::open_with_limit(path, max_line_bytes)?
        .map(|l| l.map(|(_, text)| text))
        .collect::<tilpass_core::Result<Vec<String>>>()?;
    if lines.is_empty() {
        return Err(MetricsError::Invalid(format!(
            "{}: the file is empty",
            path.display()
        )));
    }
    Ok(lines)
}

/// query id -> document id -> value, as [`read_trec`] returns it.
pub type TrecTable = BTreeMap<String, BTreeMap<String, f64>>;

/// Reads TREC qrels (`qid iter docid grade`, `qrels = true`) or a run
/// (`qid Q0 docid rank score tag`); blank lines are skipped. The value (grade or score) must be
/// a finite number.
pub fn read_trec(path: impl AsRef<Path>, qrels: bool) -> Result<TrecTable> {
    let path = path.as_ref();
    let mut out = TrecTable::new();
    for (i, line) in read_lines(path)?.iter().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.is_empty() {
            continue;
        }
        let (want, value_col) = if qrels { (4, 3) } else { (6, 4) };
        let err = |message: String| MetricsError::Input {
            path: path.to_path_buf(),
            line: i + 1,
            message,
        };
        if f.len() < want {
            return Err(err(format!(
                "expected {want} columns ({}), found {}",
                if qrels {
                    "qid iter docid grade"
                } else {
                    "qid Q0 docid rank score tag"
                },
                f.len()
            )));
        }
        let v: f64 = f[value_col]
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .ok_or_else(|| err(format!("`{}` is not a finite number", f[value_col])))?;
        out.entry(f[0].to_string())
            .or_default()
            .insert(f[2].to_string(), v);
    }
    Ok(out)
}

/// Reads TREC qrels (grades as integers, truncated toward zero as before).
pub fn read_qrels(path: impl AsRef<Path>) -> Result<Qrels> {
    Ok(read_trec(path, true)?
        .into_iter()
        .map(|(q, d)| (q, d.into_iter().map(|(k, v)| (k, v as i64)).collect()))
        .collect())
}

/// Reads a TREC run.
pub fn read_run(path: impl AsRef<Path>) -> Result<Run> {
    read_trec(path, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(body: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f.txt");
        std::fs::write(&p, body).unwrap();
        (d, p)
    }

    #[test]
    fn lines_as_before_with_a_bom_dropped() {
        let (_d, p) = write(b"\xEF\xBB\xBFa\r\n\nb\n");
        assert_eq!(read_lines(&p).unwrap(), ["a", "", "b"]);
        let (_d, p) = write(b"\n");
        assert_eq!(read_lines(&p).unwrap(), [""]);
        let (_d, p) = write(b"");
        let e = read_lines(&p).unwrap_err().to_string();
        assert!(e.contains("f.txt: the file is empty"), "{e}");
    }

    #[test]
    fn bad_utf8_long_lines_and_bad_numbers_name_file_and_line() {
        let (_d, p) = write(b"ok\nbl\xe5\n");
        let e = read_lines(&p).unwrap_err().to_string();
        assert!(e.contains("f.txt:2") && e.contains("UTF-8"), "{e}");
        let (_d, p) = write(b"ok\n0123456789\n");
        let e = read_lines_with_limit(&p, 5).unwrap_err().to_string();
        assert!(e.contains("f.txt:2") && e.contains("longer than 5"), "{e}");
        for bad in ["nan", "inf", "-inf", "1e999", "x"] {
            let (_d, p) = write(format!("q1 Q0 d1 1 2.0 t\nq1 Q0 d2 2 {bad} t\n").as_bytes());
            let e = read_run(&p).unwrap_err().to_string();
            assert!(e.contains("f.txt:2") && e.contains("finite"), "{bad}: {e}");
        }
        let (_d, p) = write(b"q1 0 d1\n");
        let e = read_qrels(&p).unwrap_err().to_string();
        assert!(e.contains("f.txt:1") && e.contains("4 columns"), "{e}");
    }
}
