//! The items of a study: texts with gold labels from the built-in `norsk-topic` set or from
//! JSONL files, the label set, and the item files the study writes for its jobs.

use std::path::Path;

use serde_json::json;
use tilpass_data::embedded::{TOPIC_LABELS, norsk_topic};

use super::{BUILTIN_TOPIC, StudyRun};
use crate::error::{Result, TrainError};
use crate::runs::check;
use crate::runs::jsonl::{read_rows, text_field};

/// A text and its gold label.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Item {
    pub text: String,
    pub gold: String,
}

/// The study's data, checked: the first `items` training items, the test items and the label
/// set (every gold label in it).
#[derive(Debug, Clone)]
pub(crate) struct StudyData {
    pub train: Vec<Item>,
    pub test: Vec<Item>,
    pub labels: Vec<String>,
}

fn read_items(run: &StudyRun, path: &Path) -> Result<Vec<Item>> {
    read_rows(path)?
        .iter()
        .map(|(line, r)| {
            Ok(Item {
                text: text_field(r, &run.text_field, path, *line)?.to_string(),
                gold: text_field(r, &run.label_field, path, *line)?.to_string(),
            })
        })
        .collect()
}

impl StudyData {
    /// Reads and checks the data of `run` (validated): `items` at most the training items
    /// available, every gold label in the label set, at least one test item.
    pub fn load(run: &StudyRun) -> Result<Self> {
        let (mut train, test, source, mut labels) = if run.data == BUILTIN_TOPIC {
            let items = |split| -> Result<Vec<Item>> {
                Ok(norsk_topic(Some(split))?
                    .into_iter()
                    .map(|t| Item {
                        text: t.text,
                        gold: t.label,
                    })
                    .collect())
            };
            let labels = TOPIC_LABELS.map(String::from).to_vec();
            (items("train")?, items("test")?, run.data.clone(), labels)
        } else {
            let test_path = check::path("test_data", &run.test_data)?;
            let train = read_items(run, Path::new(&run.data))?;
            let test = read_items(run, test_path)?;
            let mut labels: Vec<String> = train.iter().map(|i| i.gold.clone()).collect();
            labels.sort();
            labels.dedup();
            (train, test, run.data.clone(), labels)
        };
        if !run.label_names.is_empty() {
            labels = run.label_names.clone();
        }
        if let Some(n) = run.items {
            if n > train.len() {
                return Err(TrainError::setting(
                    "items",
                    n,
                    format!("at most the {} training items of {source}", train.len()),
                ));
            }
            train.truncate(n);
        }
        if train.len() < 2 || test.is_empty() {
            return Err(TrainError::Config(format!(
                "{source}: the study needs at least two training items and one test item \
                 (found {} and {})",
                train.len(),
                test.len()
            )));
        }
        for (split, items) in [("training", &train), ("test", &test)] {
            if let Some((i, it)) = items
                .iter()
                .enumerate()
                .find(|(_, it)| !labels.contains(&it.gold))
            {
                return Err(TrainError::setting(
                    "label_names",
                    format!("{labels:?}"),
                    format!(
                        "every gold label of the data: {split} item {} has label {:?}",
                        i + 1,
                        it.gold
                    ),
                ));
            }
        }
        if labels.len() < 2 {
            return Err(TrainError::Config(format!(
                "{source}: the training items have fewer than two labels ({labels:?})"
            )));
        }
        Ok(Self {
            train,
            test,
            labels,
        })
    }

    /// The class id of `label` in the label set.
    pub fn class(&self, label: &str) -> Option<usize> {
        self.labels.iter().position(|l| l == label)
    }
}

/// Writes `{"text": text, key: label}` rows of `(text, label)` pairs to `path`, atomically.
pub(crate) fn write_items<'a>(
    path: &Path,
    key: &str,
    items: impl Iterator<Item = (&'a str, &'a str)>,
) -> Result<()> {
    let text: String = items
        .map(|(t, l)| {
            let mut row = serde_json::Map::new();
            row.insert("text".into(), json!(t));
            row.insert(key.into(), json!(l));
            format!("{}\n", serde_json::Value::Object(row))
        })
        .collect();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| tilpass_core::Error::io(dir, e))?;
    }
    tilpass_core::write_atomic(path, text.as_bytes())?;
    Ok(())
}
