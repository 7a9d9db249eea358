//! SFT encoding throughput: chat template rendering + tokenization + assistant masks, the work
//! done for every training example. Needs the Mistral tokenizer (`scripts/fetch-artefacts.sh`)
//! and the shared Norwegian sentences; the same work in transformers is timed by
//! `scripts/compare/sft_encode.py`.

use std::path::PathBuf;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tilpass::data::{Message, Record, Role};
use tilpass::tokenize::{SftConfig, SftEncoder, Tokenizer, pack_bfd};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// 1,000 two-turn conversations built from the shared Bokmål sentences.
fn conversations() -> Option<Vec<Record>> {
    let path = root().join("../shared/data/ud-norwegian/nob-dev.txt");
    let text = std::fs::read_to_string(&path).ok()?;
    let lines: Vec<&str> = text.lines().collect();
    Some(
        (0..1000)
            .map(|i| Record::Conversation {
                messages: vec![
                    Message::new(Role::User, lines[(2 * i) % lines.len()]),
                    Message::new(Role::Assistant, lines[(2 * i + 1) % lines.len()]),
                ],
            })
            .collect(),
    )
}

fn bench(c: &mut Criterion) {
    let tok_dir = root().join("artefacts/mistral");
    let (Ok(tok), Some(records)) = (Tokenizer::from_dir(&tok_dir), conversations()) else {
        eprintln!(
            "SKIPPED tokenize bench: needs {} (scripts/fetch-artefacts.sh) and ../shared/data",
            tok_dir.display()
        );
        return;
    };
    let enc = SftEncoder::new(
        &tok,
        SftConfig {
            chat_template: Some("norsk".into()),
            ..Default::default()
        },
    )
    .expect("encoder");
    let mut g = c.benchmark_group("sft_encode");
    g.throughput(Throughput::Elements(records.len() as u64));
    g.sample_size(10);
    g.bench_function("norsk_template_1000_conversations", |b| {
        b.iter(|| enc.encode_all(&records).expect("encodes"))
    });
    let (examples, _) = enc.encode_all(&records).expect("encodes");
    g.bench_function("pack_bfd_1000_examples_2048", |b| {
        b.iter(|| pack_bfd(&examples, 2048))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
