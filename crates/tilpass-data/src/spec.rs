//! Naming a dataset: a file (JSONL / JSON in TRL's formats) or a dataset built into tilpass
//! (`builtin:norsk-chat`, `builtin:norsk-chat:eval`), as run configs and the CLI's `--data`
//! take it.
//!
//! ```
//! use tilpass_data::{DatasetSpec, load_records};
//! let spec: DatasetSpec = "builtin:norsk-chat:eval".parse().unwrap();
//! assert_eq!(spec.to_string(), "builtin:norsk-chat:eval");
//! assert_eq!(load_records(&spec).unwrap().len(), 45);
//! assert!("builtin:wikipedia".parse::<DatasetSpec>().is_err());
//! assert_eq!("data/train.jsonl".parse::<DatasetSpec>().unwrap(), DatasetSpec::File("data/train.jsonl".into()));
//! ```

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::embedded::{NORSK_CHAT, norsk_chat};
use crate::error::{DataError, Result};
use crate::reader::{ReadOptions, read_dataset};
use crate::record::Record;

/// The prefix of built-in dataset names.
pub const BUILTIN_PREFIX: &str = "builtin:";

/// Where a dataset comes from. Written as a string: a path, or `builtin:NAME[:SPLIT]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DatasetSpec {
    /// A JSONL or JSON file in one of TRL's formats (see [`read_dataset`]).
    File(PathBuf),
    /// A dataset compiled into tilpass (only [`NORSK_CHAT`] so far) and one of its splits
    /// (`train` or `eval`; `None`: `train`).
    Builtin {
        /// The dataset's name (`norsk-chat`).
        name: String,
        /// The split named after a second colon.
        split: Option<String>,
    },
}

impl DatasetSpec {
    /// The built-in `norsk-chat` dataset, split `split` (`None`: `train`).
    pub fn norsk_chat(split: Option<&str>) -> Self {
        Self::Builtin {
            name: NORSK_CHAT.into(),
            split: split.map(str::to_string),
        }
    }
}

impl FromStr for DatasetSpec {
    type Err = DataError;

    /// Parses `builtin:NAME[:SPLIT]` (checking that the dataset and split exist) or a path.
    fn from_str(s: &str) -> Result<Self> {
        let Some(rest) = s.strip_prefix(BUILTIN_PREFIX) else {
            return Ok(Self::File(PathBuf::from(s)));
        };
        let (name, split) = match rest.split_once(':') {
            Some((n, sp)) => (n, Some(sp)),
            None => (rest, None),
        };
        if name != NORSK_CHAT {
            return Err(DataError::Invalid(format!(
                "unknown built-in dataset `{name}`: the one built in is `builtin:{NORSK_CHAT}` \
                 (splits :train, :eval)"
            )));
        }
        if let Some(sp) = split
            && sp != "train"
            && sp != "eval"
        {
            return Err(DataError::Invalid(format!(
                "{NORSK_CHAT}: unknown split `{sp}`: expected `train` or `eval`"
            )));
        }
        Ok(Self::Builtin {
            name: name.into(),
            split: split.map(str::to_string),
        })
    }
}

impl TryFrom<String> for DatasetSpec {
    type Error = DataError;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<DatasetSpec> for String {
    fn from(spec: DatasetSpec) -> Self {
        spec.to_string()
    }
}

impl From<PathBuf> for DatasetSpec {
    /// A file path (use [`str::parse`] to recognise `builtin:` names).
    fn from(p: PathBuf) -> Self {
        Self::File(p)
    }
}

impl fmt::Display for DatasetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(p) => write!(f, "{}", p.display()),
            Self::Builtin { name, split: None } => write!(f, "{BUILTIN_PREFIX}{name}"),
            Self::Builtin {
                name,
                split: Some(s),
            } => write!(f, "{BUILTIN_PREFIX}{name}:{s}"),
        }
    }
}

/// The records of a dataset: a file read with [`read_dataset`] (default options: the first
/// invalid row is an error naming file and line), or a built-in dataset's split as
/// conversation records.
pub fn load_records(spec: &DatasetSpec) -> Result<Vec<Record>> {
    match spec {
        DatasetSpec::File(p) => Ok(read_dataset(p, &ReadOptions::default())?.records),
        DatasetSpec::Builtin { name, split } => {
            if name != NORSK_CHAT {
                return Err(DataError::Invalid(format!(
                    "unknown built-in dataset `{name}`: the one built in is \
                     `builtin:{NORSK_CHAT}` (splits :train, :eval)"
                )));
            }
            Ok(norsk_chat(Some(split.as_deref().unwrap_or("train")))?
                .iter()
                .map(|c| c.record())
                .collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_round_trip_through_strings_and_serde() {
        for s in [
            "builtin:norsk-chat",
            "builtin:norsk-chat:train",
            "x/y.jsonl",
        ] {
            let spec: DatasetSpec = s.parse().unwrap();
            assert_eq!(spec.to_string(), s);
            let json = serde_json::to_string(&spec).unwrap();
            assert_eq!(serde_json::from_str::<DatasetSpec>(&json).unwrap(), spec);
        }
        let err = serde_json::from_str::<DatasetSpec>("\"builtin:norsk-chat:test\"").unwrap_err();
        assert!(err.to_string().contains("unknown split `test`"), "{err}");
        let train = load_records(&DatasetSpec::norsk_chat(None)).unwrap();
        let eval = load_records(&DatasetSpec::norsk_chat(Some("eval"))).unwrap();
        assert_eq!(train.len() + eval.len(), norsk_chat(None).unwrap().len());
    }
}
