//! Training tokenizers on Norwegian text, fertility, and vocabulary extension.

use tilpass::tokenize::{
    ExtendConfig, Tokenizer, TokenizerKind, TrainConfig, extend_vocabulary, fertility,
    train_tokenizer,
};
use tilpass_tests::{artefact, read_lines, shared_data};

#[test]
fn bpe_trained_on_bokmaal_beats_gpt2_fertility() {
    let (Some(nob), Some(nno)) = (
        shared_data("ud-norwegian/nob-dev.txt"),
        shared_data("ud-norwegian/nno-dev.txt"),
    ) else {
        return;
    };
    let Some(gpt2_dir) = artefact("gpt2") else {
        return;
    };
    let cfg = TrainConfig {
        kind: TokenizerKind::Bpe,
        vocab_size: 8000,
        show_progress: false,
        ..Default::default()
    };
    let ours = train_tokenizer(std::slice::from_ref(&nob), &cfg).unwrap();
    // A 2,400-sentence corpus runs out of pairs seen twice before 8,000 entries.
    assert!(
        ours.vocab_size() > 5000 && ours.vocab_size() <= 8000,
        "{}",
        ours.vocab_size()
    );
    let gpt2 = Tokenizer::from_dir(gpt2_dir).unwrap();
    for (name, path) in [
        ("nob-dev (training text)", &nob),
        ("nno-dev (held out)", &nno),
    ] {
        let lines = read_lines(path);
        let a = fertility(&ours, &lines).unwrap();
        let b = fertility(&gpt2, &lines).unwrap();
        println!(
            "fertility on {name}: trained BPE (8k) {:.3} tokens/word, GPT-2 {:.3} tokens/word ({} words)",
            a.fertility, b.fertility, a.words
        );
        assert!(a.fertility < b.fertility, "{name}: {a:?} vs {b:?}");
    }
    // Byte-level BPE round-trips any text.
    let s = "Blåbærsyltetøy på søndag – «ja»! 😊";
    let ids = ours.encode(s, false).unwrap();
    assert_eq!(ours.decode(&ids, false).unwrap(), s);
    // BOS is added by the post-processor.
    assert_eq!(ours.encode(s, true).unwrap()[0], ours.bos_id().unwrap());
}

#[test]
fn unigram_and_wordpiece_train_save_and_reload() {
    let Some(nob) = shared_data("ud-norwegian/nob-dev.txt") else {
        return;
    };
    for kind in [TokenizerKind::Unigram, TokenizerKind::WordPiece] {
        let cfg = TrainConfig {
            kind,
            vocab_size: 2000,
            show_progress: false,
            ..Default::default()
        };
        let tok = train_tokenizer(std::slice::from_ref(&nob), &cfg).unwrap();
        assert!(
            tok.vocab_size() <= 2000 && tok.vocab_size() > 500,
            "{kind:?}: {}",
            tok.vocab_size()
        );
        let dir = tempfile::tempdir().unwrap();
        tok.save(dir.path()).unwrap();
        let back = Tokenizer::from_dir(dir.path()).unwrap();
        let s = "Dommeren lar gjerningsbeskrivelsen tale for seg.";
        assert_eq!(
            back.encode(s, true).unwrap(),
            tok.encode(s, true).unwrap(),
            "{kind:?}"
        );
        let ids = tok.encode(s, false).unwrap();
        let text = tok.decode(&ids, true).unwrap();
        match kind {
            TokenizerKind::WordPiece => {
                assert_eq!(
                    tok.encode(s, true).unwrap()[0],
                    tok.token_to_id("[CLS]").unwrap()
                );
                // WordPiece's decoder cleans up the space before punctuation.
                assert_eq!(text, s);
            }
            _ => assert_eq!(text, s),
        }
    }
}

#[test]
fn vocabulary_extension_lowers_fertility_and_round_trips() {
    let (Some(nob), Some(dir)) = (shared_data("ud-norwegian/nob-dev.txt"), artefact("mistral"))
    else {
        return;
    };
    let lines = read_lines(&nob);
    let (train, held_out) = lines.split_at(2000);
    let mut tok = Tokenizer::from_dir(dir).unwrap();
    let before_vocab = tok.vocab_size();
    let cfg = ExtendConfig {
        max_new_tokens: 300,
        min_frequency: 3,
        ..Default::default()
    };
    let report = extend_vocabulary(&mut tok, train, &cfg).unwrap();
    println!(
        "vocabulary extension (Mistral tokenizer, 300 words from nob-dev): fertility {:.3} -> {:.3} on the training lines",
        report.before.fertility, report.after.fertility
    );
    assert!(!report.added.is_empty() && report.added.len() <= 300);
    // Intermediate merge results become tokens too.
    assert!(report.vocab_size >= before_vocab + report.added.len());
    assert!(
        report.after.fertility < report.before.fertility,
        "{:?} -> {:?}",
        report.before,
        report.after
    );
    let bad: Vec<_> = report
        .added
        .iter()
        .filter(|t| !t.token.starts_with('▁') || t.token.starts_with("▁▁") || t.pieces_before < 3)
        .collect();
    assert!(bad.is_empty(), "{bad:?}");
    // Held-out text gets cheaper too, and decoding is unchanged.
    let original = Tokenizer::from_dir(artefact("mistral").unwrap()).unwrap();
    let a = fertility(&tok, held_out).unwrap();
    let b = fertility(&original, held_out).unwrap();
    println!(
        "held-out fertility: {:.3} -> {:.3}",
        b.fertility, a.fertility
    );
    assert!(a.fertility < b.fertility);
    for line in held_out.iter().take(50) {
        let new_ids = tok.encode(line, false).unwrap();
        let old_ids = original.encode(line, false).unwrap();
        assert_eq!(
            tok.decode(&new_ids, false).unwrap(),
            original.decode(&old_ids, false).unwrap(),
            "{line}"
        );
    }
}
