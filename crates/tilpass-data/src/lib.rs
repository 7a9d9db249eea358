//! # tilpass-data
//!
//! Datasets for adapting language models, in the formats TRL uses:
//!
//! - [`Record`]: language modelling (`text` / `messages`), prompt-only, prompt-completion,
//!   preference (explicit or implicit prompt) and unpaired preference, plus Alpaca rows
//!   converted to `messages`;
//! - [`read_dataset`] for JSONL and JSON files, with errors naming file, line and field and a
//!   `skip_invalid` mode that counts and reports what it dropped; [`stream_records`] for files
//!   too large to hold;
//! - filters: [`dedup`] (exact or normalised) and [`LengthFilter`];
//! - near-duplicates: [`minhash`] (MinHash equal to datasketch's, over word or character
//!   shingles), [`lsh`] (banding with datasketch's optimal `(b, r)`) and [`near_dedup`]
//!   (clusters, the first row of each kept);
//! - personal data: [`pii`] finds and redacts e-mail addresses, Norwegian phone numbers,
//!   fødselsnummer / D-numbers and account numbers (mod-11 checked) and URLs with typed
//!   placeholders (`[EPOST]`, `[TELEFON]`, `[FØDSELSNUMMER]`, `[KONTONUMMER]`, `[URL]`);
//!   [`raw_rows`] keeps rows as written so cleaned rows pass through unchanged;
//! - [`stats()`]: rows, kinds, turns, characters per role;
//! - [`LangId`]: language identification (Bokmål, Nynorsk, Swedish, Danish, English, or labels
//!   you train), e.g. to keep only Nynorsk rows;
//! - [`quality`]: quality filters with a reason per rule (language, length, ratios, the Gopher
//!   repetition rules, n-gram perplexity); [`card`]: Markdown data cards with histograms;
//!   [`chart`]: line and point charts as SVG and PNG (`tilpass plot`, the LamBERT study);
//! - [`embedded::norsk_chat`] and [`embedded::norsk_pref`]: the project's own Norwegian chat
//!   and preference datasets (CC0), compiled in; [`DatasetSpec`] names a file or a built-in set
//!   (`builtin:norsk-chat[:eval]`, `builtin:norsk-pref[:eval]`) and [`load_records`] reads
//!   either.
//!
//! ```
//! use tilpass_data::{Record, RecordKind};
//! let row = serde_json::json!({"instruction": "Oversett til nynorsk", "input": "Jeg er glad.", "output": "Eg er glad."});
//! let rec = Record::from_json(&row, None).unwrap();
//! assert_eq!(rec.kind(), RecordKind::LanguageModeling);
//! assert!(rec.is_conversational());
//! ```

#![warn(missing_docs)]

pub mod embedded;
pub mod error;
pub mod filter;
pub mod langid;
// Quality filters and data cards (issue 21).
pub mod card;
pub mod chart;
pub mod lsh;
pub mod minhash;
pub mod near_dedup;
pub mod nprandom;
pub mod pii;
pub mod quality;
pub mod raw_rows;
pub mod reader;
pub mod record;
pub mod spec;
pub mod stats;

pub use embedded::{PreferenceExample, Rejection};
pub use error::{DataError, Location, RecordError, Result};
pub use filter::{DedupKey, DedupReport, LengthFilter, dedup, dedup_indices, normalize_text};
pub use langid::{LangId, LangIdConfig, LangPrediction};
pub use near_dedup::{
    NearDedup, NearDedupConfig, NearDedupReport, NearDuplicate, near_dedup_texts,
};
pub use pii::{PiiKind, PiiMatch, find_pii, redact};
pub use reader::{
    Dataset, JsonlRows, ReadOptions, ReadReport, SkippedRow, read_dataset, stream_records,
    write_jsonl,
};
pub use record::{Content, Message, Record, RecordKind, Role, parse_messages};
pub use spec::{BUILTIN_PREFIX, DatasetSpec, load_records};
pub use stats::{DatasetStats, Summary, stats};

#[cfg(test)]
mod tests;
