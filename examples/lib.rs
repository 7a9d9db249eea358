//! Runnable examples of tilpass; see the `[[example]]` entries of this package. The
//! quickstart's flow lives here as a library function so that a test runs it.

#[path = "quickstart_lib.rs"]
pub mod quickstart;

#[path = "chat_nort5_lib.rs"]
pub mod chat_nort5;

#[path = "rag_lib.rs"]
pub mod rag;

#[path = "nynorsk_rl_lib.rs"]
pub mod nynorsk_rl;

#[path = "data_synth_lib.rs"]
pub mod data_synth;

#[path = "lambert_study_lib.rs"]
pub mod lambert_study;
