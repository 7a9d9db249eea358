//! Decoder speed on Flex: prefill and greedy decode of the standard benchmark model (Llama,
//! hidden 512, 8 layers, 8 heads, intermediate 1376, vocab 32000, random weights), and the
//! per-token decode latency of a 4-layer hidden-256 model at growing cache lengths (it should
//! stay flat, not grow with the position). `scripts/compare/decoder.py` times the same work
//! in transformers (PyTorch, CPU).

/// The allocator the `tilpass` binary uses (see its `main.rs`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tilpass::core::{HostTensor, SaveDtype, save_safetensors};
use tilpass::models::{DecoderInput, DecoderLm, GenerateConfig, KvCache, generate_greedy};

struct Shape {
    hidden: usize,
    layers: usize,
    heads: usize,
    inter: usize,
    vocab: usize,
}

/// Writes a random Llama checkpoint (uniform ±0.05, fixed seed) and loads it.
fn random_llama(s: &Shape) -> (tempfile::TempDir, DecoderLm) {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = serde_json::json!({
        "model_type": "llama", "vocab_size": s.vocab, "hidden_size": s.hidden,
        "intermediate_size": s.inter, "num_hidden_layers": s.layers,
        "num_attention_heads": s.heads, "num_key_value_heads": s.heads,
        "max_position_embeddings": 2048, "rms_norm_eps": 1e-6, "tie_word_embeddings": false,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}
    });
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).expect("config");
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut rand = |shape: Vec<usize>| {
        let n: usize = shape.iter().product();
        let data = (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
            })
            .collect();
        HostTensor::new(shape, data).expect("shape")
    };
    let (h, i, v) = (s.hidden, s.inter, s.vocab);
    let mut tensors: Vec<(String, HostTensor)> = vec![
        ("model.embed_tokens.weight".into(), rand(vec![v, h])),
        ("model.norm.weight".into(), rand(vec![h])),
        ("lm_head.weight".into(), rand(vec![v, h])),
    ];
    for l in 0..s.layers {
        let p = format!("model.layers.{l}");
        for (n, shape) in [
            ("self_attn.q_proj", vec![h, h]),
            ("self_attn.k_proj", vec![h, h]),
            ("self_attn.v_proj", vec![h, h]),
            ("self_attn.o_proj", vec![h, h]),
            ("mlp.gate_proj", vec![i, h]),
            ("mlp.up_proj", vec![i, h]),
            ("mlp.down_proj", vec![h, i]),
        ] {
            tensors.push((format!("{p}.{n}.weight"), rand(shape)));
        }
        tensors.push((format!("{p}.input_layernorm.weight"), rand(vec![h])));
        tensors.push((
            format!("{p}.post_attention_layernorm.weight"),
            rand(vec![h]),
        ));
    }
    save_safetensors(
        dir.path().join("model.safetensors"),
        tensors.iter().map(|(n, t)| (n.as_str(), t)),
        SaveDtype::F32,
        None,
    )
    .expect("save");
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
