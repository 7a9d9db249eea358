//! Fuzzing the loaders of untrusted files (see `tilpass_tests::fuzz`): each target must return
//! Ok or a typed error for every mutated input, never panic or hang. CI runs the case counts
//! below (the whole suite in well under three minutes on two cores); `TILPASS_FUZZ_CASES=N`
//! runs N cases per target locally.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tilpass::core::Checkpoint;
use tilpass::data::{ReadOptions, read_dataset, stream_records};
use tilpass::metrics as m;
use tilpass::models::AnyModel;
use tilpass::tokenize::{ChatTemplate, RenderOptions, SpecialTokens, TemplateLimits};
use tilpass_tests::fixture_path;
use tilpass_tests::fuzz::{Mutator, cases, corpus, run};

/// Copies every file of `from` except `skip` into a new temporary directory.
fn copy_dir(from: &Path, skip: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if p.is_file() && !skip.contains(&name.as_str()) {
            std::fs::copy(&p, dir.path().join(&name)).unwrap();
        }
    }
    dir
}

/// Bytes or (mostly) a structural JSON mutation of a JSON seed.
fn mutate_json_bytes(m: &mut Mutator, seed: &[u8], others: &[&[u8]]) -> Vec<u8> {
    match serde_json::from_slice::<Value>(seed) {
        Ok(v) if !m.one_in(3) => serde_json::to_vec(&m.json(&v)).unwrap(),
        _ => m.bytes(seed, others),
    }
}

fn read_all_tensors(ckpt: &Checkpoint) {
    let keys: Vec<String> = ckpt.keys().map(str::to_string).collect();
    for k in keys {
        let _ = ckpt.info(&k);
        let _ = ckpt.read_f32(&k);
    }
}

#[test]
fn fuzz_safetensors() {
    let seeds = corpus("safetensors");
    let others: Vec<&[u8]> = seeds.iter().map(|(_, b)| b.as_slice()).collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    run(
        "safetensors",
        cases(4000),
        |m| {
            let seed = &seeds[m.below(seeds.len())].1;
            // Mutate the header (JSON) structurally half of the time.
            let n = u64::from_le_bytes(seed[..8].try_into().unwrap()) as usize;
            if m.one_in(2) {
                let header: Value = serde_json::from_slice(&seed[8..8 + n]).unwrap();
                let h = serde_json::to_vec(&m.json(&header)).unwrap();
                let mut out = (h.len() as u64).to_le_bytes().to_vec();
                out.extend(h);
                out.extend_from_slice(&seed[8 + n..]);
                out
            } else {
                m.bytes(seed, &others)
            }
        },
        |bytes| {
            std::fs::write(&path, bytes).unwrap();
            match Checkpoint::open(&path) {
                Ok(c) => {
                    read_all_tensors(&c);
                    true
                }
                Err(_) => false,
            }
        },
    );
}

#[test]
fn fuzz_sharded_index() {
    let fixture = fixture_path("models/llama3_rope_bf16_sharded");
    let dir = copy_dir(&fixture, &["model.safetensors.index.json"]);
    let seeds = corpus("index");
    let others: Vec<&[u8]> = seeds.iter().map(|(_, b)| b.as_slice()).collect();
    let accepted = run(
        "sharded_index",
        cases(1000),
        |m| {
            if m.one_in(4) {
                // Aim at the file names: point an entry at another path.
                let mut v: Value = serde_json::from_slice(&seeds[0].1).unwrap();
                let names = [
                    "../model.safetensors",
                    "/etc/passwd",
                    "",
                    ".",
                    "sub/../../x",
                ];
                if let Some(w) = v["weight_map"].as_object_mut()
                    && let Some(k) = w.keys().next().cloned()
                {
                    w[&k] = Value::from(names[m.below(names.len())]);
                }
                serde_json::to_vec(&v).unwrap()
            } else {
                let i = m.below(seeds.len());
                mutate_json_bytes(m, &seeds[i].1, &others)
            }
        },
        |bytes| {
            std::fs::write(dir.path().join("model.safetensors.index.json"), bytes).unwrap();
            match Checkpoint::open(dir.path()) {
                Ok(c) => {
                    read_all_tensors(&c);
                    true
                }
                Err(e) => {
                    let _ = e.to_string();
                    false
                }
            }
        },
    );
    assert!(accepted > 0, "some mutations keep the index valid");
}

/// The fixture directory whose weights go with a config seed.
fn weights_for(seed: &str) -> PathBuf {
    fixture_path(match seed {
        "llama_gqa.json" => "models/llama_gqa",
        "mistral.json" => "models/mistral_sliding_window",
        "llama3_rope.json" => "models/llama3_rope_bf16_sharded",
        "gpt2.json" => "models/gpt2",
        "bert_cls.json" => "encoders/bert_cls",
        "ltg_bert_mlm.json" => "encoders/ltg_bert_mlm",
        "t5_v1_1.json" => "encoders/t5_v1_1",
        "nort5.json" => "encoders/nort5",
        other => panic!("no weights for config seed {other}"),
    })
}

#[test]
fn fuzz_config_json_every_family() {
    let device = tilpass_tests::test_device();
    let seeds = corpus("config");
    let others: Vec<&[u8]> = seeds.iter().map(|(_, b)| b.as_slice()).collect();
    let dirs: Vec<tempfile::TempDir> = seeds
        .iter()
        .map(|(name, _)| {
            copy_dir(
                &weights_for(name),
                &["config.json", "expected.safetensors", "inputs.json"],
            )
        })
        .collect();
    let per_family = cases(150);
    let accepted = run(
        "config_json",
        per_family * seeds.len(),
        |m| {
            let i = m.below(seeds.len());
            (i, mutate_json_bytes(m, &seeds[i].1, &others))
        },
        |(i, bytes)| {
            let dir = dirs[*i].path();
            std::fs::write(dir.join("config.json"), bytes).unwrap();
            match AnyModel::load(dir, &device) {
                Ok(model) => {
                    let _ = model.logits(&[1, 2, 3], None, Some(&[0, 1]));
                    true
                }
                Err(e) => {
                    let _ = e.to_string();
                    false
                }
            }
        },
    );
    assert!(accepted > 0, "some mutated configs still load");
}

#[test]
fn fuzz_adapter() {
    use tilpass::models::DecoderLm;
    use tilpass::peft::PeftModel;
    let device = tilpass_tests::test_device();
    let base_dir = fixture_path("models/llama_gqa");
    let names = ["llama_lora", "llama_dora", "llama_rslora_all_linear"];
    // Configs from the committed corpus, weights from the PEFT fixtures they came from.
    let configs = corpus("adapter");
    let seeds: Vec<(Vec<u8>, Vec<u8>)> = names
        .iter()
        .map(|n| {
            let cfg = &configs
                .iter()
                .find(|(f, _)| *f == format!("{n}.json"))
                .unwrap()
                .1;
            let d = fixture_path(&format!("peft/{n}"));
            (
                cfg.clone(),
                std::fs::read(d.join("adapter_model.safetensors")).unwrap(),
            )
        })
        .collect();
    let weights: Vec<&[u8]> = seeds.iter().map(|(_, w)| w.as_slice()).collect();
    let dir = tempfile::tempdir().unwrap();
    let accepted = run(
        "adapter",
        cases(600),
        |m| {
            let (cfg, w) = &seeds[m.below(seeds.len())];
            match m.below(3) {
                0 => (mutate_json_bytes(m, cfg, &[]), w.clone()),
                1 => (cfg.clone(), m.bytes(w, &weights)),
                _ => (mutate_json_bytes(m, cfg, &[]), m.bytes(w, &weights)),
            }
        },
        |(cfg, w)| {
            std::fs::write(dir.path().join("adapter_config.json"), cfg).unwrap();
            std::fs::write(dir.path().join("adapter_model.safetensors"), w).unwrap();
            let base = DecoderLm::load(&base_dir, &device).unwrap();
            let mut peft = PeftModel::new(base);
            match peft.load_adapter(dir.path(), "default") {
                Ok(_) => {
                    let model = peft.into_model();
                    let _ = AnyModel::CausalLm(model).logits(&[1, 2, 3], None, None);
                    true
                }
                Err(e) => {
                    let _ = e.to_string();
                    false
                }
            }
        },
    );
    assert!(accepted > 0, "some mutated adapters still load");
}

#[test]
fn fuzz_jsonl_records() {
    let seeds = corpus("jsonl");
    let others: Vec<&[u8]> = seeds.iter().map(|(_, b)| b.as_slice()).collect();
    let dir = tempfile::tempdir().unwrap();
    run(
        "jsonl",
        cases(4000),
        |m| {
            let (name, seed) = &seeds[m.below(seeds.len())];
            let bytes = if name.ends_with(".json") {
                mutate_json_bytes(m, seed, &others)
            } else {
                // Mutate one line structurally, or the bytes.
                let text = String::from_utf8_lossy(seed).into_owned();
                let lines: Vec<&str> = text.lines().collect();
                let k = m.below(lines.len());
                let mut out: Vec<u8> = Vec::new();
                for (j, l) in lines.iter().enumerate() {
                    if j == k {
                        out.extend(mutate_json_bytes(m, l.as_bytes(), &others));
                    } else {
                        out.extend_from_slice(l.as_bytes());
                    }
                    out.push(b'\n');
                }
                if m.one_in(3) {
                    m.bytes(&out, &others)
                } else {
                    out
                }
            };
            (name.clone(), bytes)
        },
        |(name, bytes)| {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            let strict = read_dataset(&p, &ReadOptions::default());
            let lenient = read_dataset(
                &p,
                &ReadOptions {
                    skip_invalid: true,
                    max_line_bytes: Some(1 << 16),
                    ..Default::default()
                },
            );
            if let Ok(ds) = &lenient {
                for r in &ds.records {
                    let _ = r.to_json();
                }
            }
            if name.ends_with(".jsonl") {
                for r in stream_records(&p, None).unwrap() {
                    let _ = r.map(|(_, rec)| rec.to_json());
                }
            }
            strict.is_ok()
        },
    );
}

/// Template fragments for generated templates.
const FRAGMENTS: &[&str] = &[
    "{% for m in messages %}",
    "{% endfor %}",
    "{% if m.role == 'user' %}",
    "{% if add_generation_prompt %}",
    "{% else %}",
    "{% endif %}",
    "{{ m.content }}",
    "{{ m['content']|trim }}",
    "{{ messages[0].content.split(' ')|join('|') }}",
    "{{ m.content|indent(4) }}",
    "{{ m.content|replace('a', 'bb') }}",
    "{{ m.content * 3 }}",
    "{{ messages|tojson }}",
    "{{ messages|tojson(indent=2) }}",
    "{{ '%5d'|format(loop.index) }}",
    "{{ '{:>6}'.format(m.role) }}",
    "{{ raise_exception('no') }}",
    "{{ bos_token }}",
    "{{ eos_token }}",
    "{% set ns = namespace(x='') %}",
    "{% set ns.x = ns.x ~ m.content %}",
    "{{ ns.x }}",
    "{% generation %}",
    "{% endgeneration %}",
    "{% for i in range(1000) %}",
    "{% for i in range(100000) %}",
    "{{ range(10)|list|sum }}",
    "{% macro f(n) %}{{ f(n) }}{% endmacro %}",
    "{{ f(1) }}",
    "{{ m.content[::-1] }}",
    "{{ 1 // 0 }}",
    "{{ strftime_now('%Y-%m-%d') }}",
    "{% if m.tool_calls is defined %}{{ m.tool_calls|tojson }}{% endif %}",
    "{{ tools|tojson if tools else '' }}",
    "{%- ",
    " -%}",
    "{{",
    "}}",
    "text ",
    "\n",
];

#[test]
fn fuzz_chat_templates() {
    let templates = corpus("template");
    let template_bytes: Vec<&[u8]> = templates.iter().map(|(_, b)| b.as_slice()).collect();
    let records: Vec<Value> = corpus("jsonl")
        .iter()
        .flat_map(|(_, b)| {
            String::from_utf8_lossy(b)
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .collect::<Vec<_>>()
        })
        .filter_map(|r| r.get("messages").cloned())
        .collect();
    let special = SpecialTokens {
        bos: Some("<s>".into()),
        eos: Some("</s>".into()),
        ..Default::default()
    };
    let limits = TemplateLimits {
        fuel: 200_000,
        max_output_bytes: 1 << 20,
    };
    run(
        "chat_template",
        cases(4000),
        |m| {
            let src: Vec<u8> = match m.below(3) {
                0 => {
                    let n = 1 + m.below(12);
                    (0..n)
                        .flat_map(|_| FRAGMENTS[m.below(FRAGMENTS.len())].bytes())
                        .collect()
                }
                1 => {
                    let i = m.below(templates.len());
                    m.bytes(&templates[i].1, &template_bytes)
                }
                _ => templates[m.below(templates.len())].1.clone(),
            };
            let i = m.below(records.len());
            let msgs = m.json(&records[i]);
            let gen_prompt = m.one_in(2);
            let tools = m.one_in(4).then(|| m.hostile_value());
            (
                String::from_utf8_lossy(&src).into_owned(),
                msgs,
                gen_prompt,
                tools,
            )
        },
        |(src, msgs, gen_prompt, tools)| {
            let Ok(t) = ChatTemplate::with_limits("fuzz", src, special.clone(), limits) else {
                return false;
            };
            let opts = RenderOptions {
                add_generation_prompt: *gen_prompt,
                tools: tools.clone(),
                ..Default::default()
            };
            match t.render_json(msgs, &opts) {
                Ok(r) => {
                    assert!(r.text.len() <= limits.max_output_bytes);
                    for s in &r.generation_spans {
                        assert!(s.start <= s.end && s.end <= r.text.len(), "{s:?}");
                        assert!(r.text.is_char_boundary(s.start) && r.text.is_char_boundary(s.end));
                    }
                    true
                }
                Err(e) => {
                    let _ = e.to_string();
                    false
                }
            }
        },
    );
}

#[test]
fn fuzz_metric_readers() {
    let seeds = corpus("metrics");
    let get = |n: &str| seeds.iter().find(|(f, _)| f == n).unwrap().1.clone();
    let (hyp, refs, qrels, runf) = (
        get("hyp.txt"),
        get("ref.txt"),
        get("qrels.txt"),
        get("run.txt"),
    );
    let all: Vec<&[u8]> = seeds.iter().map(|(_, b)| b.as_slice()).collect();
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    run(
        "metric_readers",
        cases(1500),
        |m| {
            let pick = m.below(4);
            let mut files = [hyp.clone(), refs.clone(), qrels.clone(), runf.clone()];
            files[pick] = m.bytes(&files[pick], &all);
            if m.one_in(3) {
                let other = m.below(4);
                files[other] = m.bytes(&files[other], &all);
            }
            files
        },
        |files| {
            for (n, b) in ["hyp", "ref", "qrels", "run"].iter().zip(files) {
                std::fs::write(p(n), b).unwrap();
            }
            let mut ok = false;
            if let (Ok(h), Ok(r)) = (m::read_lines(p("hyp")), m::read_lines(p("ref")))
                && h.len() == r.len()
            {
                let refs = vec![r.into_iter().map(Some).collect::<Vec<_>>()];
                let _ = m::Bleu::new(Default::default()).corpus_score(&h, &refs);
                let _ = m::Chrf::new(Default::default()).corpus_score(&h, &refs);
                let _ = m::Ter::new(Default::default()).corpus_score(&h, &refs);
                ok = true;
            }
            if let (Ok(q), Ok(r)) = (m::read_qrels(p("qrels")), m::read_run(p("run"))) {
                let _ = m::evaluate_run(&q, &r, &[1, 3, 10]);
                ok = true;
            }
            ok
        },
    );
}
