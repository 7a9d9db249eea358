//! All cross-crate tests in one binary (each test binary links burn, so there is one).

mod batch_inputs;
mod config_compat;
mod core_device;
mod decoder_parity;
mod encoder_parity;
mod fixture_versions;
mod fuzz;
mod hostile_inputs;
mod lambert;
mod langid;
mod metrics_classification;
mod metrics_text;
mod packing;
mod param_tables;
mod peft_parity;
mod preference_losses;
mod runs;
mod sentence_embeddings;
mod seq2seq_parity;
mod stop_strings;
mod tokenize_errors;
mod tokenize_parity;
mod tokenizer_training;
mod train_parity;
