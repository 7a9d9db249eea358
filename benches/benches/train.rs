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

/// The cross-entropy row pass over the logits of a 4 × 256 batch and a vocabulary of 32,000
/// (loss and gradient in place, both threads): `tilpass_models::head_loss::row_loss` (the
/// vectorised exp and 16-lane sums) against the same pass with the standard library's `exp`
/// and one running f64 sum (the implementation before the sixth session), for the record in
/// docs/benchmarks.md.
fn cross_entropy_rows(c: &mut Criterion) {
    use rayon::prelude::*;
    fn libm_row(row: &mut [f32], label: usize, scale: f64) -> f64 {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let target = row[label];
        let sum: f64 = row
            .iter_mut()
            .map(|x| {
                *x = (*x - max).exp();
                f64::from(*x)
            })
            .sum();
        let s = (scale / sum) as f32;
        for x in row.iter_mut() {
            *x *= s;
        }
        row[label] -= scale as f32;
        f64::from(max) + sum.ln() - f64::from(target)
    }
    let (rows, v) = (1024usize, 32000usize);
    let logits = tilpass::core::SplitMix64::from_state(3).normal_vec(rows * v, 3.0);
    let mut z = logits.clone();
    let mut g = c.benchmark_group("cross_entropy_rows");
    g.sample_size(20);
    g.throughput(Throughput::Elements((rows * v) as u64));
    let pass = |z: &mut Vec<f32>, f: fn(&mut [f32], usize, f64) -> f64| -> f64 {
        z.copy_from_slice(&logits);
        z.par_chunks_mut(v)
            .enumerate()
            .map(|(i, r)| f(r, (i * 37) % v, 1e-3))
            .collect::<Vec<f64>>()
            .iter()
            .sum()
    };
    g.bench_function("row_loss", |b| {
        b.iter(|| {
            pass(&mut z, |r, l, s| {
                tilpass::models::head_loss::row_loss(r, l, s, true)
            })
        })
    });
    g.bench_function("libm_exp", |b| b.iter(|| pass(&mut z, libm_row)));
    g.finish();
}

criterion_group!(benches, lora_step, dpo_step, cross_entropy_rows);
criterion_main!(benches);
