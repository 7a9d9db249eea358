//! `tilpass-compare`: the tilpass side of `scripts/compare/run.sh`. One process times one group
//! of fixed-work benchmarks — the same work, inputs, warm-up and repetitions as the matching
//! `scripts/compare/<group>.py` — and prints one JSON object on stdout. Setup (writing and
//! loading the model, tokenizing, building the data, copying caches) is outside the timed
//! region, and so is dropping each repetition's result (Python's side does the same).
//!
//! ```text
//! tilpass-compare GROUP [--threads N] [--device DEV] [--bench NAME[:WARMUP:REPS]]...
//! GROUP: sft_encode | decoder | encoder | predict | train | dpo_step | grpo_step | metrics | minhash | rag
//! tilpass-compare rag_prepare | rag_rss      (the rag group's cached inputs; its memory child)
//! ```
//!
//! Without `--bench`, every benchmark of the group runs with 1 warm-up and 3 repetitions.
//! `--device` (default `flex`) takes a device string of `tilpass::device` (`cuda`, `wgpu`, ...;
//! the binary must be built with that backend's feature, e.g. `--features tilpass/cuda`); the
//! clock of each repetition stops after the device has finished its queued work.
//! Built in release mode with mimalloc keeping freed memory, as the `tilpass` binary runs
//! (`--features system-alloc`: the system allocator instead). With `TILPASS_PERF_CTL` and
//! `TILPASS_PERF_ACK` set, `perf record` samples only the timed repetitions
//! (`scripts/compare/profile.sh`). Benchmarks with a FLOP count print their MFU.

/// The allocator the `tilpass` binary uses (see its `main.rs`); the `system-alloc` feature
/// leaves the system allocator in place instead, as a library user's program has by default.
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::error::Error;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{Value, json};
use tilpass::burn::tensor::Device;
use tilpass::data::{Message, Record, Role};
use tilpass::metrics::{Bleu, Chrf};
use tilpass::models::{
    DecoderInput, DecoderLm, GenerateConfig, KvCache, SentenceEmbedder, WeightDtype,
    generate_greedy, shifted_log_probs,
};
// The trainer runs the backward on the Rayon pool (tilpass_models::pool); the steps here too.
use tilpass::models::pool::on_pool;
use tilpass::peft::{LoraConfig, PeftModel};
use tilpass::preference::{DpoBatch, DpoConfig, DpoReference, dpo_batch_loss};
use tilpass::tokenize::{SftConfig, SftEncoder, Tokenizer};
use tilpass::train::{
    AdamW, AdamWConfig, LmBatch, causal_lm_loss, clip_global_norm, collect_grads,
};
use tilpass_benches::{Shape, write_random_llama};

#[path = "compare_fma.rs"]
mod fma;
#[path = "compare_kernel.rs"]
mod kernel;
#[path = "compare_rag.rs"]
mod rag;

type Res<T> = Result<T, Box<dyn Error>>;

/// The benchmarks of each group, in the order they run.
const GROUPS: &[(&str, &[&str])] = &[
    ("sft_encode", &["sft_encode_1000"]),
    (
        "decoder",
        &[
            "prefill_512",
            "prefill_512_last",
            "greedy_decode_256",
            "greedy_decode_256_b8",
            "greedy_decode_256_bf16",
            "greedy_decode_256_gemm",
            "greedy_decode_256_b8_gemm",
            "prefill_512_plain",
            "greedy_decode_256_plain",
            "prefill_512_sleeping",
            "greedy_decode_256_sleeping",
            "greedy_decode_256_b8_sleeping",
            "decode_step_16_sleeping",
            "decode_step_512_sleeping",
            "decode_step_16",
            "decode_step_128",
            "decode_step_512",
        ],
    ),
    ("encoder", &["embed_1000", "embed_1000_sleeping"]),
    ("predict", &["predict_minilm", "predict_base"]),
    (
        "train",
        &[
            "lora_sft_step",
            "lora_sft_step_2k",
            "lora_sft_step_2k_recompute",
            "lora_sft_step_8k",
            "lora_sft_step_8k_keep",
            "t5_lora_sft_step",
            "lora_sft_step_unfused",
            "lora_sft_step_logits",
            "lora_sft_step_composed",
            "t5_lora_sft_step_composed",
            "lora_sft_step_sleeping",
            "lm_head_loss",
            "lm_head_loss_logits",
        ],
    ),
    ("dpo_step", &["dpo_step"]),
    ("grpo_step", &["grpo_generate", "grpo_train"]),
    ("metrics", &["corpus_bleu", "corpus_chrf"]),
    ("rag", rag::BENCHES),
    ("minhash", &["minhash_100k", "lsh_100k"]),
];

/// One benchmark to run: its name, untimed warm-up runs and timed repetitions.
struct Spec {
    name: String,
    warmup: usize,
    reps: usize,
}

/// Collects the timings and checks of one process.
struct Report {
    benchmarks: Vec<Value>,
    checks: serde_json::Map<String, Value>,
    /// Further fields of the JSON report (the rag group's rankings, recall and memory).
    extra: serde_json::Map<String, Value>,
    /// The machine's measured f32 matmul peak in GFLOP/s ([`measure_peak_gflops`]), measured
    /// at the first benchmark that counts its FLOPs.
    peak_gflops: Option<f64>,
    /// The cores' FMA ceiling ([`fma::measure`]), measured with `peak_gflops`: the roofline
    /// that `scripts/compare/run.py` reports both sides' rates against.
    fma_peak: Option<fma::FmaPeak>,
    /// gemm's f32 microkernel alone ([`kernel::measure`]), measured with `peak_gflops`: the
    /// most any product through gemm can reach here, reported next to the ceiling.
    kernel_rate: Option<kernel::KernelRate>,
    /// The machine's measured read bandwidth in GB/s ([`measure_read_gbs`]), measured at the
    /// first benchmark that counts the bytes it must read.
    read_gbs: Option<f64>,
}

impl Report {
    /// Runs `spec.warmup` untimed and `spec.reps` timed repetitions of `run(setup())`; only
    /// `run` is timed (not `setup`, not dropping the result). `work` units of `unit` are done
    /// per run. Returns the last run's result, for the checks.
    fn time<S, T>(
        &mut self,
        spec: &Spec,
        work: usize,
        unit: &str,
        mut setup: impl FnMut() -> Res<S>,
        mut run: impl FnMut(S) -> Res<T>,
    ) -> Res<T> {
        let mut last = None;
        let mut times = Vec::with_capacity(spec.reps);
        let mut perf = PerfControl::from_env()?;
        // `_sleeping`: the same benchmark with the pool's idle threads left to sleep between
        // kernels instead of polling (`tilpass_models::pool::set_polling`); tilpass-only.
        tilpass::models::pool::set_polling(!spec.name.ends_with("_sleeping"));
        // The process's peak resident memory is measured from here (Linux; where the reset is
        // refused, the peak is not given: it would include earlier benchmarks).
        let peak_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
        for i in 0..spec.warmup + spec.reps {
            let input = setup()?;
            let timed = i >= spec.warmup;
            if timed && let Some(p) = &mut perf {
                p.send("enable")?;
            }
            let start = Instant::now();
            let out = run(input)?;
            sync_device()?;
            let t = start.elapsed().as_secs_f64();
            if timed && let Some(p) = &mut perf {
                p.send("disable")?;
            }
            if i >= spec.warmup {
                times.push(t);
            }
            last = Some(out);
        }
        let mut sorted = times.clone();
        sorted.sort_by(f64::total_cmp);
        self.benchmarks.push(json!({
            "name": spec.name, "work": work, "unit": unit, "warmup": spec.warmup,
            "reps": spec.reps, "times_s": times, "median_s": median(&sorted),
            "peak_rss_mb": if peak_reset { peak_rss_mb() } else { None },
        }));
        last.ok_or_else(|| format!("{}: no repetitions", spec.name).into())
    }

    /// Records timings measured elsewhere (e.g. reported by a trainer per step): the first
    /// `spec.warmup` of `all` are the warm-up, the next `spec.reps` the timed repetitions.
    fn record(&mut self, spec: &Spec, work: usize, unit: &str, all: &[f64]) -> Res<()> {
        let times: Vec<f64> = all
            .iter()
            .skip(spec.warmup)
            .take(spec.reps)
            .copied()
            .collect();
        if let Some(t) = times.iter().find(|t| !t.is_finite()) {
            return Err(format!("{}: a timing is {t}", spec.name).into());
        }
        if times.len() < spec.reps {
            return Err(format!(
                "{}: {} timings for {} repetitions",
                spec.name,
                times.len(),
                spec.reps
            )
            .into());
        }
        let mut sorted = times.clone();
        sorted.sort_by(f64::total_cmp);
        self.benchmarks.push(json!({
            "name": spec.name, "work": work, "unit": unit, "warmup": spec.warmup,
            "reps": spec.reps, "times_s": times, "median_s": median(&sorted),
        }));
        Ok(())
    }

    /// Adds the model FLOPs of one run of the benchmark just timed (`model_gflop`), the
    /// achieved rate over its median (`gflops`) and the MFU (that rate over the measured f32
    /// peak, `mfu`) to its JSON entry, and prints them on stderr.
    fn flops(&mut self, flop_per_run: f64) -> Res<()> {
        let peak = match self.peak_gflops {
            Some(p) => p,
            None => {
                let p = measure_peak_gflops()?;
                let (backend, n) = if on_flex() {
                    ("Flex", 1024)
                } else {
                    (DEVICE_SPEC.get().map_or("?", String::as_str), 4096)
                };
                eprintln!(
                    "tilpass-compare: f32 peak ({backend} matmul {n}x{n}x{n}): {p:.1} GFLOP/s"
                );
                self.peak_gflops = Some(p);
                // The cores' FMA ceiling is the CPU's roofline: not measured for a GPU.
                self.fma_peak = if on_flex() { fma::measure() } else { None };
                if let Some(f) = &self.fma_peak {
                    eprintln!(
                        "tilpass-compare: FMA ceiling ({}, every pool thread): {:.1} GFLOP/s",
                        f.isa, f.gflops
                    );
                }
                self.kernel_rate = if on_flex() { kernel::measure() } else { None };
                if let Some(k) = &self.kernel_rate {
                    eprintln!(
                        "tilpass-compare: gemm's f32 microkernel alone ({}, packed operands in \
                         cache, every pool thread): {:.1} GFLOP/s",
                        k.name, k.gflops
                    );
                }
                p
            }
        };
        let Some(Value::Object(b)) = self.benchmarks.last_mut() else {
            return Err("no benchmark to annotate".into());
        };
        let median = b["median_s"].as_f64().unwrap_or(f64::NAN);
        let gflops = flop_per_run / median / 1e9;
        let mfu = gflops / peak;
        eprintln!(
            "tilpass-compare: {}: {:.1} model GFLOP per run, {gflops:.1} GFLOP/s, MFU {:.1}%",
            b["name"].as_str().unwrap_or("?"),
            flop_per_run / 1e9,
            100.0 * mfu
        );
        b.insert("model_gflop".into(), json!(flop_per_run / 1e9));
        b.insert("gflops".into(), json!(gflops));
        b.insert("mfu".into(), json!(mfu));
        Ok(())
    }

    /// Adds the weight bytes one run must read from memory at least (`weight_gb`: a decode
    /// step reads every weight once), the achieved rate over its median (`weight_gbs`) and the
    /// memory-bandwidth utilisation (that rate over the measured read bandwidth, `mbu`) to its
    /// JSON entry, and prints them on stderr. Decoding is bound by this, not by FLOPs.
    fn bytes(&mut self, bytes_per_run: f64) -> Res<()> {
        // The CPU's read bandwidth is the roofline on Flex only; on a GPU the rate alone.
        let peak = match (on_flex(), self.read_gbs) {
            (false, _) => None,
            (true, Some(p)) => Some(p),
            (true, None) => {
                let p = measure_read_gbs();
                eprintln!(
                    "tilpass-compare: read bandwidth (256 MiB over the Rayon pool): {p:.1} GB/s"
                );
                self.read_gbs = Some(p);
                Some(p)
            }
        };
        let Some(Value::Object(b)) = self.benchmarks.last_mut() else {
            return Err("no benchmark to annotate".into());
        };
        let median = b["median_s"].as_f64().unwrap_or(f64::NAN);
        let gbs = bytes_per_run / median / 1e9;
        b.insert("weight_gb".into(), json!(bytes_per_run / 1e9));
        b.insert("weight_gbs".into(), json!(gbs));
        if let Some(peak) = peak {
            eprintln!(
                "tilpass-compare: {}: {:.2} GB of weights read per run, {gbs:.1} GB/s, MBU {:.1}%",
                b["name"].as_str().unwrap_or("?"),
                bytes_per_run / 1e9,
                100.0 * gbs / peak
            );
            b.insert("mbu".into(), json!(gbs / peak));
        }
        Ok(())
    }

    fn check(&mut self, key: &str, v: Value) {
        self.checks.insert(key.into(), v);
    }
}

/// `perf record --control fifo:CTL,ACK -D -1` driven from inside: with `TILPASS_PERF_CTL=CTL`
/// and `TILPASS_PERF_ACK=ACK` set (scripts/compare/profile.sh), sampling is enabled only
/// around the timed repetitions (not setup, warm-up or dropping results).
struct PerfControl {
    ctl: std::fs::File,
    ack: std::io::BufReader<std::fs::File>,
}

impl PerfControl {
    fn from_env() -> Res<Option<Self>> {
        let (Some(ctl), Some(ack)) = (
            std::env::var_os("TILPASS_PERF_CTL"),
            std::env::var_os("TILPASS_PERF_ACK"),
        ) else {
            return Ok(None);
        };
        let ctl = std::fs::OpenOptions::new().write(true).open(ctl)?;
        let ack = std::io::BufReader::new(std::fs::File::open(ack)?);
        Ok(Some(Self { ctl, ack }))
    }

    /// Sends `enable` / `disable` and waits for perf's acknowledgement.
    fn send(&mut self, cmd: &str) -> Res<()> {
        use std::io::{BufRead, Write};
        writeln!(self.ctl, "{cmd}")?;
        self.ctl.flush()?;
        let mut line = String::new();
        self.ack.read_line(&mut line)?;
        Ok(())
    }
}

/// The process's peak resident memory in MiB since the last reset (`VmHWM` of
/// /proc/self/status; [`Report::time`] resets it through /proc/self/clear_refs before the
/// warm-up), `None` where there is no such file or field. Process-wide: the model and inputs included.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Median of sorted values (mean of the middle two for an even count), as Python's
/// `statistics.median`.
fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The device's f32 peak as burn's matmul reaches it there: the best of 10 timed `[n, n] x
/// [n, n]` matmuls (after 2 untimed), in GFLOP/s (`2 * n^3` FLOPs each); `n` is 1024 on Flex
/// and 4096 on a GPU (where 1024² is too small to fill the chip; 4096² f32 stays under wgpu's
/// default 128 MiB limit on one storage binding).
fn measure_peak_gflops() -> Res<f64> {
    use tilpass::burn::tensor::{Distribution, Tensor};
    let device = bench_device()?;
    let n = if on_flex() { 1024 } else { 4096 };
    let a = Tensor::<2>::random([n, n], Distribution::Default, &device);
    let b = Tensor::<2>::random([n, n], Distribution::Default, &device);
    sync_device()?;
    let mut best = f64::INFINITY;
    for i in 0..12 {
        let start = Instant::now();
        let c = a.clone().matmul(b.clone());
        sync_device()?;
        let t = start.elapsed().as_secs_f64();
        drop(c);
        if i >= 2 {
            best = best.min(t);
        }
    }
    Ok(2.0 * (n as f64).powi(3) / best / 1e9)
}

/// The machine's read bandwidth as the decode kernels could use it: the best of 5 sums of a
/// 256 MiB f32 buffer split over the Rayon pool and run from inside it (as the models'
/// forwards run, `tilpass_models::pool`), with the CPU's vector width (after 1 untimed), in
/// GB/s.
fn measure_read_gbs() -> f64 {
    use rayon::prelude::*;
    /// 64 independent sums (four 512-bit or eight 256-bit accumulators): the loads, not the
    /// additions, set the pace. Indexed fixed-size blocks, not iterator adapters: a `zip`
    /// left un-inlined in this crate's codegen units made the loop scalar and the "bandwidth"
    /// a third of what the decode kernel itself reads.
    #[inline(always)]
    #[allow(clippy::needless_range_loop)] // indexed on purpose (see above)
    fn sum(c: &[f32]) -> f32 {
        let mut acc = [0f32; 64];
        for ch in c.chunks_exact(64) {
            let ch: &[f32; 64] = ch.try_into().unwrap_or(&[0.0; 64]);
            for j in 0..64 {
                acc[j] += ch[j];
            }
        }
        acc.iter().sum()
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn sum_avx2(c: &[f32]) -> f32 {
        sum(c)
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn sum_avx512(c: &[f32]) -> f32 {
        sum(c)
    }
    fn sum_wide(c: &[f32]) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            return unsafe { sum_avx512(c) };
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            return unsafe { sum_avx2(c) };
        }
        sum(c)
    }
    let n: usize = 64 << 20;
    let v: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
    let parts = 2 * rayon::current_num_threads();
    let mut best = f64::INFINITY;
    for i in 0..6 {
        let t = rayon::scope(|_| {
            let start = Instant::now();
            let total: f32 = v.par_chunks(n.div_ceil(parts)).map(sum_wide).sum();
            std::hint::black_box(total);
            start.elapsed().as_secs_f64()
        });
        if i >= 1 {
            best = best.min(t);
        }
    }
    (n * 4) as f64 / best / 1e9
}

/// Model FLOPs of a Llama [`Shape`] (heads = key/value heads):
/// - `n`: the matmul weights (no embedding): `L·(4h² + 3·h·inter) + h·V`; a forward pass
///   costs `2n` per token;
/// - `attn(ctx)`: attention's score and value products for one token over `ctx` positions,
///   `4·L·h·ctx` (the full rows as computed, masked positions included).
struct Flops {
    n: f64,
    lh: f64,
}

impl Flops {
    fn of(s: &Shape) -> Self {
        let (h, i, l, v) = (
            s.hidden as f64,
            s.inter as f64,
            s.layers as f64,
            s.vocab as f64,
        );
        Self {
            n: l * (4.0 * h * h + 3.0 * h * i) + h * v,
            lh: l * h,
        }
    }

    /// A forward pass of `batch` rows of `seq` new tokens after `past` cached ones:
    /// `batch·seq·2n + batch·Σ_t 4·L·h·(past + seq)` (every query row spans the whole context).
    fn forward(&self, batch: usize, seq: usize, past: usize) -> f64 {
        let (b, s) = (batch as f64, seq as f64);
        b * s * (2.0 * self.n + 4.0 * self.lh * (past + seq) as f64)
    }

    /// A LoRA step over `batch × seq` tokens with `lora` adapter weights: the frozen weights'
    /// forward and the backward of their activations (`4n` per token, no weight gradients),
    /// the adapters' forward and backward (`6·lora` per token), and attention's forward and
    /// backward (3x its forward).
    fn lora_step(&self, batch: usize, seq: usize, lora: f64) -> f64 {
        let t = (batch * seq) as f64;
        t * (4.0 * self.n + 6.0 * lora + 3.0 * 4.0 * self.lh * seq as f64)
    }
}

/// Model FLOPs of one LoRA step of the T5 benchmark model ([`tilpass_benches::t5_standard_config`],
/// gated feed-forward) over `batch` rows of `src` source and `tgt` target tokens with rank-`r`
/// adapters on q/k/v/o of every attention, counted as [`Flops::lora_step`] counts a decoder's:
/// `4·params·tokens` for the frozen weights (encoder layers over source tokens, cross-attention
/// keys / values over source tokens, decoder layers and the head over target tokens),
/// `6·params·tokens` for the adapters, and attention's products 3x their forward (every query
/// row spanning all keys). 130.7 GFLOP for 4 × (256 + 64) at r = 16, as PyTorch's
/// `FlopCounterMode` counts the reference step (forward and backward).
fn t5_lora_step_flops(batch: usize, src: usize, tgt: usize, r: usize) -> f64 {
    let c = tilpass_benches::t5_standard_config();
    let get = |k: &str| c[k].as_f64().unwrap_or(0.0);
    let (d, ff, v) = (get("d_model"), get("d_ff"), get("vocab_size"));
    let (le, ld) = (get("num_layers"), get("num_decoder_layers"));
    let inner = get("num_heads") * get("d_kv");
    let (b, s, t) = (batch as f64, src as f64, tgt as f64);
    let attn = 4.0 * d * inner;
    let ffn = 3.0 * d * ff;
    let enc = le * (attn + ffn) * b * s;
    let cross_kv = ld * 2.0 * d * inner * b * s;
    let dec = (ld * (attn + 2.0 * d * inner + ffn) + d * v) * b * t;
    let lora =
        2.0 * d * r as f64 * (le * 4.0 * b * s + ld * (4.0 + 2.0) * b * t + ld * 2.0 * b * s);
    let scores = 3.0 * 4.0 * inner * b * (le * s * s + ld * t * t + ld * t * s);
    4.0 * (enc + cross_kv + dec) + 6.0 * lora + scores
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn artefacts() -> PathBuf {
    std::env::var_os("TILPASS_ARTEFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("artefacts"))
}

/// The shared Bokmål sentences, one per line.
fn nob_dev() -> Res<String> {
    let path = root().join("../shared/data/ud-norwegian/nob-dev.txt");
    std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()).into())
}

fn need_dir(dir: &Path) -> Res<()> {
    if dir.is_dir() {
        Ok(())
    } else {
        Err(format!(
            "{} is missing: run scripts/fetch-artefacts.sh or set TILPASS_ARTEFACTS",
            dir.display()
        )
        .into())
    }
}

/// The token ids every decoder benchmark feeds: `(i * 7919 + 13) % vocab`.
fn prompt(n: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 7919 + 13) % 32000) as u32).collect()
}

/// The 8 prompts of `greedy_decode_256_b8`: row `r` has `32 - 2r` tokens
/// `(i * 7919 + 13 + 101 r) % vocab` (generation left-pads them, as decoder.py does).
fn prompts_b8() -> Vec<Vec<u32>> {
    (0..8)
        .map(|r| {
            (0..32 - 2 * r)
                .map(|i| ((i * 7919 + 13 + 101 * r) % 32000) as u32)
                .collect()
        })
        .collect()
}

/// The device string of `--device` (default `flex`), set once in [`run`].
static DEVICE_SPEC: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The device the benchmarks run on (`--device`, default Flex).
fn bench_device() -> Res<Device> {
    Ok(tilpass::device(
        DEVICE_SPEC.get().map_or("flex", String::as_str),
    )?)
}

/// Whether the benchmarks run on Flex (the CPU): the FMA ceiling and the read bandwidth are
/// the CPU's, measured only then.
fn on_flex() -> bool {
    DEVICE_SPEC.get().is_none_or(|d| d == "flex")
}

/// Waits until the benchmark device has finished its queued work (a no-op on Flex, which
/// computes eagerly), so that a timed repetition includes its kernels on a GPU.
fn sync_device() -> Res<()> {
    bench_device()?
        .sync()
        .map_err(|e| format!("synchronising the device: {e:?}").into())
}

/// Writes a random Llama checkpoint of `shape` into a temporary directory and loads it.
fn llama(shape: &Shape, device: &Device) -> Res<(tempfile::TempDir, DecoderLm)> {
    let dir = tempfile::tempdir()?;
    write_random_llama(dir.path(), shape);
    let model = DecoderLm::load(dir.path(), device)?;
    Ok((dir, model))
}

const STANDARD: Shape = Shape {
    hidden: 512,
    layers: 8,
    heads: 8,
    inter: 1376,
    vocab: 32000,
};

const SMALL: Shape = Shape {
    hidden: 256,
    layers: 4,
    heads: 4,
    inter: 688,
    vocab: 32000,
};

/// 1,000 two-turn conversations of the shared sentences, the `norsk` template, the Mistral
/// tokenizer: render + tokenize + assistant mask + labels (`SftEncoder::encode_all`).
fn sft_encode(specs: &[Spec], r: &mut Report) -> Res<()> {
    let text = nob_dev()?;
    let lines: Vec<&str> = text.lines().collect();
    let records: Vec<Record> = (0..1000)
        .map(|i| Record::Conversation {
            messages: vec![
                Message::new(Role::User, lines[(2 * i) % lines.len()]),
                Message::new(Role::Assistant, lines[(2 * i + 1) % lines.len()]),
            ],
        })
        .collect();
    let dir = artefacts().join("mistral");
    need_dir(&dir)?;
    let tok = Tokenizer::from_dir(&dir)?;
    let enc = SftEncoder::new(
        &tok,
        SftConfig {
            chat_template: Some("norsk".into()),
            ..Default::default()
        },
    )?;
    for spec in specs {
        let (examples, _) = r.time(
            spec,
            records.len(),
            "conversations",
            || Ok(()),
            |()| Ok(enc.encode_all(&records)?),
        )?;
        let tokens: usize = examples.iter().map(|e| e.input_ids.len()).sum();
        let supervised: usize = examples
            .iter()
            .map(|e| e.labels.iter().filter(|&&l| l != -100).count())
            .sum();
        r.check("tokens", json!(tokens));
        r.check("supervised_tokens", json!(supervised));
    }
    Ok(())
}

/// Prefill and greedy decode (batch 1 and 8) of the standard model; one decode step of the small model at
/// cache lengths 16/128/512 (the cache is filled and copied outside the timed region).
fn decoder(specs: &[Spec], r: &mut Report) -> Res<()> {
    let device = bench_device()?;
    let standard = if specs
        .iter()
        .any(|s| !s.name.starts_with("decode_step_") && !s.name.ends_with("_bf16"))
    {
        Some(llama(&STANDARD, &device)?)
    } else {
        None
    };
    // The same weights stored in bf16 (`DecoderLm::set_weight_dtype`).
    let bf16 = if specs.iter().any(|s| s.name.ends_with("_bf16")) {
        let (dir, mut m) = llama(&STANDARD, &device)?;
        m.set_weight_dtype(WeightDtype::Bf16);
        Some((dir, m))
    } else {
        None
    };
    let small = if specs.iter().any(|s| s.name.starts_with("decode_step_")) {
        Some(llama(&SMALL, &device)?)
    } else {
        None
    };
    for spec in specs {
        // `_gemm`: the same benchmark with the few-row decode kernel off (burn's matmul for
        // every product), for A/B measurements in one process; tilpass-only.
        let gemm = spec.name.ends_with("_gemm");
        tilpass::models::matvec::set_kernel_enabled(!gemm);
        // `_plain`: the same with the fused RMS-norm / SwiGLU host kernels off (burn's ops).
        let plain = spec.name.ends_with("_plain");
        tilpass::models::decoder_kernels::set_enabled(!plain);
        let base = spec
            .name
            .trim_end_matches("_sleeping")
            .trim_end_matches("_gemm")
            .trim_end_matches("_plain");
        match base {
            // `prefill_512_last`: generation's prefill, the LM head for the last position only
            // (as `generate` and transformers' `logits_to_keep=1` do, and as candle's Llama
            // always does).
            "prefill_512" | "prefill_512_last" => {
                let last = base == "prefill_512_last";
                let (_, m) = standard.as_ref().ok_or("no model")?;
                let input = DecoderInput::unpadded(&[prompt(512)])?;
                let logits = r.time(
                    spec,
                    512,
                    "tokens",
                    || Ok(()),
                    |()| {
                        if !last {
                            return Ok(m.forward(&input, None)?);
                        }
                        let hidden = m.forward_hidden(&input, None)?;
                        let [b, s, h] = hidden.dims();
                        Ok(m.logits(hidden.slice([0..b, s - 1..s, 0..h])))
                    },
                )?;
                let f = Flops::of(&STANDARD);
                if last {
                    // The full forward less the LM head of the 511 positions not computed.
                    let head = 2.0 * (STANDARD.hidden * STANDARD.vocab) as f64;
                    r.flops(f.forward(1, 512, 0) - 511.0 * head)?;
                    r.check("prefill_last_logits_vocab", json!(logits.dims()[2]));
                } else {
                    r.flops(f.forward(1, 512, 0))?;
                    r.check("prefill_logits_shape", json!(logits.dims()));
                }
            }
            "greedy_decode_256" | "greedy_decode_256_bf16" => {
                let (_, m) = match base {
                    "greedy_decode_256" => standard.as_ref(),
                    _ => bf16.as_ref(),
                }
                .ok_or("no model")?;
                let cfg = GenerateConfig {
                    max_new_tokens: 256,
                    eos_token_ids: Some(vec![]),
                    ..Default::default()
                };
                let p32 = vec![prompt(32)];
                let out = r.time(
                    spec,
                    256,
                    "tokens",
                    || Ok(()),
                    |()| Ok(generate_greedy(m, &p32, &cfg)?),
                )?;
                // The 32-token prompt's prefill, then 255 steps of one token after 32 + i.
                let f = Flops::of(&STANDARD);
                let steps: f64 = (0..255).map(|i| f.forward(1, 1, 32 + i)).sum();
                r.flops(f.forward(1, 32, 0) + steps)?;
                // Every step reads every matmul weight once (f32 or bf16).
                let width = if base == "greedy_decode_256" {
                    4.0
                } else {
                    2.0
                };
                r.bytes(256.0 * f.n * width)?;
                let key = match base {
                    "greedy_decode_256" => "decode_new_tokens",
                    _ => "decode_new_tokens_bf16",
                };
                r.check(key, json!(out[0].len()));
            }
            "greedy_decode_256_b8" => {
                let (_, m) = standard.as_ref().ok_or("no model")?;
                let cfg = GenerateConfig {
                    max_new_tokens: 256,
                    eos_token_ids: Some(vec![]),
                    pad_token_id: Some(0),
                    ..Default::default()
                };
                let prompts = prompts_b8();
                let out = r.time(
                    spec,
                    8 * 256,
                    "tokens",
                    || Ok(()),
                    |()| Ok(generate_greedy(m, &prompts, &cfg)?),
                )?;
                // The left-padded 8 x 32 prefill, then 255 steps of 8 tokens after 32 + i.
                let f = Flops::of(&STANDARD);
                let steps: f64 = (0..255).map(|i| f.forward(8, 1, 32 + i)).sum();
                r.flops(f.forward(8, 32, 0) + steps)?;
                r.bytes(256.0 * f.n * 4.0)?;
                let lens: Vec<usize> = out.iter().map(Vec::len).collect();
                r.check("decode_new_tokens_b8", json!(lens));
            }
            name => {
                let past: usize = name
                    .strip_prefix("decode_step_")
                    .and_then(|p| p.parse().ok())
                    .ok_or_else(|| format!("unknown decoder benchmark {name}"))?;
                let (_, m) = small.as_ref().ok_or("no model")?;
                let mut cache = KvCache::new(m.num_layers());
                m.forward(&DecoderInput::unpadded(&[prompt(past)])?, Some(&mut cache))?;
                let step = DecoderInput {
                    input_ids: vec![7],
                    attention_mask: vec![1; past + 1],
                    position_ids: vec![past as i64],
                    batch: 1,
                    seq: 1,
                };
                r.time(
                    spec,
                    1,
                    "tokens",
                    // A copy with buffers of its own and room for the step, as a generation's
                    // cache has between its (amortised) growths: the step writes in place.
                    || {
                        let mut c = cache.clone();
                        c.reserve(1);
                        Ok(c)
                    },
                    |mut c| Ok(m.forward(&step, Some(&mut c))?),
                )?;
                r.flops(Flops::of(&SMALL).forward(1, 1, past))?;
            }
        }
    }
    Ok(())
}

/// all-MiniLM-L6-v2 sentence embeddings of the first 1,000 non-empty shared sentences, batch
/// 32, tokenization (truncated to the model's `max_seq_length` as sentence-transformers does)
/// included; loading the model is not timed (as in encoder.py).
fn encoder(specs: &[Spec], r: &mut Report) -> Res<()> {
    let text = nob_dev()?;
    let sentences: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(1000)
        .collect();
    let dir = artefacts().join("minilm");
    need_dir(&dir)?;
    let device = bench_device()?;
    let embedder = SentenceEmbedder::load(&dir, &device)?;
    let tok = Tokenizer::from_dir(&dir)?;
    let flop = bert_embed_flops(&dir, &embedder.encode_texts(&tok, &sentences)?)?;
    for spec in specs {
        let vectors = r.time(
            spec,
            sentences.len(),
            "sentences",
            || Ok(()),
            |()| Ok(embedder.embed_texts(&tok, &sentences, 32)?),
        )?;
        r.check("embeddings", json!([vectors.len(), vectors[0].len()]));
        r.flops(flop)?;
    }
    Ok(())
}

/// Model FLOPs of a BERT encoder (its [`tilpass::models::BertConfig`] in `dir`) over `rows` of
/// token ids, without padding: with `N = L·(4h² + 2·h·inter)` the layers' matmul weights, `2N`
/// per token plus attention's `4·L·h·len` per token of a row of `len` (its scores and values
/// over the row). The embedding lookups, norms and pooling are left out.
fn bert_embed_flops(dir: &Path, rows: &[Vec<u32>]) -> Res<f64> {
    let cfg: tilpass::models::BertConfig =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json"))?)?;
    let (h, l, inter) = (
        cfg.hidden_size as f64,
        cfg.num_hidden_layers as f64,
        cfg.intermediate_size as f64,
    );
    let n = l * (4.0 * h * h + 2.0 * h * inter);
    Ok(rows
        .iter()
        .map(|r| {
            let len = r.len() as f64;
            2.0 * n * len + 4.0 * l * h * len * len
        })
        .sum())
}

/// `tilpass predict` as a library call over the random-init classifiers and texts that
/// `scripts/compare/predict.py --prepare` wrote to `$TILPASS_COMPARE_PREDICT` (default
/// target/compare/predict). Timed: [`tilpass::train::Predictor::run`] (reading the JSONL,
/// windows sorted by length, batches of 32 truncated to 128 tokens, writing the labelled
/// JSONL); not timed: loading the model and tokenizer ([`tilpass::train::Predictor::load`]),
/// as predict.py does not time building its pipeline.
fn predict(specs: &[Spec], r: &mut Report) -> Res<()> {
    let dir = std::env::var_os("TILPASS_COMPARE_PREDICT")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/compare/predict"));
    let device = bench_device()?;
    for spec in specs {
        let size = spec.name.trim_start_matches("predict_");
        let model = dir.join(size);
        need_dir(&model)?;
        let data = dir.join(format!("texts_{size}.jsonl"));
        let rows = std::fs::read_to_string(&data)
            .map_err(|e| format!("{}: {e}", data.display()))?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count();
        let work = tempfile::tempdir()?;
        let out = work.path().join("labels.jsonl");
        let run = tilpass::train::PredictRun {
            model: Some(model),
            data: Some(data),
            out: Some(out.clone()),
            batch_size: 32,
            max_length: 128,
            ..Default::default()
        };
        let predictor = tilpass::train::Predictor::load(&run, &device)?;
        let o = r.time(
            spec,
            rows,
            "texts",
            || {
                for p in [
                    out.clone(),
                    tilpass::train::runs::stream::sidecar_path(&out),
                ] {
                    let _ = std::fs::remove_file(p);
                }
                Ok(())
            },
            |()| Ok(predictor.run(&run, &mut |_| {})?),
        )?;
        let labelled = std::fs::read_to_string(&out)?;
        let labels: std::collections::BTreeSet<String> = labelled
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).map(|v| v["label"].to_string()))
            .collect::<Result<_, _>>()?;
        r.check(&format!("{}_rows", spec.name), json!(o.rows));
        r.check(
            &format!("{}_label_names", spec.name),
            json!(labels.len() <= 2),
        );
    }
    Ok(())
}

/// One LoRA SFT optimiser step (forward, causal-LM loss, backward, global-norm clipping at
/// 1.0, AdamW at lr 1e-4 with PyTorch's default weight decay 0.01) of the standard model,
/// r=16 alpha 32 on q/k/v/o, batch 4 × 256 (`lora_sft_step_2k`: one row of 2,048 tokens, where
/// attention is about a quarter of the products computed once the masked keys are skipped).
/// `lora_sft_step_2k_recompute`: the 2k step with no room for attention probabilities
/// (`set_attention_memory_budget(0)`: the backward forms them again); `lora_sft_step_8k`: one
/// row of 8,192 tokens (the model configured for 8,192 positions; past the default budget, so
/// formed again; the Python side has it too), `lora_sft_step_8k_keep` the same keeping them
/// (`usize::MAX`, tilpass-only); for time and peak memory.
/// `fused`: the loss is `causal_lm_loss` (the fused cross-entropy); otherwise the same loss
/// composed of tensor ops (`shifted_log_probs`: log-softmax, gather, mean) as before the
/// fusion, for an in-process A/B (`lora_sft_step_unfused`); `lora_sft_step_logits` is the fused cross-entropy over computed
/// logits, without the head fused into the loss (`tilpass_train::fused_ce::set_fused_head_enabled`).
fn llama_lora_step(spec: &Spec, r: &mut Report, fused: bool) -> Res<()> {
    let device = bench_device()?.autodiff();
    let long = spec.name.starts_with("lora_sft_step_2k");
    let (b, s) = if long {
        (1usize, 2048usize)
    } else if spec.name.starts_with("lora_sft_step_8k") {
        (1, 8192)
    } else {
        (4, 256)
    };
    let _dir = tempfile::tempdir()?;
    tilpass_benches::write_random_llama_positions(_dir.path(), &STANDARD, s.max(2048));
    let base = DecoderLm::load(_dir.path(), &device)?;
    let mut peft = PeftModel::new(base);
    let cfg = LoraConfig::new(16, 32.0, &["q_proj", "k_proj", "v_proj", "o_proj"]);
    peft.add_adapter("default", &cfg, 0)?;
    peft.freeze_base();
    let ids = prompt(b * s);
    let batch = LmBatch {
        input: DecoderInput::unpadded(&ids.chunks(s).map(<[u32]>::to_vec).collect::<Vec<_>>())?,
        labels: ids.iter().map(|&t| i64::from(t)).collect(),
    };
    let mut opt = AdamW::new(AdamWConfig {
        weight_decay: 0.01,
        ..Default::default()
    });
    {
        let loss = r.time(
            spec,
            b * s,
            "tokens",
            || Ok(()),
            |()| {
                let loss = if fused {
                    causal_lm_loss(&peft, &batch)?.0
                } else {
                    let logits = peft.forward(&batch.input, None)?;
                    let (lp, mask) = shifted_log_probs(logits, &batch.labels)?;
                    let n = mask.iter().filter(|m| **m).count();
                    lp.sum().neg().div_scalar(n.max(1) as f64)
                };
                let grads = on_pool(&device, || loss.backward());
                let mut params = peft.trainable_params_mut();
                let mut gr = collect_grads(&params, &grads);
                clip_global_norm(&mut gr, 1.0);
                opt.step(&mut params, &gr, 1e-4);
                Ok(loss.into_scalar::<f32>())
            },
        )?;
        let lora = (STANDARD.layers * 4 * cfg.r * 2 * STANDARD.hidden) as f64;
        r.flops(Flops::of(&STANDARD).lora_step(b, s, lora))?;
        // The key the Python side uses for the same step.
        let check = if spec.name.starts_with("lora_sft_step_8k") {
            "lora_sft_step_8k_last_loss_finite"
        } else if long {
            "lora_sft_step_2k_last_loss_finite"
        } else {
            "last_loss_finite"
        };
        r.check(check, json!(loss.is_finite()));
    }
    Ok(())
}

/// The LM head's part of a LoRA step alone: the causal-LM loss of the standard model's frozen
/// head (`[512, 32000]`) over hidden states `[4, 256, 512]` (a tracked leaf, N(0, 1), fixed
/// seed) and its backward to them. `fused`: `causal_lm_loss_from_hidden` with the head fused
/// into the loss (`tilpass_models::head_loss`); otherwise the logits path it replaces (logits
/// tensor, the fused cross-entropy over them, autodiff's product back), for an in-process A/B.
fn head_loss(spec: &Spec, r: &mut Report, fused: bool) -> Res<()> {
    use tilpass::burn::tensor::{Distribution, Tensor};
    use tilpass::models::linear::HasLinears;
    use tilpass::train::fused_ce::{causal_lm_loss_from_hidden, set_fused_head_enabled};
    let device = bench_device()?.autodiff();
    device.seed(7);
    let (_dir, mut model) = llama(&STANDARD, &device)?;
    model.freeze();
    let (b, s, h) = (4usize, 256usize, STANDARD.hidden);
    let labels: Vec<i64> = prompt(b * s).iter().map(|&t| i64::from(t)).collect();
    let hidden = Tensor::<3>::random([b, s, h], Distribution::Normal(0.0, 1.0), &device);
    set_fused_head_enabled(fused);
    let out = r.time(
        spec,
        b * s,
        "tokens",
        || Ok(hidden.clone().require_grad()),
        |x| {
            let (loss, _) = causal_lm_loss_from_hidden(&model, x.clone(), &labels)?;
            let grads = on_pool(&device, || loss.backward());
            let g = x.grad(&grads).ok_or("no gradient at the hidden states")?;
            Ok((
                loss.into_scalar::<f32>(),
                g.abs().sum().into_scalar::<f32>(),
            ))
        },
    );
    set_fused_head_enabled(true);
    let (loss, grad_l1) = out?;
    // Two products of [1024, 512] x [512, 32000]: the logits and the gradient back.
    r.flops(2.0 * 2.0 * (b * s * h * STANDARD.vocab) as f64)?;
    r.check("head_loss", json!(loss));
    r.check("head_grad_l1", json!(grad_l1));
    Ok(())
}

/// One LoRA SFT step of an encoder-decoder: the T5 benchmark model
/// ([`tilpass_benches::t5_standard_config`]), LoRA r=16 alpha 32 on q/k/v/o of every attention
/// (both stacks), a batch of 4 rows of 256 source and 64 target tokens (63 + EOS), the seq2seq
/// loss, backward, clipping at 1.0, AdamW.
fn t5_lora_step(spec: &Spec, r: &mut Report) -> Res<()> {
    use tilpass::models::Seq2SeqLm;
    use tilpass::tokenize::Seq2SeqExample;
    use tilpass::train::{seq2seq_lm_loss, seq2seq_train_batches};
    let device = bench_device()?.autodiff();
    let dir = tempfile::tempdir()?;
    tilpass_benches::write_random_t5(dir.path());
    let mut peft = PeftModel::new(Seq2SeqLm::load(dir.path(), &device)?);
    let cfg = LoraConfig::new(16, 32.0, &["q", "k", "v", "o"]);
    peft.add_adapter("default", &cfg, 0)?;
    peft.freeze_base();
    let (b, src, tgt) = (4usize, 256usize, 64usize);
    let ids = prompt(b * (src + tgt));
    let examples: Vec<Seq2SeqExample> = ids
        .chunks(src + tgt)
        .map(|row| Seq2SeqExample {
            // Ids >= 2: neither padding (0) nor EOS (1) inside a row.
            input_ids: row[..src].iter().map(|t| t + 2).collect(),
            labels: row[src..src + tgt - 1]
                .iter()
                .map(|t| t + 2)
                .chain([1])
                .collect(),
        })
        .collect();
    let batch = seq2seq_train_batches(&examples, b, 0, 0, None)?.remove(0);
    let mut opt = AdamW::new(AdamWConfig {
        weight_decay: 0.01,
        ..Default::default()
    });
    let loss = r.time(
        spec,
        b * (src + tgt),
        "tokens",
        || Ok(()),
        |()| {
            let (loss, _) = seq2seq_lm_loss(peft.model(), &batch)?;
            let grads = on_pool(&device, || loss.backward());
            let mut params = peft.trainable_params_mut();
            let mut gr = collect_grads(&params, &grads);
            clip_global_norm(&mut gr, 1.0);
            opt.step(&mut params, &gr, 1e-4);
            Ok(loss.into_scalar::<f32>())
        },
    )?;
    r.flops(t5_lora_step_flops(b, src, tgt, 16))?;
    r.check("t5_last_loss_finite", json!(loss.is_finite()));
    Ok(())
}

/// The training benchmarks that were asked for.
fn train(specs: &[Spec], r: &mut Report) -> Res<()> {
    for spec in specs {
        match spec.name.as_str() {
            "t5_lora_sft_step" => t5_lora_step(spec, r)?,
            "lora_sft_step_unfused" => llama_lora_step(spec, r, false)?,
            "lora_sft_step_logits" => {
                // The fused cross-entropy over computed logits, without the head fused in.
                tilpass::train::fused_ce::set_fused_head_enabled(false);
                let out = llama_lora_step(spec, r, true);
                tilpass::train::fused_ce::set_fused_head_enabled(true);
                out?
            }
            "lora_sft_step_composed" => {
                // burn's composed ops for RMS norm, SwiGLU, RoPE and attention under autodiff
                // instead of the training kernels (`tilpass_models::train_kernels`).
                tilpass::models::train_kernels::set_enabled(false);
                let out = llama_lora_step(spec, r, true);
                tilpass::models::train_kernels::set_enabled(true);
                out?
            }
            "t5_lora_sft_step_composed" => {
                tilpass::models::train_kernels::set_enabled(false);
                let out = t5_lora_step(spec, r);
                tilpass::models::train_kernels::set_enabled(true);
                out?
            }
            "lora_sft_step_2k_recompute" | "lora_sft_step_8k_keep" => {
                use tilpass::models::train_kernels::{
                    attention_memory_budget, set_attention_memory_budget,
                };
                let budget = attention_memory_budget();
                set_attention_memory_budget(if spec.name.ends_with("_keep") {
                    usize::MAX
                } else {
                    0
                });
                let out = llama_lora_step(spec, r, true);
                set_attention_memory_budget(budget);
                out?
            }
            "lm_head_loss" => head_loss(spec, r, true)?,
            "lm_head_loss_logits" => head_loss(spec, r, false)?,
            _ => llama_lora_step(spec, r, true)?,
        }
    }
    Ok(())
}

/// One DPO optimiser step (TRL's sigmoid loss, beta 0.1) of the standard benchmark Llama with
/// LoRA r=16 alpha 32 on q/k/v/o: the reference forward with the adapters disabled (no
/// gradient), the policy forward with TRL's logged metrics, backward, clipping at 1.0, AdamW
/// (lr 1e-4, no weight decay: TRL's defaults); 2 pairs × 256 tokens.
fn dpo_step(specs: &[Spec], r: &mut Report) -> Res<()> {
    let device = bench_device()?.autodiff();
    let (_dir, base) = llama(&STANDARD, &device)?;
    let mut peft = PeftModel::new(base);
    let cfg = LoraConfig::new(16, 32.0, &["q_proj", "k_proj", "v_proj", "o_proj"]);
    peft.add_adapter("default", &cfg, 0)?;
    peft.freeze_base();
    let (ids, mask) = tilpass_benches::dpo_pair_ids();
    let batch = DpoBatch::new(ids, vec![1; mask.len()], mask, 4, 256)?;
    let dpo = DpoConfig::default();
    let mut opt = AdamW::new(AdamWConfig::default());
    for spec in specs {
        let loss = r.time(
            spec,
            4 * 256,
            "tokens",
            || Ok(()),
            |()| {
                let out = dpo_batch_loss(&mut peft, DpoReference::DisabledAdapters, &dpo, &batch)?;
                let grads = on_pool(&device, || out.loss.backward());
                let mut params = peft.trainable_params_mut();
                let mut gr = collect_grads(&params, &grads);
                clip_global_norm(&mut gr, 1.0);
                opt.step(&mut params, &gr, 1e-4);
                Ok(out.loss.into_scalar::<f32>())
            },
        )?;
        r.check("last_loss_finite", json!(loss.is_finite()));
    }
    Ok(())
}

/// The GRPO benchmark's sizes: G completions of exactly `completion` tokens (the random
/// checkpoint has no EOS id; TRL's side uses `min_new_tokens`) to one `prompt`-token prompt.
const GRPO_G: usize = 8;
const GRPO_PROMPT: usize = 64;
const GRPO_COMPLETION: usize = 64;

/// A tiny Llama for checking the GRPO benchmark runs (`TILPASS_COMPARE_SCALE=tiny`).
const TINY: Shape = Shape {
    hidden: 64,
    layers: 2,
    heads: 4,
    inter: 128,
    vocab: 32000,
};

/// One GRPO step of TRL 1.16.0's `GRPOTrainer` defaults (beta 0, dapo loss, one iteration,
/// temperature 1) on the standard benchmark Llama with LoRA r=16 alpha 32 on q/k/v/o: G = 8
/// completions of 64 tokens sampled with the KV cache for one 64-token prompt, scored by a
/// length reward, advantages, then the loss forward, backward, clipping at 1.0 and AdamW
/// (lr 1e-4) — [`tilpass::preference::train_online`] itself, run for warm-up + repetitions
/// steps; the trainer's own per-step metrics `time/generation_s` (sampling, decoding, rewards,
/// advantages: TRL's `_generate_and_score_completions`) and `time/train_s` (loss, backward,
/// clipping, AdamW) split each step.
/// `TILPASS_COMPARE_SCALE=tiny`: a tiny model, to check the benchmark runs.
fn grpo_step(specs: &[Spec], r: &mut Report) -> Res<()> {
    use tilpass::preference::{FnReward, OnlineConfig, PromptRow, WeightedReward, train_online};
    use tilpass::train::{Event, Target, TrainConfig};
    let tiny = std::env::var("TILPASS_COMPARE_SCALE").is_ok_and(|v| v == "tiny");
    let shape = if tiny { &TINY } else { &STANDARD };
    let device = bench_device()?.autodiff();
    let (dir, base) = llama(shape, &device)?;
    // A word-level tokenizer (`w{i}` has id i), as the Python side's.
    let vocab: serde_json::Map<String, Value> = (0..shape.vocab)
        .map(|i| {
            let name = match i {
                0 => "<pad>".to_string(),
                1 => "<s>".to_string(),
                2 => "</s>".to_string(),
                _ => format!("w{i}"),
            };
            (name, json!(i))
        })
        .collect();
    let tok_json = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": null,
        "decoder": null, "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<pad>"}
    });
    std::fs::write(dir.path().join("tokenizer.json"), tok_json.to_string())?;
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        r#"{"pad_token": "<pad>", "bos_token": "<s>"}"#,
    )?;
    let tok = Tokenizer::from_dir(dir.path())?;
    let ids: Vec<u32> = (0..GRPO_PROMPT)
        .map(|i| 3 + ((i * 7919 + 13) % (shape.vocab - 3)) as u32)
        .collect();
    let text = ids
        .iter()
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let prompts = vec![PromptRow {
        prompt: text,
        prompt_ids: ids,
        row: json!({}),
    }];
    let mut peft = PeftModel::new(base);
    let cfg = LoraConfig::new(16, 32.0, &["q_proj", "k_proj", "v_proj", "o_proj"]);
    peft.add_adapter("default", &cfg, 0)?;
    peft.freeze_base();
    let length = FnReward::new("length", |_: &str, c: &str, _: &Value| Some(c.len() as f32));
    let rewards = [WeightedReward {
        reward: &length,
        weight: 1.0,
    }];
    let online = OnlineConfig {
        num_generations: GRPO_G,
        per_device_train_batch_size: GRPO_G,
        max_completion_length: GRPO_COMPLETION,
        ..Default::default()
    };
    let warmup = specs.iter().map(|s| s.warmup).max().unwrap_or(1);
    let reps = specs.iter().map(|s| s.reps).max().unwrap_or(1);
    let train_cfg = TrainConfig {
        learning_rate: 1e-4,
        max_steps: warmup + reps,
        output_dir: None,
        ..Default::default()
    };
    let mut gen_s = Vec::new();
    let mut train_s = Vec::new();
    let mut lengths = Vec::new();
    train_online(
        &mut peft,
        Target::Adapter("default"),
        &tok,
        &prompts,
        &rewards,
        &online,
        &train_cfg,
        None,
        &mut |e| {
            if let Event::Step(log) = e {
                let m = |k: &str| log.metrics.get(k).copied();
                gen_s.push(m("time/generation_s").unwrap_or(f64::NAN));
                train_s.push(m("time/train_s").unwrap_or(f64::NAN));
                lengths.push(m("completions/mean_length"));
            }
        },
    )?;
    for spec in specs {
        match spec.name.as_str() {
            "grpo_generate" => r.record(spec, GRPO_G * GRPO_COMPLETION, "tokens", &gen_s)?,
            _ => r.record(
                spec,
                GRPO_G * (GRPO_PROMPT + GRPO_COMPLETION),
                "tokens",
                &train_s,
            )?,
        }
    }
    let all_full = lengths.iter().all(|l| *l == Some(GRPO_COMPLETION as f64));
    r.check("completions_all_full_length", json!(all_full));
    Ok(())
}

/// sacrebleu-exact corpus BLEU and chrF of 10,000 pairs (a fresh metric per run, built
/// outside the timed region).
fn metrics(specs: &[Spec], r: &mut Report) -> Res<()> {
    let text = nob_dev()?;
    let lines: Vec<&str> = text.lines().collect();
    let mut hyps = Vec::new();
    let mut refs = Vec::new();
    for i in 0..10_000 {
        let line = lines[i % lines.len()];
        let mut words: Vec<&str> = line
            .split(' ')
            .enumerate()
            .filter(|(j, _)| (i + j) % 5 != 0)
            .map(|(_, w)| w)
            .collect();
        let n = words.len();
        if n > 3 {
            words.swap(n - 1, n - 2);
        }
        hyps.push(words.join(" "));
        refs.push(Some(line.to_string()));
    }
    let refs = vec![refs];
    for spec in specs {
        let score = match spec.name.as_str() {
            "corpus_bleu" => {
                r.time(
                    spec,
                    hyps.len(),
                    "pairs",
                    || Ok(Bleu::default()),
                    |m| Ok(m.corpus_score(&hyps, &refs)?),
                )?
                .score
            }
            "corpus_chrf" => {
                r.time(
                    spec,
                    hyps.len(),
                    "pairs",
                    || Ok(Chrf::default()),
                    |m| Ok(m.corpus_score(&hyps, &refs)?),
                )?
                .score
            }
            other => return Err(format!("unknown metrics benchmark {other}").into()),
        };
        r.check(
            &format!("{}_score", spec.name),
            json!(format!("{score:.6}")),
        );
    }
    Ok(())
}

/// The 32-bit integer hash of scripts/compare/minhash.py's `mix`.
fn mix32(x: u64) -> u64 {
    let x = ((x ^ (x >> 16)) * 0x45d9f3b) % (1 << 32);
    let x = ((x ^ (x >> 16)) * 0x45d9f3b) % (1 << 32);
    x ^ (x >> 16)
}

/// MinHash signatures and LSH candidates of 100,000 synthetic documents, as
/// scripts/compare/minhash.py makes them with datasketch (signatures in parallel with rayon).
fn minhash(specs: &[Spec], r: &mut Report) -> Res<()> {
    use tilpass::data::lsh::{LshConfig, MinHashLsh};
    use tilpass::data::minhash::{MinHashConfig, MinHasher};
    let dir = root().join("../shared/data/ud-norwegian");
    let read = |f: &str| {
        let p = dir.join(f);
        std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))
    };
    let (nob, nno) = (read("nob-dev.txt")?, read("nno-dev.txt")?);
    let pool: Vec<&str> = nob.lines().chain(nno.lines()).collect();
    let n = pool.len() as u64;
    let mut docs: Vec<String> = Vec::with_capacity(100_000);
    for i in 0..100_000usize {
        if i % 10 == 9 {
            let mut words: Vec<&str> = docs[i - 5].split(' ').collect();
            let k = i % words.len();
            words[k] = "endret";
            let d = words.join(" ");
            docs.push(d);
        } else {
            let parts: Vec<&str> = (0..4)
                .map(|j| pool[(mix32(4 * i as u64 + j) % n) as usize])
                .collect();
            docs.push(parts.join(" "));
        }
    }
    let hasher = MinHasher::new(&MinHashConfig::default())?;
    let lsh = MinHashLsh::new(&LshConfig::default())?;
    let mut cached = None;
    for spec in specs {
        match spec.name.as_str() {
            "minhash_100k" => {
                let sigs = r.time(
                    spec,
                    docs.len(),
                    "docs",
                    || Ok(()),
                    |()| Ok(hasher.signatures(&docs)),
                )?;
                let sum: u128 = (0..sigs.len())
                    .flat_map(|i| sigs.get(i)[..8].to_vec())
                    .map(u128::from)
                    .sum();
                r.check(
                    "hash_checksum",
                    json!((sum % ((1u128 << 61) - 1)).to_string()),
                );
                cached = Some(sigs);
            }
            "lsh_100k" => {
                let sigs = match cached.take() {
                    Some(s) => s,
                    None => hasher.signatures(&docs),
                };
                let cands = r.time(
                    spec,
                    docs.len(),
                    "docs",
                    || Ok(()),
                    |()| Ok(lsh.candidates(&sigs)),
                )?;
                r.check(
                    "candidate_entries",
                    json!(cands.iter().map(Vec::len).sum::<usize>()),
                );
                r.check(
                    "docs_with_candidates",
                    json!(cands.iter().filter(|c| c.len() > 1).count()),
                );
                cached = Some(sigs);
            }
            other => return Err(format!("unknown minhash benchmark {other}").into()),
        }
    }
    Ok(())
}

/// Parses `NAME[:WARMUP:REPS]`.
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
    if reps == 0 {
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
    let usage =
        "usage: tilpass-compare GROUP [--threads N] [--device DEV] [--bench NAME[:WARMUP:REPS]]...";
    let group = args.first().ok_or(usage)?.clone();
    match group.as_str() {
        "rag_prepare" => return rag::prepare(),
        "rag_rss" => return rag::rss(),
        _ => {}
    }
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
            "--device" => {
                tilpass::device(v)?; // an unknown or uncompiled device fails here, before any work
                DEVICE_SPEC
                    .set(v.clone())
                    .map_err(|_| "--device given twice")?;
            }
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
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()?;
    }
    #[cfg(not(feature = "system-alloc"))]
    tilpass_benches::keep_freed_memory();
    let allocator = if cfg!(feature = "system-alloc") {
        "system"
    } else {
        "mimalloc (purge_delay -1)"
    };
    let mut report = Report {
        benchmarks: Vec::new(),
        checks: serde_json::Map::new(),
        extra: serde_json::Map::new(),
        peak_gflops: None,
        fma_peak: None,
        kernel_rate: None,
        read_gbs: None,
    };
    match group.as_str() {
        "sft_encode" => sft_encode(&specs, &mut report)?,
        "decoder" => decoder(&specs, &mut report)?,
        "encoder" => encoder(&specs, &mut report)?,
        "predict" => predict(&specs, &mut report)?,
        "train" => train(&specs, &mut report)?,
        "dpo_step" => dpo_step(&specs, &mut report)?,
        "grpo_step" => grpo_step(&specs, &mut report)?,
        "rag" => {
            let mut extra = std::mem::take(&mut report.extra);
            rag::run(&specs, &mut report, &mut extra)?;
            report.extra = extra;
        }
        "minhash" => minhash(&specs, &mut report)?,
        _ => metrics(&specs, &mut report)?,
    }
    let mut out = json!({
        "side": "tilpass",
        "group": group,
        "threads": rayon::current_num_threads(),
        "device": DEVICE_SPEC.get().map_or("flex", String::as_str),
        "versions": {"tilpass": env!("CARGO_PKG_VERSION")},
        "allocator": allocator,
        "peak_gflops": report.peak_gflops,
        "fma_peak_gflops": report.fma_peak.as_ref().map(|f| f.gflops),
        "isa": report.fma_peak.as_ref().map(|f| f.isa),
        "kernel_gflops": report.kernel_rate.as_ref().map(|k| k.gflops),
        "kernel": report.kernel_rate.as_ref().map(|k| k.name),
        "read_gbs": report.read_gbs,
        "benchmarks": report.benchmarks,
        "checks": report.checks,
    });
    if let Value::Object(o) = &mut out {
        o.extend(report.extra);
    }
    println!("{out}");
    Ok(())
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tilpass-compare: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
