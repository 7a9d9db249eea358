//! Decoder speed on Flex: prefill and greedy decode of the standard benchmark model (Llama,
//! hidden 512, 8 layers, 8 heads, intermediate 1376, vocab 32000, random weights), and the
//! per-token decode latency of a 4-layer hidden-256 model at growing cache lengths (it should
//! stay flat, not grow with the position). `scripts/compare/decoder.py` times the same work
//! in transformers (PyTorch, CPU).

/// The allocator the `tilpass` binary uses (see its `main.rs`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tilpass::models::{DecoderInput, DecoderLm, GenerateConfig, KvCache, generate_greedy};
use tilpass_benches::{Shape, write_random_llama};

/// Writes a random Llama checkpoint and loads it.
fn random_llama(s: &Shape) -> (tempfile::TempDir, DecoderLm) {
    let dir = tempfile::tempdir().expect("temp dir");
    write_random_llama(dir.path(), s);
    let device = tilpass::device("flex").expect("flex");
    let model = DecoderLm::load(dir.path(), &device).expect("load");
    (dir, model)
}

fn prompt(n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 7919 + 13) % vocab) as u32).collect()
}

fn standard(c: &mut Criterion) {
    tilpass_benches::keep_freed_memory();
    let (_dir, model) = random_llama(&Shape {
        hidden: 512,
        layers: 8,
        heads: 8,
        inter: 1376,
        vocab: 32000,
    });
    let mut g = c.benchmark_group("llama_standard");
    g.sample_size(10);
    let p512 = DecoderInput::unpadded(&[prompt(512, 32000)]).expect("input");
    g.throughput(Throughput::Elements(512));
    g.bench_function("prefill_512_tokens", |b| {
        b.iter(|| model.forward(&p512, None).expect("forward"))
    });
    let cfg = GenerateConfig {
        max_new_tokens: 256,
        eos_token_ids: Some(vec![]),
        ..Default::default()
    };
    let p32 = vec![prompt(32, 32000)];
    g.throughput(Throughput::Elements(256));
    g.bench_function("greedy_decode_256_tokens_after_32", |b| {
        b.iter(|| generate_greedy(&model, &p32, &cfg).expect("generate"))
    });
    g.finish();
}

fn flat_latency(c: &mut Criterion) {
    let (_dir, model) = random_llama(&Shape {
        hidden: 256,
        layers: 4,
        heads: 4,
        inter: 688,
        vocab: 32000,
    });
    let mut g = c.benchmark_group("decode_step_latency_h256_l4");
    g.sample_size(20);
    for past in [16usize, 128, 512] {
        // Fill a cache of `past` positions, then time one more decode step from it.
        let mut cache = KvCache::new(model.num_layers());
        let input = DecoderInput::unpadded(&[prompt(past, 32000)]).expect("input");
        model.forward(&input, Some(&mut cache)).expect("prefill");
        let step = DecoderInput {
            input_ids: vec![7],
            attention_mask: vec![1; past + 1],
            position_ids: vec![past as i64],
            batch: 1,
            seq: 1,
        };
        g.bench_with_input(BenchmarkId::new("position", past), &past, |b, _| {
            b.iter_batched(
                || cache.clone(),
                |mut c| model.forward(&step, Some(&mut c)).expect("step"),
                criterion::BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, standard, flat_latency);
criterion_main!(benches);
