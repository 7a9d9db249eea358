//! Encoder throughput on Flex: sentence embeddings of 1,000 Norwegian sentences
//! (`../shared/data/ud-norwegian/nob-dev.txt`, the first 1,000 lines) with the real
//! all-MiniLM-L6-v2 weights (`scripts/fetch-artefacts.sh`), batch 32, tokenization included,
//! as `SentenceTransformer.encode` does. `scripts/compare/encoder.py` times the same work in
//! sentence-transformers (PyTorch, CPU).

/// The allocator the `tilpass` binary uses (see its `main.rs`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tilpass::models::SentenceEmbedder;
use tilpass::tokenize::Tokenizer;

fn embed(c: &mut Criterion) {
    tilpass_benches::keep_freed_memory();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let model_dir = root.join("artefacts/minilm");
    let data = root.join("../shared/data/ud-norwegian/nob-dev.txt");
    if !model_dir.join(".done").exists() || !data.exists() {
        eprintln!(
            "SKIPPED encoder bench: needs {} (scripts/fetch-artefacts.sh) and {}",
            model_dir.display(),
            data.display()
        );
        return;
    }
    let text = std::fs::read_to_string(&data).expect("data");
    let sentences: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(1000)
        .collect();
    let device = tilpass::device("flex").expect("flex");
    let embedder = SentenceEmbedder::load(&model_dir, &device).expect("model");
    let tok = Tokenizer::from_dir(&model_dir).expect("tokenizer");
    let mut g = c.benchmark_group("minilm");
    g.sample_size(10);
    g.throughput(Throughput::Elements(sentences.len() as u64));
    g.bench_function("embed_1000_nob_sentences_batch_32", |b| {
        b.iter(|| {
            let ids: Vec<Vec<u32>> = sentences
                .iter()
                .map(|s| tok.encode(s, true).expect("encode"))
                .collect();
            embedder.embed_ids(&ids, 32).expect("embed")
        })
    });
    g.finish();
}

criterion_group!(benches, embed);
criterion_main!(benches);
