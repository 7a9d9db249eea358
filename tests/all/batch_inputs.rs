//! The one padding path into the models: `tilpass::tokenize::Batch` → `DecoderInput::from_batch`
//! / `EncoderInput::from_batch` (the parity tests build their reference batches through it;
//! here: what each model kind refuses).

use tilpass::models::{DecoderInput, EncoderInput, ModelError};
use tilpass::tokenize::{Batch, BatchRow, PadSide, Padding, SftExample, collate_packed, pack_bfd};

fn input_error(r: Result<impl std::fmt::Debug, ModelError>) -> String {
    match r {
        Err(ModelError::Input(m)) => m,
        other => panic!("expected an input error, got {other:?}"),
    }
}

#[test]
fn decoder_inputs_take_any_padding_side_and_packed_rows() {
    let rows = [vec![3u32, 4, 5], vec![6]];
    for padding in [Padding::left(0), Padding::right(0)] {
        let b = Batch::from_ids(&rows, padding);
        let input = DecoderInput::from_batch(&b).unwrap();
        assert_eq!(
            (input.input_ids, input.attention_mask, input.position_ids),
            (b.input_ids, b.attention_mask, b.position_ids),
            "{padding:?}"
        );
        assert_eq!((input.batch, input.seq), (2, 3));
    }
    let docs: Vec<SftExample> = [2usize, 3]
        .iter()
        .map(|&n| SftExample {
            input_ids: vec![7; n],
            labels: vec![7; n],
            attention_mask: vec![1; n],
        })
        .collect();
    let packed = collate_packed(&pack_bfd(&docs, 8), Padding::right(0)).unwrap();
    let input = DecoderInput::from_batch(&packed).unwrap();
    assert_eq!(
        input.attention_mask,
        [1, 1, 1, 2, 2],
        "document numbers (longest first)"
    );
    assert_eq!(input.position_ids, [0, 1, 2, 0, 1], "positions restart");
}

#[test]
fn decoder_inputs_refuse_empty_batches_and_rows_without_tokens() {
    let empty: [Vec<u32>; 0] = [];
    let m = input_error(DecoderInput::from_batch(&Batch::from_ids(
        &empty,
        Padding::left(0),
    )));
    assert!(m.contains("at least one token"), "{m}");
    let m = input_error(DecoderInput::from_batch(&Batch::from_ids(
        &[vec![1u32, 2], vec![]],
        Padding::left(0),
    )));
    assert!(m.contains("at least one token"), "{m}");
    let mut b = Batch::from_ids(&[vec![1u32, 2]], Padding::left(0));
    b.position_ids.pop();
    let m = input_error(DecoderInput::from_batch(&b));
    assert!(m.contains("1x2"), "{m}");
}

#[test]
fn encoder_inputs_take_right_padded_batches_with_token_types() {
    let (ids, types) = ([101u32, 7, 102, 8, 102], [0u32, 0, 0, 1, 1]);
    let b = Batch::pad(
        [
            BatchRow::new(&ids).with_token_type_ids(&types),
            BatchRow::new(&ids[..2]),
        ],
        Padding::right(0),
    )
    .unwrap();
    let input = EncoderInput::from_batch(&b).unwrap();
    assert_eq!(input.token_type_ids, [0, 0, 0, 1, 1, 0, 0, 0, 0, 0]);
    assert_eq!(input.attention_mask, [1, 1, 1, 1, 1, 1, 1, 0, 0, 0]);
    assert_eq!(input.input_ids, [101, 7, 102, 8, 102, 101, 7, 0, 0, 0]);
    assert_eq!(b.padding_side, PadSide::Right);
}

#[test]
fn encoder_inputs_refuse_left_padding_packed_rows_and_empty_rows() {
    let rows = [vec![1u32, 2, 3], vec![4]];
    let m = input_error(EncoderInput::from_batch(&Batch::from_ids(
        &rows,
        Padding::left(0),
    )));
    assert!(m.contains("right-padded"), "{m}");
    let docs: Vec<SftExample> = [1usize, 1]
        .iter()
        .map(|&n| SftExample {
            input_ids: vec![7; n],
            labels: vec![7; n],
            attention_mask: vec![1; n],
        })
        .collect();
    let packed = collate_packed(&pack_bfd(&docs, 4), Padding::right(0)).unwrap();
    let m = input_error(EncoderInput::from_batch(&packed));
    assert!(m.contains("document numbers"), "{m}");
    let m = input_error(EncoderInput::from_batch(&Batch::from_ids(
        &[vec![1u32], vec![]],
        Padding::right(0),
    )));
    assert!(m.contains("at least one token"), "{m}");
}
