//! LoRA SFT training throughput on Flex: the standard benchmark model of DESIGN.md (Llama,
//! hidden 512, 8 layers, 8 heads, intermediate 1376, vocab 32000, random weights), LoRA r=16,
//! alpha 32 on q/k/v/o, one optimiser step (forward, backward, AdamW) on a batch of 4 × 256
//! tokens. `scripts/compare/train.py` times the same step in PyTorch + PEFT.

/// The allocator the `tilpass` binary uses (see its `main.rs`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tilpass::core::{HostTensor, SaveDtype, save_safetensors};
use tilpass::models::{DecoderInput, DecoderLm};
use tilpass::peft::{LoraConfig, PeftModel};
use tilpass::train::{
    AdamW, AdamWConfig, LmBatch, causal_lm_loss, clip_global_norm, collect_grads,
};

fn random_llama(dir: &std::path::Path) {
    let (h, i, v, layers) = (512usize, 1376usize, 32000usize, 8usize);
    let cfg = serde_json::json!({
        "model_type": "llama", "vocab_size": v, "hidden_size": h, "intermediate_size": i,
        "num_hidden_layers": layers, "num_attention_heads": 8, "num_key_value_heads": 8,
        "max_position_embeddings": 2048, "rms_norm_eps": 1e-6, "tie_word_embeddings": false,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}
    });
    std::fs::write(dir.join("config.json"), cfg.to_string()).expect("config");
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
    let mut t: Vec<(String, HostTensor)> = vec![
        ("model.embed_tokens.weight".into(), rand(vec![v, h])),
        ("model.norm.weight".into(), rand(vec![h])),
        ("lm_head.weight".into(), rand(vec![v, h])),
    ];
    for l in 0..layers {
        let p = format!("model.layers.{l}");
        for (n, s) in [
            ("self_attn.q_proj", vec![h, h]),
            ("self_attn.k_proj", vec![h, h]),
            ("self_attn.v_proj", vec![h, h]),
            ("self_attn.o_proj", vec![h, h]),
            ("mlp.gate_proj", vec![i, h]),
            ("mlp.up_proj", vec![i, h]),
            ("mlp.down_proj", vec![h, i]),
        ] {
            t.push((format!("{p}.{n}.weight"), rand(s)));
        }
        t.push((format!("{p}.input_layernorm.weight"), rand(vec![h])));
        t.push((
            format!("{p}.post_attention_layernorm.weight"),
            rand(vec![h]),
        ));
    }
    save_safetensors(
        dir.join("model.safetensors"),
        t.iter().map(|(n, x)| (n.as_str(), x)),
        SaveDtype::F32,
        None,
    )
    .expect("save");
}

fn lora_step(c: &mut Criterion) {
    tilpass_benches::keep_freed_memory();
    let dir = tempfile::tempdir().expect("dir");
    random_llama(dir.path());
    let device = tilpass::device("flex").expect("flex").autodiff();
    let mut peft = PeftModel::new(DecoderLm::load(dir.path(), &device).expect("load"));
    let cfg = LoraConfig::new(16, 32.0, &["q_proj", "k_proj", "v_proj", "o_proj"]);
    peft.add_adapter("default", &cfg, 0).expect("adapter");
    peft.freeze_base();
    let (b, s) = (4usize, 256usize);
    let ids: Vec<u32> = (0..b * s)
        .map(|i| ((i * 7919 + 13) % 32000) as u32)
        .collect();
    let batch = LmBatch {
        input: DecoderInput {
            input_ids: ids.clone(),
            attention_mask: vec![1; b * s],
            position_ids: (0..b).flat_map(|_| 0..s as i64).collect(),
            batch: b,
            seq: s,
        },
        labels: ids.iter().map(|&t| i64::from(t)).collect(),
    };
    let mut opt = AdamW::new(AdamWConfig::default());
    let mut g = c.benchmark_group("lora_sft_step");
    g.sample_size(10);
    g.throughput(Throughput::Elements((b * s) as u64));
    g.bench_function("llama_standard_r16_qkvo_4x256", |bench| {
        bench.iter(|| {
            let (loss, _) = causal_lm_loss(&peft, &batch).expect("loss");
            let grads = loss.backward();
            let mut params = peft.trainable_params_mut();
            let mut gr = collect_grads(&params, &grads);
            clip_global_norm(&mut gr, 1.0);
            opt.step(&mut params, &gr, 1e-4);
        })
    });
    g.finish();
}

criterion_group!(benches, lora_step);
criterion_main!(benches);
