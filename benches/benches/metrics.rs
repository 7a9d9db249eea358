//! Corpus BLEU and chrF on 10,000 Norwegian sentence pairs (references: the shared Bokmål
//! sentences; hypotheses: the same with every fifth word dropped and the last two swapped).
//! `scripts/compare/metrics.py` times sacrebleu on the same pairs and prints its scores, which
//! this bench prints too (they must agree).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tilpass::metrics::{Bleu, Chrf};

/// Hypotheses and one reference stream.
type Pairs = (Vec<String>, Vec<Vec<Option<String>>>);

/// The 10,000 pairs, built exactly as scripts/compare/metrics.py builds them.
fn pairs() -> Option<Pairs> {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data/ud-norwegian/nob-dev.txt");
    let text = std::fs::read_to_string(path).ok()?;
    let lines: Vec<&str> = text.lines().collect();
    let mut hyps = Vec::new();
    let mut refs = Vec::new();
    for i in 0..10_000 {
        let r = lines[i % lines.len()];
        let mut words: Vec<&str> = r
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
        refs.push(Some(r.to_string()));
    }
    Some((hyps, vec![refs]))
}

fn bench(c: &mut Criterion) {
    let Some((hyps, refs)) = pairs() else {
        eprintln!("SKIPPED metrics bench: needs ../shared/data/ud-norwegian/nob-dev.txt");
        return;
    };
    let bleu = Bleu::default();
    let chrf = Chrf::default();
    eprintln!(
        "BLEU {:.6}  chrF {:.6}",
        bleu.corpus_score(&hyps, &refs).unwrap().score,
        chrf.corpus_score(&hyps, &refs).unwrap().score
    );
    let mut g = c.benchmark_group("metrics_10k_pairs");
    g.throughput(Throughput::Elements(10_000));
    g.sample_size(20);
    g.bench_function("corpus_bleu", |b| {
        b.iter(|| bleu.corpus_score(&hyps, &refs).unwrap())
    });
    g.bench_function("corpus_chrf", |b| {
        b.iter(|| chrf.corpus_score(&hyps, &refs).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
