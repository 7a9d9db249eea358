//! # tilpass-metrics
//!
//! Evaluation metrics with the reference libraries' exact numbers, and what Norwegian needs on
//! top:
//!
//! | metric | reference it equals | module |
//! | --- | --- | --- |
//! | BLEU (13a / intl / char / none; exp / floor / add-k / none; effective order; several references; signature) | sacrebleu 2.6.0 | [`bleu`] |
//! | chrF, chrF++ | sacrebleu 2.6.0 | [`chrf`] |
//! | TER | sacrebleu 2.6.0 | [`ter`] |
//! | ROUGE-N / L / Lsum, Porter stemming | rouge-score 0.1.2 (+ a Unicode tokenizer with Snowball Norwegian stemming) | [`rouge`] |
//! | exact match, token F1 | SQuAD v1.1 script (+ Norwegian articles) | [`qa`] |
//! | perplexity, word / byte perplexity, bits per byte | lm-evaluation-harness definitions | [`lm`] |
//! | accuracy, P/R/F1 (macro, micro, weighted), MCC, Cohen's kappa, confusion | scikit-learn | [`classification`] |
//! | nDCG@k, MAP, MRR, recall@k, P@k; RRF | pytrec_eval (trec_eval) | [`retrieval`] |
//! | citation precision / recall of RAG answers | their definitions over qrels | [`citation`] |
//! | length stats, distinct-n, self-BLEU, seq-rep-n | their definitions | [`chat`] |
//! | nb / nn / sv / da / en identification (from `tilpass-data`) | held-out accuracy (96% nb vs nn on UD) | [`langid`] |
//! | pairwise LLM-as-judge, win rate, bootstrap CI, length control | MT-Bench verdicts, AlpacaEval-style LC | [`judge`] |
//!
//! ```
//! use tilpass_metrics::{Bleu, Chrf};
//! let hyps = ["Været i Bergen er vått og kaldt i dag."];
//! let refs = vec![vec![Some("Været i Bergen er kaldt og vått i dag.")]];
//! let bleu = Bleu::default().corpus_score(&hyps, &refs).unwrap();
//! assert_eq!(bleu.signature, "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0");
//! assert!(Chrf::default().corpus_score(&hyps, &refs).unwrap().score > 70.0);
//! ```

#![warn(missing_docs)]

pub mod bleu;
pub mod chat;
pub mod chrf;
pub mod citation;
pub mod classification;
pub mod error;
pub mod files;
pub mod judge;
pub mod lm;
pub mod ngrams;
pub mod porter;
pub mod qa;
pub mod retrieval;
pub mod rouge;
pub mod sacre_tokenize;
pub mod streams;
pub mod ter;

pub use bleu::{Bleu, BleuConfig, BleuScore, SACREBLEU_VERSION, Smooth, compute_bleu};
pub use chat::{
    LengthStats, distinct_n, language_shares, length_stats, repetition_rate, self_bleu,
};
pub use chrf::{Chrf, ChrfConfig, ChrfScore};
pub use citation::{CitationScores, citation_precision, citation_recall, citation_scores};
pub use classification::{
    ClassificationError, ClassificationReport, classification_report, cohen_kappa,
    cohen_kappa_from_confusion,
};
pub use error::{MetricsError, Result};
pub use files::{read_lines, read_qrels, read_run, read_trec};
pub use judge::{
    DEFAULT_JUDGE_TEMPLATE, JudgePair, PairOutcome, Verdict, WinRate, judge_pairs, judge_prompt,
    length_controlled_win_rate, parse_verdict, win_rate,
};
pub use lm::{LmScores, ScoredText, lm_scores};
pub use porter::porter_stem;
pub use qa::{Articles, QaScores, exact_match, normalize_answer, squad_scores, token_f1};
pub use retrieval::{Qrels, RetrievalScores, Run, evaluate_run, reciprocal_rank_fusion};
pub use rouge::{PrfScore, Rouge, RougeScores, RougeTokenizer, RougeType, StemLanguage};
pub use sacre_tokenize::SacreTokenizer;
pub use ter::{Ter, TerConfig, TerScore, tercom_tokenize, translation_edit_rate};
/// Language identification lives in `tilpass-data` (it also filters datasets); re-exported
/// here for chat-response metrics.
pub use tilpass_data::langid::{self, LangId, LangIdConfig, LangPrediction};
