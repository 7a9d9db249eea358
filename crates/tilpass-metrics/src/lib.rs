//! # tilpass-metrics
//!
//! Evaluation metrics with the reference libraries' exact numbers.
//!
//! Implemented so far: classification metrics ([`classification_report`]: accuracy,
//! per-class and macro / micro / weighted precision, recall and F1, MCC, confusion matrix —
//! scikit-learn's definitions, checked against scikit-learn).
//!
//! Planned (issue 7): BLEU, chrF/chrF++ and TER (sacrebleu), ROUGE (rouge-score), SQuAD EM/F1,
//! perplexity and bits-per-byte, retrieval metrics (pytrec_eval), chat-response metrics,
//! language identification and pairwise LLM-as-judge.

#![warn(missing_docs)]

pub mod bleu;
pub mod chat;
pub mod chrf;
pub mod classification;
pub mod error;
pub mod judge;
pub mod langid;
pub mod lm;
pub mod ngrams;
pub mod porter;
pub mod qa;
pub mod retrieval;
pub mod rouge;
pub mod sacre_tokenize;

pub use bleu::{Bleu, BleuConfig, BleuScore, SACREBLEU_VERSION, Smooth};
pub use chat::{LengthStats, distinct_n, length_stats, repetition_rate, self_bleu};
pub use chrf::{Chrf, ChrfConfig, ChrfScore};
pub use classification::{ClassificationError, ClassificationReport, classification_report};
pub use error::{MetricsError, Result};
pub use judge::{
    DEFAULT_JUDGE_TEMPLATE, JudgePair, PairOutcome, Verdict, WinRate, judge_pairs, judge_prompt,
    length_controlled_win_rate, parse_verdict, win_rate,
};
pub use langid::{LangId, LangIdConfig, LangPrediction};
pub use lm::{LmScores, ScoredText, lm_scores};
pub use porter::porter_stem;
pub use qa::{Articles, QaScores, exact_match, normalize_answer, squad_scores, token_f1};
pub use retrieval::{Qrels, RetrievalScores, Run, evaluate_run, reciprocal_rank_fusion};
pub use rouge::{PrfScore, Rouge, RougeScores, RougeTokenizer, RougeType, StemLanguage};
pub use sacre_tokenize::SacreTokenizer;
