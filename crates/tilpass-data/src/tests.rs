//! Tests over real files written to a temporary directory.

use std::io::Write;

use serde_json::json;

use crate::*;

fn file(name: &str, body: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(name);
    std::fs::File::create(&p)
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    (dir, p)
}

const CHAT: &str = r#"{"messages":[{"role":"system","content":"Du er hjelpsom."},{"role":"user","content":"Hva er hovedstaden i Norge?"},{"role":"assistant","content":"Oslo."}]}
{"messages":[{"role":"user","content":"Kva heiter du?"},{"role":"assistant","content":"Eg heiter Tilpass."}]}

{"messages":[{"role":"user","content":"Hva er hovedstaden i Norge?"},{"role":"assistant","content":"Oslo."}]}
"#;

#[test]
fn reads_conversations_and_skips_blank_lines() {
    let (_d, p) = file("chat.jsonl", CHAT);
    let ds = read_dataset(&p, &ReadOptions::default()).unwrap();
    assert_eq!(ds.len(), 3);
    assert_eq!(ds.locations[2], Location::Line(4));
    assert_eq!(ds.report.kind, Some(RecordKind::LanguageModeling));
    match &ds.records[1] {
        Record::Conversation { messages } => {
            assert_eq!(messages[1].role, Role::Assistant);
            assert_eq!(messages[1].content, "Eg heiter Tilpass.");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_trl_format_is_recognised() {
    let rows = [
        (
            json!({"text": "Nordlys over Tromsø."}),
            RecordKind::LanguageModeling,
            false,
        ),
        (
            json!({"prompt": "Skriv et dikt"}),
            RecordKind::PromptOnly,
            false,
        ),
        (
            json!({"prompt": [{"role":"user","content":"Hei"}], "completion": [{"role":"assistant","content":"Hei!"}]}),
            RecordKind::PromptCompletion,
            true,
        ),
        (
            json!({"prompt": "Himmelen er", "chosen": " blå.", "rejected": " grønn."}),
            RecordKind::Preference,
            false,
        ),
        (
            json!({"chosen": [{"role":"user","content":"Hei"},{"role":"assistant","content":"Hei!"}],
                   "rejected": [{"role":"user","content":"Hei"},{"role":"assistant","content":"Nei."}]}),
            RecordKind::Preference,
            true,
        ),
        (
            json!({"prompt": "Himmelen er", "completion": " blå.", "label": true}),
            RecordKind::UnpairedPreference,
            false,
        ),
    ];
    for (v, kind, conv) in rows {
        let r = Record::from_json(&v, None).unwrap();
        assert_eq!(r.kind(), kind, "{v}");
        assert_eq!(r.is_conversational(), conv, "{v}");
        // Writing and reading back gives the same record.
        assert_eq!(Record::from_json(&r.to_json(), None).unwrap(), r, "{v}");
    }
}

#[test]
fn alpaca_becomes_messages() {
    let v = json!({"instruction": "Oversett til nynorsk.", "input": "Jeg liker ikke regn.", "output": "Eg likar ikkje regn."});
    let r = Record::from_json(&v, None).unwrap();
    let Record::Conversation { messages } = r else {
        panic!()
    };
    assert_eq!(messages.len(), 2);
    assert_eq!(
        messages[0].content,
        "Oversett til nynorsk.\n\nJeg liker ikke regn."
    );
    assert_eq!(messages[1].role, Role::Assistant);
    let no_input = json!({"instruction": "Si hei.", "input": "", "output": "Hei!"});
    let Record::Conversation { messages } = Record::from_json(&no_input, None).unwrap() else {
        panic!()
    };
    assert_eq!(messages[0].content, "Si hei.");
}

#[test]
fn implicit_prompt_is_extracted_like_trl() {
    // The example of TRL's `extract_prompt` documentation.
    let v = json!({"chosen": "The sky is blue.", "rejected": "The sky is green."});
    let r = Record::from_json(&v, None).unwrap().with_explicit_prompt();
    assert_eq!(
        r,
        Record::Preference {
            prompt: Some(Content::Text("The sky is".into())),
            chosen: Content::Text(" blue.".into()),
            rejected: Content::Text(" green.".into()),
        }
    );
    let v = json!({"chosen": [{"role":"user","content":"Hei"},{"role":"assistant","content":"Hei!"}],
                   "rejected": [{"role":"user","content":"Hei"},{"role":"assistant","content":"Nei."}]});
    let Record::Preference {
        prompt: Some(Content::Messages(p)),
        chosen: Content::Messages(c),
        ..
    } = Record::from_json(&v, None).unwrap().with_explicit_prompt()
    else {
        panic!()
    };
    assert_eq!((p.len(), c.len()), (1, 1));
    assert_eq!(c[0].content, "Hei!");
}

#[test]
fn implicit_prompt_extraction_keeps_trls_quirks() {
    let split =
        |c: &str, r: &str| match Record::from_json(&json!({"chosen": c, "rejected": r}), None)
            .unwrap()
            .with_explicit_prompt()
        {
            Record::Preference {
                prompt: Some(Content::Text(p)),
                chosen: Content::Text(c),
                rejected: Content::Text(r),
            } => (p, c, r),
            other => panic!("{other:?}"),
        };
    let s = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
    // One side a prefix of the other: Python's loop ends on the last shared index.
    assert_eq!(
        split("Ja takk", "Ja takk, gjerne"),
        s("Ja tak", "k", "k, gjerne")
    );
    // Differing at the first character with `chosen` ending in a space: `chosen[-1]`.
    assert_eq!(split("Nei ", "Ja"), s("Nei", " ", "a"));
    assert_eq!(split("Nei", "Ja"), s("", "Nei", "Ja"));
    // Code points, not bytes.
    assert_eq!(
        split("Blåbær er gode", "Blåbær er sure"),
        s("Blåbær er", " gode", " sure")
    );
    // Conversations: the same last-index rule on messages.
    let v = json!({"chosen": [{"role":"user","content":"Hei"},{"role":"assistant","content":"Hei!"}],
                   "rejected": [{"role":"user","content":"Hei"},{"role":"assistant","content":"Hei!"},
                                {"role":"user","content":"Og?"}]});
    let Record::Preference {
        prompt: Some(Content::Messages(p)),
        chosen: Content::Messages(c),
        rejected: Content::Messages(r),
    } = Record::from_json(&v, None).unwrap().with_explicit_prompt()
    else {
        panic!()
    };
    assert_eq!((p.len(), c.len(), r.len()), (1, 1, 2));
}

#[test]
fn malformed_json_line_names_file_and_line() {
    let (_d, p) = file(
        "bad.jsonl",
        "{\"text\": \"ok\"}\n{\"text\": \"broken\"\n{\"text\": \"ok\"}\n",
    );
    let err = read_dataset(&p, &ReadOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            DataError::Json {
                location: Location::Line(2),
                ..
            }
        ),
        "{msg}"
    );
    assert!(msg.contains("bad.jsonl:line 2"), "{msg}");
}

#[test]
fn missing_messages_names_the_field() {
    let (_d, p) = file(
        "chat.jsonl",
        "{\"messages\": [{\"role\":\"user\",\"content\":\"Hei\"}]}\n{\"foo\": 1}\n",
    );
    let err = read_dataset(&p, &ReadOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            DataError::Record {
                location: Location::Line(2),
                ..
            }
        ),
        "{msg}"
    );
    assert!(msg.contains("field `messages`: missing"), "{msg}");
    // With the kind forced, the missing field itself is named.
    let opts = ReadOptions {
        kind: Some(RecordKind::LanguageModeling),
        ..Default::default()
    };
    let msg = read_dataset(&p, &opts).unwrap_err().to_string();
    assert!(
        msg.contains("line 2") && msg.contains("field `messages`: missing"),
        "{msg}"
    );
    // A first row of unknown shape lists the keys it has.
    let (_d2, p2) = file("odd.jsonl", "{\"foo\": 1}\n");
    let msg = read_dataset(&p2, &ReadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("line 1") && msg.contains("unrecognised record with keys [foo]"),
        "{msg}"
    );
}

#[test]
fn unknown_role_names_element_and_field() {
    let v = json!({"messages": [{"role":"user","content":"Hei"},{"role":"bot","content":"Hei!"}]});
    let err = Record::from_json(&v, None).unwrap_err();
    assert_eq!(err.field.as_deref(), Some("messages[1].role"));
    assert!(err.message.contains("unknown role `bot`"), "{err}");
    let v = json!({"chosen": [{"role":"user","content":1}], "rejected": []});
    let err = Record::from_json(&v, None).unwrap_err();
    assert_eq!(err.field.as_deref(), Some("chosen[0].content"), "{err}");
}

#[test]
fn mixed_styles_and_bad_labels_are_rejected() {
    let v = json!({"prompt": "Hei", "completion": [{"role":"assistant","content":"Hei!"}]});
    assert_eq!(
        Record::from_json(&v, None).unwrap_err().field.as_deref(),
        Some("completion")
    );
    let v = json!({"prompt": "a", "completion": "b", "label": "yes"});
    assert_eq!(
        Record::from_json(&v, None).unwrap_err().field.as_deref(),
        Some("label")
    );
}

#[test]
fn skip_invalid_counts_and_reports() {
    let body = "{\"text\": \"a\"}\nnot json\n{\"text\": 5}\n{\"prompt\":\"p\",\"completion\":\"c\"}\n{\"text\": \"b\"}\n";
    let (_d, p) = file("mixed.jsonl", body);
    let opts = ReadOptions {
        skip_invalid: true,
        ..Default::default()
    };
    let ds = read_dataset(&p, &opts).unwrap();
    assert_eq!(ds.len(), 2);
    let r = &ds.report;
    assert_eq!((r.rows, r.kept, r.skipped_count), (5, 2, 3));
    let lines: Vec<_> = r.skipped.iter().map(|s| s.location).collect();
    assert_eq!(
        lines,
        [Location::Line(2), Location::Line(3), Location::Line(4)]
    );
    assert!(
        r.skipped[1].reason.contains("field `text`"),
        "{:?}",
        r.skipped
    );
    assert!(r.skipped[2].reason.contains("one kind"), "{:?}", r.skipped);
}

#[test]
fn json_array_files_report_items() {
    let (_d, p) = file(
        "data.json",
        r#"[{"text": "a"}, {"text": "b"}, {"messages": "oops"}]"#,
    );
    let err = read_dataset(&p, &ReadOptions::default()).unwrap_err();
    assert!(err.to_string().contains("data.json:item 2"), "{err}");
    let (_d2, p2) = file("data.json", r#"{"data": [{"text": "a"}]}"#);
    assert_eq!(read_dataset(&p2, &ReadOptions::default()).unwrap().len(), 1);
    let (_d3, p3) = file("empty.jsonl", "\n\n");
    assert!(matches!(
        read_dataset(&p3, &ReadOptions::default()),
        Err(DataError::Empty { .. })
    ));
}

#[test]
fn streaming_reports_line_of_first_bad_row() {
    let (_d, p) = file("s.jsonl", "{\"text\": \"a\"}\n{\"text\": null}\n");
    let rows: Vec<_> = stream_records(&p, None).unwrap().collect();
    assert!(rows[0].is_ok());
    let err = rows[1].as_ref().unwrap_err().to_string();
    assert!(err.contains("s.jsonl:line 2"), "{err}");
}

#[test]
fn dedup_and_length_filter() {
    let (_d, p) = file("chat.jsonl", CHAT);
    let ds = read_dataset(&p, &ReadOptions::default()).unwrap();
    let mut exact = ds.records.clone();
    let rep = dedup(&mut exact, DedupKey::Exact);
    assert_eq!((rep.input, rep.kept, rep.removed), (3, 3, 0));
    // Rows 1 and 3 ask the same question.
    let mut by_prompt = ds.records.clone();
    let rep = dedup(&mut by_prompt, DedupKey::Prompt);
    assert_eq!(
        rep.removed, 0,
        "row 1 has a system prompt, so the prompts differ"
    );
    let texts = ["Hei  der", "hei der", "Hei der!", "Hei  der"];
    let mut recs: Vec<Record> = texts
        .iter()
        .map(|t| Record::Text {
            text: t.to_string(),
        })
        .collect();
    let mut exact = recs.clone();
    assert_eq!(dedup(&mut exact, DedupKey::Exact).removed, 1);
    assert_eq!(dedup(&mut recs, DedupKey::Normalized).removed, 2);
    assert_eq!(recs.len(), 2);
    let f = LengthFilter {
        min_chars: Some(8),
        max_chars: Some(8),
    };
    let mut all: Vec<Record> = texts
        .iter()
        .map(|t| Record::Text {
            text: t.to_string(),
        })
        .collect();
    assert_eq!(f.apply(&mut all), 1, "only \"hei der\" has 7 characters");
    assert_eq!(all.len(), 3);
    assert!(all.iter().all(|r| r.chars() == 8));
}

#[test]
fn statistics_count_rows_turns_and_characters() {
    let (_d, p) = file("chat.jsonl", CHAT);
    let ds = read_dataset(&p, &ReadOptions::default()).unwrap();
    let s = stats(&ds.records);
    assert_eq!(s.rows, 3);
    assert_eq!(s.conversational_rows, 3);
    assert_eq!((s.turns.min, s.turns.max, s.turns.total), (2, 3, 7));
    assert_eq!(s.messages_per_role["assistant"], 3);
    assert_eq!(s.chars_per_role["assistant"], 5 + 18 + 5);
    // "Du er hjelpsom." (15) + "Hva er hovedstaden i Norge?" (27) + "Oslo." (5)
    assert_eq!(s.chars.max, 47);
    assert_eq!(s.chars.total, 47 + 14 + 18 + 27 + 5);
}

#[test]
fn written_jsonl_reads_back() {
    let (d, p) = file("chat.jsonl", CHAT);
    let ds = read_dataset(&p, &ReadOptions::default()).unwrap();
    let out = d.path().join("out.jsonl");
    write_jsonl(&out, &ds.records).unwrap();
    let back = read_dataset(&out, &ReadOptions::default()).unwrap();
    assert_eq!(back.records, ds.records);
}

fn bytes_file(name: &str, body: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(name);
    std::fs::write(&p, body).unwrap();
    (dir, p)
}

#[test]
fn a_utf8_bom_is_accepted_in_jsonl_and_json_files() {
    let mut body = b"\xEF\xBB\xBF".to_vec();
    body.extend_from_slice(b"{\"text\": \"a\"}\n{\"text\": \"b\"}\n");
    let (_d, p) = bytes_file("bom.jsonl", &body);
    let ds = read_dataset(&p, &ReadOptions::default()).unwrap();
    assert_eq!(ds.len(), 2);
    assert_eq!(stream_records(&p, None).unwrap().count(), 2);
    let mut body = b"\xEF\xBB\xBF".to_vec();
    body.extend_from_slice(b"[{\"text\": \"a\"}]");
    let (_d, p) = bytes_file("bom.json", &body);
    assert_eq!(read_dataset(&p, &ReadOptions::default()).unwrap().len(), 1);
}

#[test]
fn invalid_utf8_names_file_and_line_and_can_be_skipped() {
    let (_d, p) = bytes_file(
        "latin1.jsonl",
        b"{\"text\": \"a\"}\n{\"text\": \"bl\xe5b\xe6r\"}\n{\"text\": \"c\"}\n",
    );
    let msg = read_dataset(&p, &ReadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("latin1.jsonl:2") && msg.contains("invalid UTF-8"),
        "{msg}"
    );
    let opts = ReadOptions {
        skip_invalid: true,
        ..Default::default()
    };
    let ds = read_dataset(&p, &opts).unwrap();
    assert_eq!((ds.len(), ds.report.skipped_count), (2, 1));
    assert_eq!(ds.report.skipped[0].location, Location::Line(2));
    assert_eq!(ds.locations, [Location::Line(1), Location::Line(3)]);
    // A JSON-array file names the line too.
    let (_d, p) = bytes_file(
        "latin1.json",
        b"[\n{\"text\": \"a\"},\n{\"text\": \"\xe5\"}]",
    );
    let msg = read_dataset(&p, &ReadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("latin1.json:3"), "{msg}");
}

#[test]
fn over_long_lines_are_errors_naming_the_line_within_a_configurable_limit() {
    let long = format!("{{\"text\": \"{}\"}}", "x".repeat(200));
    let body = format!("{{\"text\": \"a\"}}\n{long}\n{{\"text\": \"c\"}}\n");
    let (_d, p) = file("long.jsonl", &body);
    assert_eq!(read_dataset(&p, &ReadOptions::default()).unwrap().len(), 3);
    let opts = ReadOptions {
        max_line_bytes: Some(100),
        ..Default::default()
    };
    let msg = read_dataset(&p, &opts).unwrap_err().to_string();
    assert!(
        msg.contains("long.jsonl:2") && msg.contains("longer than 100 bytes"),
        "{msg}"
    );
    let opts = ReadOptions {
        max_line_bytes: Some(100),
        skip_invalid: true,
        ..Default::default()
    };
    let ds = read_dataset(&p, &opts).unwrap();
    assert_eq!((ds.len(), ds.report.skipped_count), (2, 1));
}
