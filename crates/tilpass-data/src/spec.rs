//! Naming a dataset: a file (JSONL / JSON in TRL's formats) or a dataset built into tilpass
//! (`builtin:norsk-chat`, `builtin:norsk-chat:eval`, `builtin:norsk-pref[:train|:eval]`), as run
//! configs and the CLI's `--data` take it.
//!
//! ```
//! use tilpass_data::{DatasetSpec, load_records};
//! let spec: DatasetSpec = "builtin:norsk-chat:eval".parse().unwrap();
//! assert_eq!(spec.to_string(), "builtin:norsk-chat:eval");
//! assert_eq!(load_records(&spec).unwrap().len(), 45);
//! assert!("builtin:wikipedia".parse::<DatasetSpec>().is_err());
//! let pref = load_records(&"builtin:norsk-pref".parse().unwrap()).unwrap();
//! assert_eq!(pref[0].kind(), tilpass_data::RecordKind::Preference);
//! assert_eq!("data/train.jsonl".parse::<DatasetSpec>().unwrap(), DatasetSpec::File("data/train.jsonl".into()));
//! ```

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::embedded::{NORSK_CHAT, NORSK_PREF, builtin_records, check_builtin, check_split};
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
    /// A dataset compiled into tilpass ([`NORSK_CHAT`] or [`NORSK_PREF`]) and one of its
    /// splits (`train` or `eval`; `None`: `train`).
    Builtin {
        /// The dataset's name (`norsk-chat`, `norsk-pref`).
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

    /// The built-in `norsk-pref` preference dataset, split `split` (`None`: `train`).
    pub fn norsk_pref(split: Option<&str>) -> Self {
        Self::Builtin {
            name: NORSK_PREF.into(),
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
        check_builtin(name)?;
        if let Some(sp) = split {
            check_split(name, sp)?;
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
/// invalid row is an error naming file and line), or a built-in dataset's split (conversation
/// records for `norsk-chat`, preference records with an explicit prompt for `norsk-pref`).
pub fn load_records(spec: &DatasetSpec) -> Result<Vec<Record>> {
    match spec {
        DatasetSpec::File(p) => Ok(read_dataset(p, &ReadOptions::default())?.records),
        DatasetSpec::Builtin { name, split } => builtin_records(name, split.as_deref()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::{norsk_chat, norsk_pref};

    #[test]
    fn specs_round_trip_through_strings_and_serde() {
        for s in [
            "builtin:norsk-chat",
            "builtin:norsk-chat:train",
            "builtin:norsk-pref",
            "builtin:norsk-pref:eval",
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

    #[test]
    fn norsk_pref_loads_as_explicit_prompt_preference_records() {
        let train = load_records(&DatasetSpec::norsk_pref(None)).unwrap();
        let eval = load_records(&"builtin:norsk-pref:eval".parse().unwrap()).unwrap();
        assert_eq!(train.len() + eval.len(), norsk_pref(None).unwrap().len());
        assert_eq!(train.len(), norsk_pref(Some("train")).unwrap().len());
        for r in train.iter().chain(&eval) {
            match r {
                Record::Preference {
                    prompt: Some(p),
                    chosen,
                    rejected,
                } => {
                    assert!(p.is_conversational() && chosen.is_conversational());
                    assert_eq!((p.turns(), chosen.turns(), rejected.turns()), (1, 1, 1));
                }
                other => panic!("not an explicit-prompt preference record: {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_builtins_and_splits_are_typed_errors_listing_what_exists() {
        let err = "builtin:norsk-dpo".parse::<DatasetSpec>().unwrap_err();
        match &err {
            DataError::UnknownBuiltin { name, available } => {
                assert_eq!(name, "norsk-dpo");
                assert_eq!(available, &["norsk-chat", "norsk-pref"]);
            }
            other => panic!("{other:?}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains("builtin:norsk-chat") && msg.contains("builtin:norsk-pref"),
            "{msg}"
        );
        let err = "builtin:norsk-pref:test"
            .parse::<DatasetSpec>()
            .unwrap_err();
        match &err {
            DataError::UnknownSplit {
                dataset,
                split,
                available,
            } => {
                assert_eq!((dataset.as_str(), split.as_str()), ("norsk-pref", "test"));
                assert_eq!(available, &["train", "eval"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains("train, eval"), "{err}");
        // Specs built in code bypass parsing; loading still checks.
        let bad = DatasetSpec::Builtin {
            name: "norsk-pref".into(),
            split: Some("dev".into()),
        };
        assert!(matches!(
            load_records(&bad),
            Err(DataError::UnknownSplit { .. })
        ));
        assert!(matches!(
            norsk_pref(Some("validation")),
            Err(DataError::UnknownSplit { .. })
        ));
    }
}
