//! Benchmarks of tilpass: the criterion benches in `benches/` (for profiling) and
//! `tilpass-compare` (`compare.rs`), the tilpass side of `scripts/compare/run.sh`, which
//! produces the side-by-side ratios against the Python references in `docs/benchmarks.md`.

/// Tells mimalloc to keep freed memory for reuse instead of purging it back to the OS: large
/// tensors are freed and reallocated on every step, and re-faulting their zeroed pages cost
/// ~25% of a training step (docs/benchmarks.md).
pub fn keep_freed_memory() {
    // SAFETY: mi_option_set only stores an option value; 15 is `mi_option_purge_delay` in
    // mimalloc v2 and v3 (`include/mimalloc.h`), -1 = never purge.
    unsafe { libmimalloc_sys::mi_option_set(15, -1) };
}

/// Sizes of a random Llama checkpoint for benchmarks.
pub struct Shape {
    /// Width.
    pub hidden: usize,
    /// Layers.
    pub layers: usize,
    /// Heads (= key/value heads).
    pub heads: usize,
    /// Feed-forward width.
    pub inter: usize,
    /// Vocabulary.
    pub vocab: usize,
}

/// Writes a random Llama checkpoint (uniform ±0.05, fixed seed) with `config.json` into `dir`
/// (2,048 positions).
pub fn write_random_llama(dir: &std::path::Path, s: &Shape) {
    write_random_llama_positions(dir, s, 2048);
}

/// [`write_random_llama`] with `max_position_embeddings` set to `positions` (same weights).
pub fn write_random_llama_positions(dir: &std::path::Path, s: &Shape, positions: usize) {
    use tilpass::core::{HostTensor, SaveDtype, save_safetensors};
    let cfg = serde_json::json!({
        "model_type": "llama", "vocab_size": s.vocab, "hidden_size": s.hidden,
        "intermediate_size": s.inter, "num_hidden_layers": s.layers,
        "num_attention_heads": s.heads, "num_key_value_heads": s.heads,
        "max_position_embeddings": positions, "rms_norm_eps": 1e-6, "tie_word_embeddings": false,
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
        dir.join("model.safetensors"),
        tensors.iter().map(|(n, t)| (n.as_str(), t)),
        SaveDtype::F32,
        None,
    )
    .expect("save");
}

/// The T5 benchmark model: T5-base's shape (d_model 768, d_ff 3072, 12 + 12 layers, 12 heads)
/// scaled to a 2-core machine like the Llama benchmark model — T5.1.1 layout (gated-GELU, own
/// `lm_head`), d_model 512, d_kv 64, d_ff 1024, 6 encoder + 6 decoder layers, 8 heads, vocab
/// 32128, 32 relative-position buckets up to distance 128.
pub fn t5_standard_config() -> serde_json::Value {
    serde_json::json!({
        "model_type": "t5", "architectures": ["T5ForConditionalGeneration"],
        "vocab_size": 32128, "d_model": 512, "d_kv": 64, "d_ff": 1024, "num_layers": 6,
        "num_decoder_layers": 6, "num_heads": 8, "relative_attention_num_buckets": 32,
        "relative_attention_max_distance": 128, "layer_norm_epsilon": 1e-6,
        "feed_forward_proj": "gated-gelu", "tie_word_embeddings": false,
        "scale_decoder_outputs": false, "pad_token_id": 0, "eos_token_id": 1,
        "decoder_start_token_id": 0, "is_encoder_decoder": true
    })
}

/// Writes a random T5 checkpoint of [`t5_standard_config`] (weights uniform ±0.05, norms one,
/// fixed seed) with `config.json` into `dir`.
pub fn write_random_t5(dir: &std::path::Path) {
    use tilpass::core::{SaveDtype, save_safetensors};
    use tilpass::models::{T5Config, init::init_tensors, t5::t5_params};
    let cfg = t5_standard_config();
    let c: T5Config = serde_json::from_value(cfg.clone()).expect("T5 config");
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let tensors = init_tensors(&t5_params(&c, true), |n| {
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
            })
            .collect()
    })
    .expect("tensors");
    std::fs::write(dir.join("config.json"), cfg.to_string()).expect("config");
    save_safetensors(
        dir.join("model.safetensors"),
        tensors.iter().map(|(n, t)| (n.as_str(), t)),
        SaveDtype::F32,
        None,
    )
    .expect("weights");
}

/// The ids of the DPO step benchmark (`tilpass-compare dpo_step`, the `dpo_step` criterion
/// bench, `scripts/compare/dpo_step.py`): 2 pairs of 256 tokens as TRL batches them,
/// `[chosen 0, chosen 1, rejected 0, rejected 1]` (`[4 * 256]` row-major), each row
/// `(i * 7919 + 13) % 32000` over its positions in the whole batch, the rejected rows sharing
/// their pair's 128-token prompt; and the completion mask (1 on each row's last 128 tokens).
pub fn dpo_pair_ids() -> (Vec<u32>, Vec<u8>) {
    let (rows, s, p) = (4usize, 256usize, 128usize);
    let mut ids: Vec<u32> = (0..rows * s)
        .map(|i| ((i * 7919 + 13) % 32000) as u32)
        .collect();
    for r in 2..rows {
        let (src, dst) = ((r - 2) * s, r * s);
        let head: Vec<u32> = ids[src..src + p].to_vec();
        ids[dst..dst + p].copy_from_slice(&head);
    }
    let mask = (0..rows * s).map(|i| u8::from(i % s >= p)).collect();
    (ids, mask)
}
