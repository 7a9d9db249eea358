//! In-process A/B of the BERT inference paths (issue 19 / 20 work): the same batches through
//! the padded burn-op path (`Bert::forward_hidden`, then the pooler) and the packed fused
//! path (`Bert::classify`, `Bert::forward_hidden_real`), alternating within one process so
//! that both see the same machine load; prints the per-round times and the median ratio.
//!
//!     encoder-ab MODEL_DIR TEXTS(.jsonl with "text", or lines) [--threads N] [--rounds R]
//!         [--batch B] [--max-len L] [--limit N] [--embed]
//!
//! Batches as `tilpass predict`: rows sorted by token length, `B` at a time, truncated to
//! `L` tokens. `--embed` compares hidden states for pooling (`forward_hidden` against
//! `forward_hidden_real`) instead of the classifier. Also prints how far apart the two paths'
//! hidden states are at real tokens.

#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::error::Error;
use std::time::Instant;

use tilpass::models::{Bert, EncoderInput, EncoderModel};
use tilpass::tokenize::{Batch, Padding, Tokenizer};

type Res<T> = Result<T, Box<dyn Error>>;

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "encoder-ab MODEL_DIR TEXTS [--threads N] [--rounds R] [--batch B] \
                 [--max-len L] [--limit N] [--embed]";
    let (mut threads, mut rounds, mut batch, mut max_len, mut limit, mut embed) =
        (2usize, 5usize, 32usize, 128usize, usize::MAX, false);
    let mut pos = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut num = || -> Res<usize> { Ok(it.next().ok_or(usage)?.parse()?) };
        match a.as_str() {
            "--threads" => threads = num()?,
            "--rounds" => rounds = num()?,
            "--batch" => batch = num()?,
            "--max-len" => max_len = num()?,
            "--limit" => limit = num()?,
            "--embed" => embed = true,
            _ => pos.push(a.clone()),
        }
    }
    let [dir, texts] = pos.as_slice() else {
        return Err(usage.into());
    };
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()?;
    #[cfg(not(feature = "system-alloc"))]
    tilpass_benches::keep_freed_memory();
    let device = tilpass::device("flex")?;
    let model = match EncoderModel::load(dir, &device)? {
        EncoderModel::Bert(m) => m,
        _ => return Err("a BERT model is needed".into()),
    };
    let tok = Tokenizer::from_dir(dir)?;
    let raw = std::fs::read_to_string(texts)?;
    let lines: Vec<String> = raw
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(limit)
        .map(|l| match serde_json::from_str::<serde_json::Value>(l) {
            Ok(v) if v["text"].is_string() => v["text"].as_str().unwrap_or_default().to_string(),
            _ => l.to_string(),
        })
        .collect();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let mut ids = tok.encode_batch_truncated(&refs, max_len)?;
    ids.sort_by_key(|r| std::cmp::Reverse(r.len()));
    let pad = model.config().pad_token_id.unwrap_or(0);
    let inputs: Vec<EncoderInput> = ids
        .chunks(batch)
        .map(|c| EncoderInput::from_batch(&Batch::from_ids(c, Padding::right(pad))))
        .collect::<Result<_, _>>()?;
    let real: usize = ids.iter().map(Vec::len).sum();
    let padded: usize = inputs.iter().map(|i| i.batch * i.seq).sum();
    println!(
        "{} texts, {} batches, {real} real tokens, {padded} padded ({:.1}% padding)",
        ids.len(),
        inputs.len(),
        100.0 * (1.0 - real as f64 / padded as f64)
    );
    let diff = check(&model, &inputs[0])?;
    println!("max |old - new| of the hidden states at real tokens, first batch: {diff:.2e}");
    let mut ratios = Vec::new();
    for r in 0..rounds {
        let old = time(|| run(&model, &inputs, embed, false))?;
        let new = time(|| run(&model, &inputs, embed, true))?;
        println!(
            "round {r}: old {old:.3} s, new {new:.3} s, old/new {:.2}",
            old / new
        );
        ratios.push(old / new);
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "median old/new {:.2} (range {:.2}-{:.2}), load average {}",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1],
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split(' ')
            .next()
            .unwrap_or("?")
    );
    Ok(())
}

fn time(f: impl Fn() -> Res<()>) -> Res<f64> {
    let t = Instant::now();
    f()?;
    Ok(t.elapsed().as_secs_f64())
}

/// The old (padded) or new (packed) path over every batch, results read back to the host.
fn run(model: &Bert, inputs: &[EncoderInput], embed: bool, new: bool) -> Res<()> {
    for input in inputs {
        let out = output(model, input, embed, new)?;
        std::hint::black_box(out);
    }
    Ok(())
}

fn output(model: &Bert, input: &EncoderInput, embed: bool, new: bool) -> Res<Vec<f32>> {
    let t = match (embed, new) {
        (true, false) => model.forward_hidden(input)?.flatten::<1>(0, 2),
        (true, true) => model.forward_hidden_real(input)?.flatten::<1>(0, 2),
        (false, false) => model
            .pooled(model.forward_hidden(input)?)?
            .flatten::<1>(0, 1),
        (false, true) => model.classify(input)?.flatten::<1>(0, 1),
    };
    Ok(t.into_data()
        .try_into_vec::<f32>()
        .map_err(|e| format!("{e:?}"))?)
}

/// Max |difference| between the paths' hidden states at real tokens (`--embed`; the
/// classifier's logits are checked against transformers by the encoder parity tests).
fn check(model: &Bert, input: &EncoderInput) -> Res<f32> {
    let (a, b) = (
        output(model, input, true, false)?,
        output(model, input, true, true)?,
    );
    let h = a.len() / input.attention_mask.len();
    Ok(a.iter()
        .zip(&b)
        .enumerate()
        .filter(|(i, _)| input.attention_mask[i / h] == 1)
        .map(|(_, (x, y))| (x - y).abs())
        .fold(0.0, f32::max))
}
