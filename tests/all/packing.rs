//! Packing: TRL 1.16.0's BFD packing and padding-free collation (fixtures made by TRL's
//! `SFTTrainer` itself, tests/fixtures/generate_trl.py → tokenize/packing.json); no attention
//! crosses documents and positions restart per document.

use serde_json::Value;
use tilpass::tokenize::{
    IGNORE_INDEX, PACK_BLOCK, PadSide, SftExample, collate, concat_packed, pack_bfd,
};
use tilpass_tests::fixture_json;

fn ints(v: &Value) -> Vec<i64> {
    serde_json::from_value(v.clone()).expect("integer list")
}

/// The only row of a `[1, n]` collator output.
fn one_row(v: &Value) -> Vec<i64> {
    let rows: Vec<Vec<i64>> = serde_json::from_value(v.clone()).expect("integer matrix");
    assert_eq!(rows.len(), 1, "padding-free batches are one row");
    rows.into_iter().next().unwrap()
}

#[test]
fn bfd_packing_matches_trl() {
    let fx = fixture_json("tokenize/packing.json");
    assert_eq!(fx["versions"]["trl"], "1.16.0");
    let cases = fx["cases"].as_array().unwrap();
    let mut over_block = false;
    for case in cases {
        let id = case["id"].as_str().unwrap();
        assert_eq!(case["config"]["packing_strategy"], "bfd", "{id}");
        let max_length = case["config"]["max_length"].as_u64().unwrap() as usize;
        // Pre-tokenized rows: TRL's labels are a copy of input_ids.
        let examples: Vec<SftExample> = case["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let ids: Vec<u32> = serde_json::from_value(r["input_ids"].clone()).unwrap();
                SftExample {
                    labels: ids.iter().map(|&i| i64::from(i)).collect(),
                    attention_mask: vec![1; ids.len()],
                    input_ids: ids,
                }
            })
            .collect();
        over_block |= examples.len() > PACK_BLOCK;
        let exp = &case["expected"];
        let rows = exp["rows"].as_array().unwrap();
        let packed = pack_bfd(&examples, max_length);
        assert_eq!(packed.len(), rows.len(), "{id}: rows");
        for (i, (p, row)) in packed.iter().zip(rows).enumerate() {
            let ids: Vec<i64> = p.input_ids.iter().map(|&x| i64::from(x)).collect();
            assert_eq!(ids, ints(&row["input_ids"]), "{id}: row {i} ids");
            let lens: Vec<usize> = serde_json::from_value(row["seq_lengths"].clone()).unwrap();
            assert_eq!(p.doc_lengths, lens, "{id}: row {i} seq_lengths");
            // TRL's dataset rows keep the labels; its collator masks document starts.
            let mut labels = ints(&row["labels"]);
            let mut start = 0;
            for n in &lens {
                labels[start] = IGNORE_INDEX;
                start += n;
            }
            assert_eq!(p.labels, labels, "{id}: row {i} labels");
            if let Some(coll) = exp.get("collated_rows") {
                assert_eq!(
                    p.labels,
                    one_row(&coll[i]["labels"]),
                    "{id}: row {i} collated"
                );
                assert_eq!(
                    p.position_ids,
                    one_row(&coll[i]["position_ids"]),
                    "{id}: row {i} positions"
                );
            }
        }
        if let Some(batch) = exp.get("batch") {
            let flat = concat_packed(&packed);
            let ids: Vec<i64> = flat.input_ids.iter().map(|&x| i64::from(x)).collect();
            assert_eq!(ids, one_row(&batch["input_ids"]), "{id}: flat ids");
            assert_eq!(flat.labels, one_row(&batch["labels"]), "{id}: flat labels");
            assert_eq!(
                flat.position_ids,
                one_row(&batch["position_ids"]),
                "{id}: flat positions"
            );
            let cu: Vec<i64> = flat.cu_seqlens().iter().map(|&x| x as i64).collect();
            assert_eq!(cu, ints(&batch["cu_seq_lens_q"]), "{id}: cu_seq_lens");
            let seq_idx: Vec<i64> = flat.document_ids().iter().map(|&d| d as i64).collect();
            assert_eq!(seq_idx, one_row(&batch["seq_idx"]), "{id}: seq_idx");
        }
    }
    assert!(
        over_block,
        "a case spans more than one block of {PACK_BLOCK} rows"
    );
}

fn example(len: usize, seed: u32) -> SftExample {
    let ids: Vec<u32> = (0..len as u32).map(|i| seed * 1000 + i).collect();
    SftExample {
        labels: ids.iter().map(|&i| i64::from(i)).collect(),
        attention_mask: vec![1; len],
        input_ids: ids,
    }
}

#[test]
fn best_fit_decreasing_fills_bins_and_keeps_documents_intact() {
    let lens = [7, 5, 4, 3, 2, 2, 1];
    let examples: Vec<SftExample> = lens
        .iter()
        .enumerate()
        .map(|(i, &l)| example(l, i as u32 + 1))
        .collect();
    let packed = pack_bfd(&examples, 8);
    // BFD on [7,5,4,3,2,2,1] into 8: {7,1}, {5,3}, {4,2,2}: the optimum, ceil(24/8) = 3
    // (a property of the algorithm, not a TRL output: bfd_packing_matches_trl checks those).
    assert_eq!(packed.len(), 3);
    let mut seen = vec![0; examples.len()];
    for p in &packed {
        assert!(p.len() <= 8);
        assert_eq!(p.doc_lengths.iter().sum::<usize>(), p.len());
        let mut offset = 0;
        for (&d, &n) in p.doc_indices.iter().zip(&p.doc_lengths) {
            seen[d] += 1;
            // The document's tokens, in order, unchanged.
            assert_eq!(&p.input_ids[offset..offset + n], &examples[d].input_ids[..]);
            offset += n;
        }
    }
    assert!(
        seen.iter().all(|&c| c == 1),
        "every document packed once: {seen:?}"
    );
}

#[test]
fn positions_restart_and_attention_never_crosses_documents() {
    let examples: Vec<SftExample> = [13, 3, 9, 1, 6, 10, 4, 4]
        .iter()
        .enumerate()
        .map(|(i, &l)| example(l, i as u32 + 1))
        .collect();
    let packed = pack_bfd(&examples, 16);
    for p in &packed {
        let docs = p.document_ids();
        let n = p.len();
        // position_ids: 0 at every document start, +1 inside a document.
        for i in 0..n {
            let starts_doc = i == 0 || docs[i] != docs[i - 1];
            if starts_doc {
                assert_eq!(p.position_ids[i], 0, "position resets at {i}");
                assert_eq!(
                    p.labels[i], IGNORE_INDEX,
                    "no label crosses into document at {i}"
                );
            } else {
                assert_eq!(p.position_ids[i], p.position_ids[i - 1] + 1);
                assert_ne!(p.labels[i], IGNORE_INDEX);
            }
        }
        let mask = p.attention_mask();
        assert_eq!(mask.len(), n * n);
        let mut allowed = 0;
        for q in 0..n {
            for k in 0..n {
                let visible = !mask[q * n + k];
                if docs[q] != docs[k] {
                    assert!(
                        !visible,
                        "query {q} (doc {}) sees key {k} (doc {})",
                        docs[q], docs[k]
                    );
                }
                if visible {
                    assert!(k <= q, "causal: {q} must not see future {k}");
                    allowed += 1;
                }
            }
        }
        // Exactly the causal triangles of the documents are visible.
        let expected: usize = p.doc_lengths.iter().map(|l| l * (l + 1) / 2).sum();
        assert_eq!(allowed, expected);
        assert_eq!(*p.cu_seqlens().last().unwrap(), n);
    }
}

#[test]
fn too_long_examples_are_truncated_to_the_block() {
    let packed = pack_bfd(&[example(20, 1), example(3, 2)], 8);
    assert_eq!(packed.iter().map(|p| p.len()).sum::<usize>(), 8 + 3);
}

#[test]
fn collate_pads_left_or_right() {
    let ex = [example(3, 1), example(1, 2)];
    let right = collate(&ex, 0, PadSide::Right, Some(4)).unwrap();
    assert_eq!(right.shape(), [2, 4]);
    assert_eq!(right.row_ids(1), [2000, 0, 0, 0]);
    assert_eq!(&right.attention_mask[4..], [1, 0, 0, 0]);
    assert_eq!(
        &right.labels[4..],
        [2000, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]
    );
    let left = collate(&ex, 0, PadSide::Left, None).unwrap();
    assert_eq!(left.shape(), [2, 3]);
    assert_eq!(left.row_ids(1), [0, 0, 2000]);
    assert_eq!(&left.attention_mask[3..], [0, 0, 1]);
    // HF: position_ids = cumsum(mask) - 1, masked positions filled with 1 (transformers 4.x;
    // 5.x fills 0: padding positions reach no real token).
    assert_eq!(&left.position_ids[..3], [0, 1, 2]);
    assert_eq!(&left.position_ids[3..], [1, 1, 0]);
}
