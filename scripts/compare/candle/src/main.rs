//! `candle-compare`: the candle side of `scripts/compare/run.sh`, the Rust library a user would
//! pick instead of tilpass (issue 19: "keep it ahead of candle in every figure").
//!
//! candle 0.11.1 on the CPU, as its own examples use it: `candle_transformers::models::llama`
//! for the standard benchmark Llama (hidden 512, 8 layers, 8 heads, intermediate 1376, vocab
//! 32000; random weights from a `VarMap`, f32, or bf16 for `greedy_decode_256_bf16`), and
//! `candle_transformers::models::bert` with the `tokenizers` crate for all-MiniLM-L6-v2.
//! The protocol is tilpass-compare's and the Python sides' (`scripts/compare/common.py`):
//! `GROUP --threads N --bench NAME:WARMUP:REPS ...`, only the work timed, one JSON object on
//! stdout.
//!
//! Benchmarks (the rest of each group has no candle counterpart, see `run.py`):
//! - decoder: `prefill_512_last` (candle's `Llama::forward` computes the LM head for the last
//!   position only, so it has no all-logits prefill), `greedy_decode_256`,
//!   `greedy_decode_256_bf16` (candle's own greedy loop: `LogitsProcessor` with
//!   `Sampling::ArgMax`, KV cache; 32 prompt tokens, 256 new), `decode_step_16/128/512` (the
//!   small model, one step after a cache of that length). No batch-8 decode: candle's Llama has
//!   no padding mask.
//! - encoder: `embed_1000`: tokenization (truncation at the model's 256 tokens, padding to the
//!   longest of each batch), sentences sorted by length as sentence-transformers sorts them,
//!   batches of 32, the forward, mean pooling over the mask and L2 normalisation.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::{VarBuilder, VarMap};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use candle_transformers::models::{bert, llama};
use serde_json::{json, Value};

/// The candle release Cargo.toml pins exactly (`=0.11.1`).
const CANDLE_VERSION: &str = "0.11.1";

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const GROUPS: &[(&str, &[&str])] = &[
    (
        "decoder",
        &[
            "prefill_512_last",
            "greedy_decode_256",
            "greedy_decode_256_bf16",
            "decode_step_16",
            "decode_step_128",
            "decode_step_512",
        ],
    ),
    ("encoder", &["embed_1000"]),
];

struct Spec {
    name: String,
    warmup: usize,
    reps: usize,
}

#[derive(Default)]
struct Report {
    benchmarks: Vec<Value>,
    checks: serde_json::Map<String, Value>,
}

impl Report {
    /// `spec.warmup` untimed and `spec.reps` timed runs of `run(setup())`: only `run` is timed.
    fn time<S, T>(
        &mut self,
        spec: &Spec,
        work: usize,
        unit: &str,
        mut setup: impl FnMut() -> Res<S>,
        mut run: impl FnMut(S) -> Res<T>,
    ) -> Res<T> {
        let peak_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
        let mut last = None;
        let mut times = Vec::new();
        for i in 0..spec.warmup + spec.reps {
            let input = setup()?;
            let start = Instant::now();
            let out = run(input)?;
            let t = start.elapsed().as_secs_f64();
            if i >= spec.warmup {
                times.push(t);
            }
            last = Some(out);
        }
        let mut sorted = times.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        self.benchmarks.push(json!({
            "name": spec.name, "work": work, "unit": unit, "warmup": spec.warmup,
            "reps": spec.reps, "times_s": times, "median_s": median,
            "peak_rss_mb": if peak_reset { peak_rss_mb() } else { None },
        }));
        last.ok_or_else(|| format!("{}: no repetitions", spec.name).into())
    }
}

/// VmHWM of /proc/self/status in MiB.
fn peak_rss_mb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The text of `path`, or an error naming it.
fn read(path: &Path) -> Res<String> {
    std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()).into())
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../..")
}

fn artefacts() -> PathBuf {
    std::env::var_os("TILPASS_ARTEFACTS").map_or_else(|| root().join("artefacts"), PathBuf::from)
}

/// The benchmarks' token ids: `(i * 7919 + 13) % 32000` (benches/compare.rs, decoder.py).
fn prompt(n: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 7919 + 13) % 32000) as u32).collect()
}

fn llama_config(hidden: usize, layers: usize, heads: usize, inter: usize) -> llama::Config {
    llama::LlamaConfig {
        hidden_size: hidden,
        intermediate_size: inter,
        vocab_size: 32000,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: Some(heads),
        rms_norm_eps: 1e-6,
        rope_theta: 10_000.0,
        bos_token_id: Some(1),
        eos_token_id: None,
        rope_scaling: None,
        max_position_embeddings: 2048,
        tie_word_embeddings: Some(false),
    }
    .into_config(false)
}

/// candle's Llama with random weights (the `VarMap` initialises every tensor it is asked for).
fn llama_model(cfg: &llama::Config, dtype: DType) -> Res<(VarMap, llama::Llama)> {
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, dtype, &Device::Cpu);
    let model = llama::Llama::load(vb, cfg)?;
    Ok((map, model))
}

/// Greedy decoding as candle's llama example does it: the prompt in one forward, then one
/// token per step with the KV cache; `new` tokens in all.
fn greedy(
    model: &llama::Llama,
    cfg: &llama::Config,
    dtype: DType,
    prompt: &[u32],
    new: usize,
) -> Res<Vec<u32>> {
    let mut cache = llama::Cache::new(true, dtype, cfg, &Device::Cpu)?;
    let mut processor = LogitsProcessor::from_sampling(0, Sampling::ArgMax);
    let mut tokens = prompt.to_vec();
    let mut index_pos = 0;
    for i in 0..new {
        let ctx = if i == 0 {
            &tokens[..]
        } else {
            &tokens[tokens.len() - 1..]
        };
        let input = Tensor::new(ctx, &Device::Cpu)?.unsqueeze(0)?;
        let logits = model.forward(&input, index_pos, &mut cache)?.squeeze(0)?;
        index_pos += ctx.len();
        tokens.push(processor.sample(&logits)?);
    }
    Ok(tokens[prompt.len()..].to_vec())
}

fn decoder(specs: &[Spec], r: &mut Report) -> Res<()> {
    let std_cfg = llama_config(512, 8, 8, 1376);
    let small_cfg = llama_config(256, 4, 4, 688);
    let need = |f: &dyn Fn(&str) -> bool| specs.iter().any(|s| f(&s.name));
    let standard = if need(&|n| !n.starts_with("decode_step_") && !n.ends_with("_bf16")) {
        Some(llama_model(&std_cfg, DType::F32)?)
    } else {
        None
    };
    let half = if need(&|n| n.ends_with("_bf16")) {
        Some(llama_model(&std_cfg, DType::BF16)?)
    } else {
        None
    };
    let small = if need(&|n| n.starts_with("decode_step_")) {
        Some(llama_model(&small_cfg, DType::F32)?)
    } else {
        None
    };
    for spec in specs {
        match spec.name.as_str() {
            "prefill_512_last" => {
                let (_, m) = standard.as_ref().ok_or("no model")?;
                let input = Tensor::new(prompt(512), &Device::Cpu)?.unsqueeze(0)?;
                let logits = r.time(
                    spec,
                    512,
                    "tokens",
                    || {
                        Ok(llama::Cache::new(
                            false,
                            DType::F32,
                            &std_cfg,
                            &Device::Cpu,
                        )?)
                    },
                    |mut cache| Ok(m.forward(&input, 0, &mut cache)?),
                )?;
                r.checks.insert(
                    "prefill_last_logits_vocab".into(),
                    json!(logits.dims().last()),
                );
            }
            "greedy_decode_256" | "greedy_decode_256_bf16" => {
                let bf16 = spec.name.ends_with("_bf16");
                let ((_, m), dtype) = if bf16 {
                    (half.as_ref().ok_or("no model")?, DType::BF16)
                } else {
                    (standard.as_ref().ok_or("no model")?, DType::F32)
                };
                let p32 = prompt(32);
                let out = r.time(
                    spec,
                    256,
                    "tokens",
                    || Ok(()),
                    |()| greedy(m, &std_cfg, dtype, &p32, 256),
                )?;
                let key = if bf16 {
                    "decode_new_tokens_bf16"
                } else {
                    "decode_new_tokens"
                };
                r.checks.insert(key.into(), json!(out.len()));
            }
            name => {
                let past: usize = name
                    .strip_prefix("decode_step_")
                    .and_then(|p| p.parse().ok())
                    .ok_or_else(|| format!("unknown decoder benchmark {name}"))?;
                let (_, m) = small.as_ref().ok_or("no model")?;
                let mut cache = llama::Cache::new(true, DType::F32, &small_cfg, &Device::Cpu)?;
                let p = Tensor::new(prompt(past), &Device::Cpu)?.unsqueeze(0)?;
                m.forward(&p, 0, &mut cache)?;
                let step = Tensor::new(&[7u32], &Device::Cpu)?.unsqueeze(0)?;
                r.time(
                    spec,
                    1,
                    "tokens",
                    || Ok(cache.clone()),
                    |mut c| Ok(m.forward(&step, past, &mut c)?),
                )?;
            }
        }
    }
    Ok(())
}

/// sentence-transformers' `encode` for all-MiniLM-L6-v2 written with candle: length-sorted
/// batches, padding per batch, mean pooling over the attention mask, L2 normalisation.
fn embed(
    model: &bert::BertModel,
    tok: &tokenizers::Tokenizer,
    sentences: &[&str],
    batch: usize,
) -> Res<Vec<Vec<f32>>> {
    let mut order: Vec<usize> = (0..sentences.len()).collect();
    // sentence-transformers sorts by -len(text) (characters), stably.
    order.sort_by_key(|&i| std::cmp::Reverse(sentences[i].chars().count()));
    let mut out = vec![Vec::new(); sentences.len()];
    for chunk in order.chunks(batch) {
        let texts: Vec<&str> = chunk.iter().map(|&i| sentences[i]).collect();
        let enc = tok.encode_batch(texts, true)?;
        let rows = enc.len();
        let len = enc[0].get_ids().len();
        let ids: Vec<u32> = enc.iter().flat_map(|e| e.get_ids().to_vec()).collect();
        let mask: Vec<u32> = enc
            .iter()
            .flat_map(|e| e.get_attention_mask().to_vec())
            .collect();
        let ids = Tensor::from_vec(ids, (rows, len), &Device::Cpu)?;
        let mask = Tensor::from_vec(mask, (rows, len), &Device::Cpu)?;
        let types = ids.zeros_like()?;
        let hidden = model.forward(&ids, &types, Some(&mask))?;
        let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&m)?.sum(1)?;
        let counts = m.sum(1)?.clamp(1e-9, f64::MAX)?;
        let mean = summed.broadcast_div(&counts)?;
        let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
        let unit = mean.broadcast_div(&norm)?;
        for (row, &i) in chunk.iter().enumerate() {
            out[i] = unit.i(row)?.to_vec1::<f32>()?;
        }
    }
    Ok(out)
}

fn encoder(specs: &[Spec], r: &mut Report) -> Res<()> {
    let text = read(&root().join("../shared/data/ud-norwegian/nob-dev.txt"))?;
    let sentences: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(1000)
        .collect();
    let dir = artefacts().join("minilm");
    if !dir.is_dir() {
        return Err(format!(
            "{} is missing: run scripts/fetch-artefacts.sh (or set TILPASS_ARTEFACTS)",
            dir.display()
        )
        .into());
    }
    let cfg: bert::Config = serde_json::from_str(&read(&dir.join("config.json"))?)?;
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(
            &[dir.join("model.safetensors")],
            DType::F32,
            &Device::Cpu,
        )?
    };
    let model = bert::BertModel::load(vb, &cfg)?;
    let mut tok = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json"))?;
    let st: Value = serde_json::from_str(&read(&dir.join("sentence_bert_config.json"))?)?;
    let max_len = st["max_seq_length"].as_u64().ok_or("no max_seq_length")? as usize;
    tok.with_truncation(Some(tokenizers::TruncationParams {
        max_length: max_len,
        ..Default::default()
    }))?;
    tok.with_padding(Some(tokenizers::PaddingParams {
        strategy: tokenizers::PaddingStrategy::BatchLongest,
        ..Default::default()
    }));
    for spec in specs {
        let vectors = r.time(
            spec,
            sentences.len(),
            "sentences",
            || Ok(()),
            |()| embed(&model, &tok, &sentences, 32),
        )?;
        r.checks.insert(
            "embeddings".into(),
            json!([vectors.len(), vectors[0].len()]),
        );
    }
    Ok(())
}

fn parse_spec(s: &str, known: &[&str]) -> Res<Spec> {
    let parts: Vec<&str> = s.split(':').collect();
    let (name, warmup, reps) = match parts.as_slice() {
        [n] => (*n, 1, 3),
        [n, w, r] => (*n, w.parse()?, r.parse()?),
        _ => return Err(format!("--bench {s}: expected NAME or NAME:WARMUP:REPS").into()),
    };
    if !known.contains(&name) {
        return Err(format!("unknown benchmark {name}; this group has {known:?}").into());
    }
    if reps < 1 {
        return Err(format!("--bench {s}: REPS must be at least 1").into());
    }
    Ok(Spec {
        name: name.into(),
        warmup,
        reps,
    })
}

fn run() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: candle-compare GROUP [--threads N] [--bench NAME[:WARMUP:REPS]]...";
    let group = args.first().ok_or(usage)?.clone();
    let known = GROUPS
        .iter()
        .find(|(g, _)| *g == group)
        .map(|(_, b)| *b)
        .ok_or_else(|| format!("unknown group {group}; {usage}"))?;
    let mut specs = Vec::new();
    let mut threads = None;
    let mut it = args[1..].iter();
    while let Some(a) = it.next() {
        let v = it.next().ok_or_else(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--bench" => specs.push(parse_spec(v, known)?),
            "--threads" => threads = Some(v.parse::<usize>()?),
            _ => return Err(format!("unknown argument {a}; {usage}").into()),
        }
    }
    if specs.is_empty() {
        specs = known
            .iter()
            .map(|n| parse_spec(n, known))
            .collect::<Res<_>>()?;
    }
    if let Some(n) = threads {
        // candle sizes gemm's and its own parallel loops by RAYON_NUM_THREADS.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()?;
    }
    let mut report = Report::default();
    match group.as_str() {
        "decoder" => decoder(&specs, &mut report)?,
        _ => encoder(&specs, &mut report)?,
    }
    println!(
        "{}",
        json!({
            "side": "candle",
            "group": group,
            "threads": candle_core::utils::get_num_threads(),
            "versions": {"candle": CANDLE_VERSION},
            "benchmarks": report.benchmarks,
            "checks": report.checks,
        })
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("candle-compare: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
