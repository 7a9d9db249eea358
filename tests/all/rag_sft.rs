//! RAG fine-tuning examples of tilpass-rag (`build_rag_sft`) on the embedded norsk-rag set:
//! each cites the passage the judgements grade highest (the first such in the prompt), quotes a
//! sentence of it, and — the point of the examples — its training prompt is token for token the
//! prompt `rag ask` builds for the same question (the SFT encoder's prompt part equals
//! `build_prompt`'s ids), so what the model learns is what it is asked at inference.

use tilpass::data::embedded::{NORSK_RAG_PASSAGES_JSONL, NORSK_RAG_QRELS, NORSK_RAG_QUERIES_JSONL};
use tilpass::rag::eval::{parse_qrels, parse_queries};
use tilpass::rag::{
    AnalysisConfig, ChunkerConfig, Document, KnowledgeBase, PromptConfig, PromptLang, RagSftConfig,
    build_prompt, build_rag_sft,
};
use tilpass::tokenize::chat_template::NORSK_TEMPLATE;
use tilpass::tokenize::{SftConfig, SftEncoder, Tokenizer};
use tilpass_tests::fixture_path;

#[test]
fn examples_cite_the_judged_passage_and_train_on_the_ask_prompt() {
    let t = tempfile::tempdir().unwrap();
    let kb = KnowledgeBase::create(
        t.path().join("kb"),
        AnalysisConfig::default(),
        ChunkerConfig::default(),
    )
    .unwrap();
    let mut w = kb.writer().unwrap();
    for line in NORSK_RAG_PASSAGES_JSONL.lines() {
        let d: Document = serde_json::from_str(line).unwrap();
        w.upsert(&d).unwrap();
    }
    w.commit().unwrap();
    w.close().unwrap();
    // A small WordPiece tokenizer with the quickstart's chat template.
    let mut tok = Tokenizer::from_dir(fixture_path("rag/cross_encoder/labels1")).unwrap();
    tok.set_chat_template("default", NORSK_TEMPLATE);
    let queries: Vec<_> = parse_queries("q", NORSK_RAG_QUERIES_JSONL)
        .unwrap()
        .into_iter()
        .take(80)
        .collect();
    let qrels = parse_qrels("qrels", NORSK_RAG_QRELS).unwrap();
    let cfg = RagSftConfig::default();
    let (examples, report) = build_rag_sft(&kb, &tok, &queries, &qrels, &cfg, Some(512)).unwrap();
    assert_eq!(
        report.examples + report.not_retrieved + report.unjudged,
        queries.len()
    );
    assert_eq!(report.by_position.iter().sum::<usize>(), examples.len());
    assert_eq!(report.abstaining, 0);
    assert!(examples.len() >= 40, "{report:?}");
    // Nynorsk queries get Nynorsk instructions.
    assert!(
        examples
            .iter()
            .any(|e| e.messages[0].content.contains("berre ut frå kjeldene"))
    );
    let enc = SftEncoder::new(&tok, SftConfig::default()).unwrap();
    for (i, e) in examples.iter().enumerate() {
        let q = queries.iter().find(|q| q.id == e.query_id).unwrap();
        let judged = &qrels[&e.query_id];
        let top = *judged.values().max().unwrap();
        assert!(top >= 2);
        let p = &e.passages[e.cited - 1];
        assert_eq!(p.id, e.cited_id);
        assert_eq!(judged[&e.cited_id], top, "{}", e.query_id);
        // The first passage of the prompt with the top grade.
        assert!(
            e.passages[..e.cited - 1]
                .iter()
                .all(|o| judged.get(&o.id) != Some(&top))
        );
        let suffix = format!(" [{}]", e.cited);
        let sentence = e.answer.strip_suffix(&suffix).expect("ends with [n]");
        assert!(
            !sentence.is_empty() && p.text.contains(sentence),
            "{sentence:?}"
        );
        // The same prompt as `rag ask` (build_prompt with the query's language).
        let lang = if q.lang.as_deref() == Some("nn") {
            PromptLang::Nn
        } else {
            PromptLang::Nb
        };
        let hits = kb.search(&q.text, 3).unwrap();
        let pcfg = PromptConfig {
            lang,
            ..cfg.prompt.clone()
        };
        let ask = build_prompt(&pcfg, &tok, &q.text, &hits, Some(512)).unwrap();
        assert_eq!(ask.text, e.prompt_text);
        let row = enc.encode(i, &e.record()).unwrap();
        assert_eq!(
            tilpass::train::prompt_of(&row),
            &ask.ids[..],
            "{}",
            e.query_id
        );
        let json = e.to_json();
        let msgs = json["messages"].as_array().unwrap();
        assert_eq!(msgs.last().unwrap()["role"], "assistant");
        assert_eq!(msgs.last().unwrap()["content"], e.answer.as_str());
    }

    // Abstaining examples: queries whose prompt holds no relevant passage, answered without a
    // citation in the query's language; the citing examples are the same as before.
    let with = RagSftConfig {
        abstain: true,
        ..cfg.clone()
    };
    let (all, r) = build_rag_sft(&kb, &tok, &queries, &qrels, &with, Some(512)).unwrap();
    assert_eq!(all.len(), examples.len() + r.abstaining);
    assert!(r.abstaining <= r.not_retrieved);
    let citing: Vec<_> = all.iter().filter(|e| e.cited > 0).cloned().collect();
    assert_eq!(citing, examples);
    let first = RagSftConfig {
        cite_first: true,
        ..cfg.clone()
    };
    let (opened, _) = build_rag_sft(&kb, &tok, &queries, &qrels, &first, Some(512)).unwrap();
    assert_eq!(opened.len(), examples.len());
    for (o, e) in opened.iter().zip(&examples) {
        let sentence = e.answer.strip_suffix(&format!(" [{}]", e.cited)).unwrap();
        assert_eq!(o.answer, format!("[{}] {sentence}", e.cited));
    }
    for e in all.iter().filter(|e| e.cited == 0) {
        let judged = &qrels[&e.query_id];
        assert!(
            e.passages
                .iter()
                .all(|p| judged.get(&p.id).is_none_or(|g| *g < 1))
        );
        assert!(
            [
                tilpass::rag::sft::NOT_FOUND_NB,
                tilpass::rag::sft::NOT_FOUND_NN
            ]
            .contains(&e.answer.as_str())
        );
    }
}
