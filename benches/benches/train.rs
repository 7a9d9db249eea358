//! LoRA SFT training throughput on Flex: the standard benchmark model of DESIGN.md (Llama,
//! hidden 512, 8 layers, 8 heads, intermediate 1376, vocab 32000, random weights), LoRA r=16,
//! alpha 32 on q/k/v/o, one optimiser step (forward, backward, AdamW) on a batch of 4 × 256
//! tokens. `scripts/compare/train.py` times the same step in PyTorch + PEFT. And one DPO
//! optimiser step (TRL's sigmoid loss) with the same adapter on 2 pairs × 256 tokens: the
//! reference forward with the adapters disabled, the policy forward and backward, clipping,
//! AdamW; `scripts/compare/dpo_step.py` times TRL 1.16.0's `DPOTrainer.compute_loss` step.

/// The allocator the `tilpass` binary uses (see its `main.rs`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tilpass::models::{DecoderInput, DecoderLm};
use tilpass::peft::{LoraConfig, PeftModel};
use tilpass::preference::{DpoBatch, DpoConfig, DpoReference, dpo_batch_loss};
use tilpass::train::{
    AdamW, AdamWConfig, LmBatch, causal_lm_loss, clip_global_norm, collect_grads,
};
use tilpass_benches::{Shape, write_random_llama};

fn lora_step(c: &mut Criterion) {
    tilpass_benches::keep_freed_memory();
    let dir = tempfile::tempdir().expect("dir");
    write_random_llama(
        dir.path(),
        &Shape {
            hidden: 512,
            layers: 8,
            heads: 8,
            inter: 1376,
            vocab: 32000,
        },
    );
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
        input: DecoderInput::unpadded(&ids.chunks(s).map(<[u32]>::to_vec).collect::<Vec<_>>())
            .expect("input"),
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

fn dpo_step(c: &mut Criterion) {
    tilpass_benches::keep_freed_memory();
    let dir = tempfile::tempdir().expect("dir");
    write_random_llama(
        dir.path(),
        &Shape {
            hidden: 512,
            layers: 8,
            heads: 8,
            inter: 1376,
            vocab: 32000,
        },
    );
    let device = tilpass::device("flex").expect("flex").autodiff();
    let mut peft = PeftModel::new(DecoderLm::load(dir.path(), &device).expect("load"));
    let cfg = LoraConfig::new(16, 32.0, &["q_proj", "k_proj", "v_proj", "o_proj"]);
    peft.add_adapter("default", &cfg, 0).expect("adapter");
    peft.freeze_base();
    let (ids, mask) = tilpass_benches::dpo_pair_ids();
    let batch = DpoBatch::new(ids, vec![1; mask.len()], mask, 4, 256).expect("batch");
    let dpo = DpoConfig::default();
    let mut opt = AdamW::new(AdamWConfig::default());
    let mut g = c.benchmark_group("dpo_step");
    g.sample_size(10);
    g.throughput(Throughput::Elements(4 * 256));
    g.bench_function("llama_standard_r16_qkvo_2pairs_x256", |bench| {
        bench.iter(|| {
            let out = dpo_batch_loss(&mut peft, DpoReference::DisabledAdapters, &dpo, &batch)
                .expect("loss");
            let grads = out.loss.backward();
            let mut params = peft.trainable_params_mut();
            let mut gr = collect_grads(&params, &grads);
            clip_global_norm(&mut gr, 1.0);
            opt.step(&mut params, &gr, 1e-4);
        })
    });
    g.finish();
}

criterion_group!(benches, lora_step, dpo_step);
criterion_main!(benches);
