//! # tilpass-tokenize
//!
//! From text and conversations to model inputs:
//!
//! - [`Tokenizer`]: a Hugging Face tokenizer directory (`tokenizer.json`, or GPT-2
//!   `vocab.json` + `merges.txt`, or BERT `vocab.txt`; `tokenizer_config.json`,
//!   `special_tokens_map.json`, chat templates);
//! - [`ChatTemplate`]: Jinja chat templates with transformers' semantics (minijinja), including
//!   `{% generation %}` blocks; built-in [`chat_template::CHATML_TEMPLATE`] and
//!   [`chat_template::NORSK_TEMPLATE`];
//! - [`encode_chat`]: ids plus assistant-token mask (generation blocks or prefix rendering);
//! - [`SftEncoder`]: SFT examples (`input_ids`, `labels` with -100, `attention_mask`) as TRL
//!   1.16.0's `SFTTrainer` prepares them, truncation policies; [`encode_preferences`] and
//!   [`collate_preference`] for DPO pairs as TRL's `DPOTrainer` prepares and batches them
//!   (both checked against TRL itself, tests/fixtures/generate_trl.py);
//! - [`Seq2SeqEncoder`]: SFT examples for encoder-decoders (history → encoder, each assistant
//!   turn → decoder target ending in EOS), [`collate_seq2seq`] / [`seq2seq_batches`] with
//!   transformers' `_shift_right` for `decoder_input_ids`;
//! - [`Batch`]: the one padded batch (ids, labels, attention mask or packed document numbers,
//!   positions, token types, padding side), made by [`Batch::pad`] — every padding in tilpass
//!   goes through it: [`collate`] (SFT examples), [`collate_packed`] (packed rows),
//!   [`collate_preference`]; the models turn a `Batch` into their inputs;
//! - [`pack_bfd`] (TRL's best-fit-decreasing packing with per-document `position_ids` and
//!   block-diagonal attention), [`concat_packed`] (TRL's padding-free collation);
//! - [`train_tokenizer`] (BPE, Unigram, WordPiece), [`fertility`] and [`extend_vocabulary`].
//!
//! ```
//! use tilpass_tokenize::{ChatTemplate, RenderOptions, SpecialTokens};
//! let t = ChatTemplate::new("chatml", tilpass_tokenize::chat_template::CHATML_TEMPLATE, SpecialTokens::default()).unwrap();
//! let msgs = serde_json::json!([{"role": "user", "content": "Hei!"}, {"role": "assistant", "content": "Hallo!"}]);
//! let r = t.render_json(&msgs, &RenderOptions::default()).unwrap();
//! assert_eq!(r.text, "<|im_start|>user\nHei!<|im_end|>\n<|im_start|>assistant\nHallo!<|im_end|>\n");
//! assert_eq!(&r.text[r.generation_spans[0].clone()], "Hallo!<|im_end|>");
//! ```

#![warn(missing_docs)]

pub mod batch;
pub mod chat;
pub mod chat_template;
pub mod error;
pub mod extend;
pub mod packing;
pub mod preference;
pub mod seq2seq;
pub mod sft;
pub mod special;
pub mod tokenizer;
pub mod train;

pub use batch::{
    Batch, BatchRow, MAX_PACKED_DOCUMENTS, PAD_POSITION, PadSide, Padding, collate, collate_packed,
    length_grouped_batches, position_ids_from_mask,
};
pub use chat::{ChatEncoding, MaskMode, common_prefix_length, encode_chat, mask_from_spans};
pub use chat_template::{ChatTemplate, RenderOptions, RenderedChat, TemplateLimits};
pub use error::{Result, TokenizeError};
pub use extend::{ExtendConfig, ExtendReport, NewToken, extend_vocabulary};
pub use packing::{PACK_BLOCK, PackedSequence, concat_packed, pack_bfd};
pub use preference::{
    PreferenceBatch, PreferenceConfig, PreferenceExample, PreferenceReport, collate_preference,
    encode_preference, encode_preferences, preference_texts,
};
pub use seq2seq::{
    Seq2SeqBatch, Seq2SeqEncoder, Seq2SeqExample, Seq2SeqReport, Seq2SeqSftConfig, collate_seq2seq,
    plain_source, seq2seq_batches, shift_right,
};
pub use sft::{EncodeReport, IGNORE_INDEX, SftConfig, SftEncoder, SftExample, Truncation};
pub use special::SpecialTokens;
pub use tokenizer::Tokenizer;
pub use train::{Fertility, TokenizerKind, TrainConfig, fertility, train_tokenizer};
