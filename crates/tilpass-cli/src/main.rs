//! The `tilpass` command: argument parsing and printing over the library, one module per
//! command group. Machine-readable results go to stdout as JSON; progress and logs go to
//! stderr. Exit code 0 on success, 2 on bad input with a one-line cause on stderr.

/// mimalloc keeps freed tensor buffers for reuse; glibc's malloc returns large ones to the OS
/// and pays page faults to get them back (about 25% of a decoder prefill on Flex).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Tells mimalloc to keep freed memory for reuse instead of purging it back to the OS: large
/// tensors are freed and reallocated on every step, and re-faulting their zeroed pages cost
/// ~25% of a training step (docs/benchmarks.md).
fn keep_freed_memory() {
    // SAFETY: mi_option_set only stores an option value; 15 is `mi_option_purge_delay` in
    // mimalloc v2 and v3 (`include/mimalloc.h`), -1 = never purge.
    unsafe { libmimalloc_sys::mi_option_set(15, -1) };
}

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod chat;
mod common;
mod data;
mod data_clean;
mod data_gen;
mod data_quality;
mod embed;
mod generate;
mod lambert;
mod logits;
mod metrics;
mod metrics_lm;
mod peft;
mod plot;
mod rag;
mod rag_ask;
mod rag_dense;
mod rag_eval;
mod rag_rerank;
mod reward;
mod study;
mod tokenizer;
mod train;

#[derive(Parser)]
#[command(
    name = "tilpass",
    version,
    about = "Adapt language models to Norwegian and other low-resource languages"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Tokenize text or a conversation: prints {"ids", "text", "assistant_mask"}.
    Tokenize(tokenizer::TokenizeArgs),
    /// Inspect and clean datasets (JSONL or JSON, TRL formats).
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Train tokenizers, extend vocabularies, measure fertility.
    #[command(subcommand)]
    Tokenizer(tokenizer::TokenizerCommand),
    /// Logits for one sequence of any model: prints {"shape": [...], "logits": [...]}.
    ///
    /// Values are row-major f32. The head named by config.json's `architectures` decides the
    /// shape: causal and masked LMs [1, seq, vocab], sequence classifiers [1, num_labels],
    /// token classifiers [1, seq, num_labels], encoder-decoders (T5, NorT5) [1, dec_seq,
    /// vocab] over --decoder-ids. Non-finite logits (NaN/inf) exit 2.
    Logits(logits::LogitsArgs),
    /// Generate from a text prompt (--prompt) or token ids (--ids); --json for a JSON object.
    ///
    /// Decoders and encoder-decoders. Text is streamed to stdout; without a tokenizer (--ids)
    /// the new ids are printed; --json prints {"ids", "prompt_ids", "text", "stop_reason"}.
    Generate(generate::GenerateArgs),
    /// Chat with a model on stdin/stdout through its chat template.
    Chat(chat::ChatArgs),
    /// Label texts with an instruction LLM by scoring each label's verbalisation (LamBERT
    /// step 1): reads JSONL rows with a text field, writes them back with "label",
    /// "confidence" and "probabilities"; prints {"rows", "seconds", "out"}.
    Annotate(lambert::AnnotateArgs),
    /// Label a JSONL stream with a classifier trained by `tilpass train classify` (LamBERT
    /// step 3); prints throughput.
    Predict(lambert::PredictArgs),
    /// Merge the outputs of `predict` / `annotate --shard i/n` runs into the single-process
    /// output, after checking that every shard is there once, complete, of one job and input.
    MergeShards(lambert::MergeArgs),
    /// Plot a training run's metrics log (loss / eval / lr curves) as SVG and PNG: prints
    /// {"plots", "points"}.
    Plot(plot::PlotArgs),
    /// Studies: `study lambert` (which PEFT method makes the best classifier from LLM
    /// labels): prints a JSON summary; progress on stderr.
    #[command(subcommand)]
    Study(study::StudyCommand),
    /// Train adapters (LoRA SFT on a decoder, BERT classifiers).
    #[command(subcommand)]
    Train(train::TrainCommand),
    /// Reward models: score JSONL rows (`reward score`).
    #[command(subcommand)]
    Reward(reward::RewardCommand),
    /// Inspect or merge LoRA / DoRA adapters (HF PEFT format).
    #[command(subcommand)]
    Peft(peft::PeftCommand),
    /// Evaluation metrics: BLEU / chrF / chrF++ (sacrebleu-exact), ROUGE, SQuAD EM/F1, chat
    /// statistics, retrieval (trec_eval), language identification, pairwise LLM-as-judge.
    Metrics(metrics::MetricsArgs),
    /// Sentence embeddings from an encoder (BERT, NorBERT3): one --text prints
    /// {"dim", "embedding", "truncated"}; several texts or --file print one JSON line per text.
    Embed(embed::EmbedArgs),
    /// Knowledge bases for retrieval: index documents, delete them, BM25 search, answer
    /// questions with citations.
    #[command(subcommand)]
    Rag(rag::RagCommand),
}

fn main() -> ExitCode {
    keep_freed_memory();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TILPASS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    // Ctrl-C: the files being written (unique temporary names beside their targets) are
    // removed, so an interrupted command leaves neither a partial output nor a temporary.
    let _ = ctrlc::set_handler(|| {
        tilpass::core::remove_temp_files();
        tilpass::train::runs::remove_partial_outputs();
        eprintln!("error: interrupted (Ctrl-C); partial outputs removed");
        std::process::exit(130);
    });
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                    ExitCode::from(2)
                } else {
                    ExitCode::SUCCESS
                };
            }
            // Bad usage: the cause on one line (clap's usage and tips would follow it).
            let text = e.render().to_string();
            let cause: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            eprintln!("{} (see --help)", cause.join(" "));
            return ExitCode::from(2);
        }
    };
    let done = |r: tilpass::Result<()>| r.map(|()| true);
    let result = match cli.command {
        Command::Tokenize(a) => done(tokenizer::tokenize_cmd(a)),
        Command::Data(d) => data::data_cmd(d),
        Command::Tokenizer(t) => done(tokenizer::tokenizer_cmd(t)),
        Command::Logits(a) => done(logits::logits_cmd(a)),
        Command::Generate(a) => done(generate::generate_cmd(a)),
        Command::Chat(a) => done(chat::chat_cmd(a)),
        Command::Embed(a) => done(embed::embed_cmd(a)),
        Command::Peft(c) => done(peft::peft_cmd(c)),
        Command::Annotate(a) => done(lambert::annotate_cmd(a)),
        Command::Train(c) => done(train::train_cmd(c)),
        Command::Reward(c) => done(reward::reward_cmd(c)),
        Command::Predict(a) => done(lambert::predict_cmd(a)),
        Command::MergeShards(a) => done(lambert::merge_cmd(a)),
        Command::Plot(a) => done(plot::plot_cmd(a)),
        Command::Study(c) => done(study::study_cmd(c)),
        Command::Metrics(a) => done(metrics::metrics_cmd(a)),
        Command::Rag(c) => done(rag::rag_cmd(c)),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("error: {}", e.to_string().replace('\n', " "));
            for line in common::take_after_error() {
                eprintln!("{line}");
            }
            ExitCode::from(2)
        }
    }
}
