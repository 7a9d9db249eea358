//! `tilpass data translate`: a dataset in any TRL format (or Alpaca) translated into Bokmål or
//! Nynorsk with a local model, row by row, every input field kept and a `quality` object added.
//!
//! What is translated: `text`; the `content` of every message in `messages`, `prompt`,
//! `completion`, `chosen`, `rejected` (roles and other message fields stay); the plain strings
//! of those fields; Alpaca's `system`, `instruction`, `input` and `output`. Each such text is
//! one segment: its code (```` ``` ```` blocks and inline `` `code` ``) is swapped for
//! markers `[[C0]]`, ... ([`super::protect`]) before it is put into the prompt template (a
//! decoder) or given as the encoder input (an encoder-decoder), and put back afterwards. A text
//! that is only code (or empty) is copied.
//!
//! The `quality` object of a row (its keys are documented on [`TranslateRun::run`]) flags a
//! lost or repeated code marker, changed placeholders (`{name}`, `[EPOST]`), an empty output,
//! the wrong language or written form (the builtin [`tilpass_data::LangId`] over the row's
//! translated text) and a length ratio (output / source characters) outside the configured
//! range; with `round_trip` the output is translated back with `back_template` and scored
//! against the source with chrF (sacrebleu's chrF2 over the row's segments).
//!
//! The output is appended row by row and resumable ([`super::append`]): a rerun with the same
//! settings continues after the last complete row. Batches are formed from the start of the
//! data, so a resumed run recomputes the batch it stopped in and writes exactly the bytes an
//! uninterrupted run writes (greedy decoding). Within a batch of `batch_size` rows, the texts
//! go to the model `batch_size` at a time in order of prompt length (less padding, and texts
//! that tend to end together); the order depends only on the batch, so resuming is unaffected.
//!
//! Memory does not grow with the data: the input is read a line at a time (once to check every
//! row, once to translate), and resuming counts the output's rows without keeping them. A run
//! over 100,000 rows: docs/data.md.

use std::path::PathBuf;
use std::time::Instant;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tilpass_data::{LangId, Record};
use tilpass_metrics::{Chrf, ChrfConfig};

use super::append::open_resumable_counted;
use super::jsonl::row as parse_row;
use super::protect::{MaskedText, mask_code, placeholder_changes};
use super::textgen::{PromptFormat, TextGenOptions, TextModel};
use super::{RunConfig, check};
use crate::error::{Result, TrainError};

/// Bokmål or Nynorsk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum WrittenForm {
    /// Norwegian Bokmål (`nb`).
    #[default]
    Nb,
    /// Norwegian Nynorsk (`nn`).
    Nn,
}

impl WrittenForm {
    /// `nb` / `nn`: the language identifier's label.
    pub fn code(self) -> &'static str {
        match self {
            Self::Nb => "nb",
            Self::Nn => "nn",
        }
    }
}

impl std::str::FromStr for WrittenForm {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "nb" => Ok(Self::Nb),
            "nn" => Ok(Self::Nn),
            _ => Err(format!("`{s}`: expected nb (Bokmål) or nn (Nynorsk)")),
        }
    }
}

/// The default prompt for a translation into Bokmål; `{text}` is the text (code masked).
pub const TEMPLATE_NB: &str = "Oversett teksten nedenfor til norsk bokmål. Behold kodemarkører \
som [[C0]] og plassholdere som {navn} og [EPOST] nøyaktig som de er. Svar bare med \
oversettelsen.\n\n{text}";

/// The default prompt for a translation into Nynorsk; `{text}` is the text (code masked).
pub const TEMPLATE_NN: &str = "Omset teksten nedanfor til nynorsk. Behald kodemerke som [[C0]] \
og plasshaldarar som {namn} og [EPOST] nøyaktig som dei er. Svar berre med omsetjinga.\n\n{text}";

/// The default prompt translating an output back (round trip), into English.
pub const BACK_TEMPLATE: &str = "Translate the text below into English. Keep code markers such \
as [[C0]] and placeholders such as {name} and [EMAIL] exactly as they are. Reply with the \
translation only.\n\n{text}";

/// Settings of a translation job; field names are the `tilpass data translate` flags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TranslateRun {
    /// The model's directory (a causal LM or an encoder-decoder, with its tokenizer).
    pub model: Option<PathBuf>,
    /// A LoRA / DoRA adapter for the model (HF PEFT format).
    pub adapter: Option<PathBuf>,
    /// Device the CLI runs on; [`TranslateRun::run`] takes the device as an argument.
    pub device: String,
    /// Input dataset (JSONL, any TRL format or Alpaca).
    pub data: Option<PathBuf>,
    /// Output JSONL (appended; resumable).
    pub out: Option<PathBuf>,
    /// Target written form.
    pub to: WrittenForm,
    /// Prompt with `{text}` (default: [`TEMPLATE_NB`] / [`TEMPLATE_NN`] by `to`); for an
    /// encoder-decoder, e.g. `"{text}"` or a task prefix.
    pub template: Option<String>,
    /// Prompt translating an output back for `round_trip` (default [`BACK_TEMPLATE`]).
    pub back_template: Option<String>,
    /// Translate every output back and score it against the source with chrF.
    pub round_trip: bool,
    /// How a decoder receives the prompt.
    pub prompt_format: PromptFormat,
    /// Rows per batch (the texts of a batch's rows are generated `batch_size` at a time).
    pub batch_size: usize,
    /// New tokens at most per text.
    pub max_new_tokens: usize,
    /// Flag a row whose output / source characters fall below this.
    pub min_length_ratio: f64,
    /// Flag a row whose output / source characters exceed this.
    pub max_length_ratio: f64,
}

impl Default for TranslateRun {
    fn default() -> Self {
        Self {
            model: None,
            adapter: None,
            device: "flex".into(),
            data: None,
            out: None,
            to: WrittenForm::Nb,
            template: None,
            back_template: None,
            round_trip: false,
            prompt_format: PromptFormat::Auto,
            batch_size: 8,
            max_new_tokens: 512,
            min_length_ratio: 0.5,
            max_length_ratio: 2.0,
        }
    }
}

fn check_template(name: &str, t: &Option<String>) -> Result<()> {
    match t {
        Some(t) if !t.contains("{text}") => Err(TrainError::setting(
            name,
            format!("{t:?}"),
            "a prompt with `{text}` where the text goes",
        )),
        _ => Ok(()),
    }
}

impl RunConfig for TranslateRun {
    const JOB: &'static str = "translate";

    fn validate(&self) -> Result<()> {
        check::path("model", &self.model)?;
        check::path("data", &self.data)?;
        check::path("out", &self.out)?;
        check_template("template", &self.template)?;
        check_template("back_template", &self.back_template)?;
        check::at_least("batch_size", self.batch_size, 1)?;
        check::at_least("max_new_tokens", self.max_new_tokens, 1)?;
        check::non_negative("min_length_ratio", self.min_length_ratio)?;
        check::positive("max_length_ratio", self.max_length_ratio)?;
        if self.max_length_ratio < self.min_length_ratio {
            return Err(TrainError::setting(
                "max_length_ratio",
                self.max_length_ratio,
                format!("at least min_length_ratio ({})", self.min_length_ratio),
            ));
        }
        Ok(())
    }
}

/// What a translation job did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TranslateOutcome {
    /// Rows in the input.
    pub rows: usize,
    /// Rows the output held when the job started (an earlier, interrupted run).
    pub resumed: usize,
    /// Rows written by this run.
    pub written: usize,
    /// Rows of this run with a quality flag.
    pub flagged: usize,
    /// Texts sent to the model by this run (translations, and back-translations).
    pub generated: usize,
    /// Seconds it took.
    pub seconds: f64,
}

/// Where a translated text sits in a row: a top-level field, or the `content` of message
/// `index` of it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Slot {
    key: String,
    index: Option<usize>,
}

/// The fields translated in a row of each layout.
const ALPACA_KEYS: &[&str] = &["system", "instruction", "input", "output"];
const TRL_KEYS: &[&str] = &[
    "text",
    "messages",
    "prompt",
    "completion",
    "chosen",
    "rejected",
];

/// The texts of a row to translate, in field order.
fn segments(row: &Value) -> Vec<(Slot, String)> {
    let keys = if row.get("instruction").is_some() {
        ALPACA_KEYS
    } else {
        TRL_KEYS
    };
    let mut out = Vec::new();
    for k in keys {
        match row.get(*k) {
            Some(Value::String(s)) => out.push((
                Slot {
                    key: k.to_string(),
                    index: None,
                },
                s.clone(),
            )),
            Some(Value::Array(msgs)) => {
                for (i, m) in msgs.iter().enumerate() {
                    if let Some(s) = m.get("content").and_then(Value::as_str) {
                        out.push((
                            Slot {
                                key: k.to_string(),
                                index: Some(i),
                            },
                            s.to_string(),
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

fn put(row: &mut Value, slot: &Slot, text: String) {
    match slot.index {
        None => row[&slot.key] = Value::String(text),
        Some(i) => row[&slot.key][i]["content"] = Value::String(text),
    }
}

/// One text of a batch on its way through the model.
struct Job {
    row: usize,
    slot: Slot,
    source: String,
    masked: MaskedText,
    /// Sent to the model (false: empty or only code, copied).
    translate: bool,
    output: String,
    back: Option<String>,
}

impl TranslateRun {
    /// The settings a resumed run must share with the run it continues (all but `out` and
    /// `device`).
    pub fn resume_key(&self) -> Result<Value> {
        let mut v = self.to_json()?;
        if let Value::Object(m) = &mut v {
            m.remove("out");
            m.remove("device");
        }
        Ok(v)
    }

    fn template(&self) -> String {
        self.template.clone().unwrap_or_else(|| {
            match self.to {
                WrittenForm::Nb => TEMPLATE_NB,
                WrittenForm::Nn => TEMPLATE_NN,
            }
            .to_string()
        })
    }

    /// Translates every row of `data` into `out` on `device`, calling `progress(done, rows)`
    /// after each batch. Every input row is written, in order, with its fields and a
    /// `quality` object: `ok` (no flag), `flags` (any of `code_lost`, `code_repeated`,
    /// `placeholders_changed`, `empty_output`, `language`, `written_form`, `length_ratio`),
    /// `lang` and `lang_prob` (the language identifier's label and posterior for the row's
    /// translated text; `null` when nothing was translated), `length_ratio`, `segments`,
    /// `translated` (segments sent to the model), `round_trip_chrf` (with `round_trip`), and,
    /// when flagged, `placeholder_changes` (`{field, placeholder, source, output}`: the field —
    /// `messages[1]` for a message — and the placeholder's count in the source and the output).
    ///
    /// Every row is checked first (a TRL or Alpaca record without a `quality` field): a bad
    /// row is [`TrainError::Row`] naming file and line, before anything is written.
    pub fn run(
        &self,
        device: &Device,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<TranslateOutcome> {
        self.validate()?;
        let start = Instant::now();
        let data = check::path("data", &self.data)?;
        let out = check::path("out", &self.out)?;
        let model_dir = check::path("model", &self.model)?;
        // Every row is checked first, a line at a time (the data is streamed twice, never held).
        let mut n_rows = 0usize;
        for r in tilpass_data::JsonlRows::open(data)? {
            let (line, v) = parse_row(data, r?)?;
            let bad = |message: String| TrainError::Row {
                path: data.display().to_string(),
                line,
                message,
            };
            Record::from_json(&v, None).map_err(|e| bad(e.to_string()))?;
            if v.get("quality").is_some() {
                return Err(bad(
                    "has a `quality` field, which translation adds: rename or drop it".into(),
                ));
            }
            n_rows += 1;
        }
        let (done, mut writers) =
            open_resumable_counted("translate", &[out], &self.resume_key()?, &[data])?;
        let resumed = done[0];
        if resumed > n_rows {
            return Err(TrainError::Resume {
                path: out.display().to_string(),
                message: format!(
                    "holds {resumed} rows, more than the {n_rows} of {}: not a run of this data",
                    data.display()
                ),
            });
        }
        let mut outcome = TranslateOutcome {
            rows: n_rows,
            resumed,
            written: 0,
            flagged: 0,
            generated: 0,
            seconds: 0.0,
        };
        progress(resumed, n_rows);
        if resumed == n_rows {
            outcome.seconds = start.elapsed().as_secs_f64();
            return Ok(outcome);
        }
        let model = TextModel::load(
            model_dir,
            self.adapter.as_deref(),
            self.prompt_format,
            device,
        )?;
        let opts = TextGenOptions {
            max_new_tokens: self.max_new_tokens,
            do_sample: false,
            temperature: 1.0,
            top_p: None,
            seed: 0,
            stop: Vec::new(),
            raw: false,
        };
        let template = self.template();
        let back_template = self
            .back_template
            .clone()
            .unwrap_or_else(|| BACK_TEMPLATE.to_string());
        let bs = self.batch_size;
        // Batches start where an uninterrupted run's would, so a resumed batch is the same.
        let first = resumed / bs * bs;
        let mut stream = tilpass_data::JsonlRows::open(data)?.skip(first);
        let mut batch: Vec<Value> = Vec::with_capacity(bs);
        for b0 in (first..n_rows).step_by(bs) {
            let b1 = (b0 + bs).min(n_rows);
            batch.clear();
            for _ in b0..b1 {
                let r = stream.next().ok_or_else(|| TrainError::Row {
                    path: data.display().to_string(),
                    line: 0,
                    message: format!(
                        "the file changed while it was translated: fewer than {n_rows} rows"
                    ),
                })?;
                batch.push(parse_row(data, r?)?.1);
            }
            let mut jobs: Vec<Job> = Vec::new();
            for (r, v) in batch.iter().enumerate() {
                for (slot, source) in segments(v) {
                    let masked = mask_code(&source);
                    let translate = !masked.is_only_code();
                    jobs.push(Job {
                        row: r,
                        slot,
                        output: if translate {
                            String::new()
                        } else {
                            source.clone()
                        },
                        source,
                        masked,
                        translate,
                        back: None,
                    });
                }
            }
            let todo: Vec<usize> = (0..jobs.len()).filter(|&j| jobs[j].translate).collect();
            let prompts: Vec<String> = todo
                .iter()
                .map(|&j| template.replacen("{text}", &jobs[j].masked.text, 1))
                .collect();
            let outputs = generate_by_length(&model, &prompts, bs, &opts)?;
            outcome.generated += outputs.len();
            for (&j, o) in todo.iter().zip(outputs) {
                jobs[j].output = o;
            }
            if self.round_trip {
                let prompts: Vec<String> = todo
                    .iter()
                    .map(|&j| back_template.replacen("{text}", &jobs[j].output, 1))
                    .collect();
                let backs = generate_by_length(&model, &prompts, bs, &opts)?;
                outcome.generated += backs.len();
                for (&j, b) in todo.iter().zip(backs) {
                    jobs[j].back = Some(b);
                }
            }
            for (r, source) in batch.iter().enumerate() {
                let index = b0 + r;
                let mut row = source.clone();
                let mine: Vec<&Job> = jobs.iter().filter(|j| j.row == r).collect();
                let quality = self.quality(&mine, &mut row)?;
                if index < resumed {
                    continue;
                }
                if !quality["ok"].as_bool().unwrap_or(false) {
                    outcome.flagged += 1;
                }
                row["quality"] = quality;
                writers[0].push(&row)?;
                outcome.written += 1;
            }
            progress(b1, n_rows);
        }
        outcome.seconds = start.elapsed().as_secs_f64();
        Ok(outcome)
    }

    /// Puts a row's translations in place and measures them.
    fn quality(&self, jobs: &[&Job], row: &mut Value) -> Result<Value> {
        let mut flags: Vec<&str> = Vec::new();
        let mut changes: Vec<Value> = Vec::new();
        let (mut src_chars, mut out_chars) = (0usize, 0usize);
        let mut lang_text = String::new();
        let (mut hyps, mut refs) = (Vec::new(), Vec::new());
        for j in jobs {
            let (restored, issues) = if j.translate {
                j.masked.restore(&j.output)
            } else {
                (j.output.clone(), Default::default())
            };
            if j.translate {
                if !issues.lost.is_empty() {
                    flags.push("code_lost");
                }
                if !issues.repeated.is_empty() {
                    flags.push("code_repeated");
                }
                if j.output.trim().is_empty() {
                    flags.push("empty_output");
                }
                let field = match j.slot.index {
                    Some(i) => format!("{}[{i}]", j.slot.key),
                    None => j.slot.key.clone(),
                };
                for (p, a, b) in placeholder_changes(&j.source, &restored) {
                    changes
                        .push(json!({"field": field, "placeholder": p, "source": a, "output": b}));
                }
                src_chars += j.source.chars().count();
                out_chars += restored.chars().count();
                let mut plain = j.output.clone();
                for i in 0..j.masked.spans.len() {
                    plain = plain.replace(&super::protect::marker(i), " ");
                }
                lang_text.push_str(&plain);
                lang_text.push('\n');
                if let Some(b) = &j.back {
                    hyps.push(b.clone());
                    refs.push(Some(j.masked.text.clone()));
                }
            }
            put(row, &j.slot, restored);
        }
        if !changes.is_empty() {
            flags.push("placeholders_changed");
        }
        let translated = jobs.iter().filter(|j| j.translate).count();
        let mut q = Map::new();
        let (mut lang, mut lang_prob) = (Value::Null, Value::Null);
        let mut ratio = Value::Null;
        if translated > 0 {
            let p = LangId::builtin().predict(&lang_text);
            let prob = p.probabilities.first().map_or(0.0, |x| x.1);
            if p.lang != self.to.code() {
                flags.push(if matches!(p.lang.as_str(), "nb" | "nn") {
                    "written_form"
                } else {
                    "language"
                });
            }
            lang = json!(p.lang);
            lang_prob = json!(prob);
            let r = out_chars as f64 / src_chars.max(1) as f64;
            if r < self.min_length_ratio || r > self.max_length_ratio {
                flags.push("length_ratio");
            }
            ratio = json!(r);
        }
        flags.dedup();
        q.insert("ok".into(), json!(flags.is_empty()));
        q.insert("flags".into(), json!(flags));
        q.insert("lang".into(), lang);
        q.insert("lang_prob".into(), lang_prob);
        q.insert("length_ratio".into(), ratio);
        q.insert("segments".into(), json!(jobs.len()));
        q.insert("translated".into(), json!(translated));
        if self.round_trip {
            let chrf = if hyps.is_empty() {
                Value::Null
            } else {
                let score = Chrf::new(ChrfConfig::default()).corpus_score(&hyps, &[refs])?;
                json!(score.score)
            };
            q.insert("round_trip_chrf".into(), chrf);
        }
        if !changes.is_empty() {
            q.insert("placeholder_changes".into(), Value::Array(changes));
        }
        Ok(Value::Object(q))
    }
}

/// `model.generate` over `prompts`, `chunk` at a time, the prompts taken in order of length
/// (characters; a stable sort) so that a chunk's prompts pad little and its texts tend to end
/// together; the texts come back in the order of `prompts`. The order depends only on
/// `prompts`, so the same prompts give the same texts (a resumed batch equals the original).
pub(crate) fn generate_by_length(
    model: &TextModel,
    prompts: &[String],
    chunk: usize,
    opts: &TextGenOptions,
) -> Result<Vec<String>> {
    let mut order: Vec<usize> = (0..prompts.len()).collect();
    order.sort_by_key(|&k| prompts[k].chars().count());
    let sorted: Vec<String> = order.iter().map(|&k| prompts[k].clone()).collect();
    let texts = generate_chunked(model, &sorted, chunk, opts)?;
    let mut out = vec![String::new(); prompts.len()];
    for (k, t) in order.into_iter().zip(texts) {
        out[k] = t;
    }
    Ok(out)
}

/// `model.generate` over `prompts`, `chunk` at a time.
pub(crate) fn generate_chunked(
    model: &TextModel,
    prompts: &[String],
    chunk: usize,
    opts: &TextGenOptions,
) -> Result<Vec<String>> {
    let mut out = Vec::with_capacity(prompts.len());
    for c in prompts.chunks(chunk.max(1)) {
        out.extend(model.generate(c, opts)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_cover_every_format_and_keep_roles() {
        let chat = json!({"id": 7, "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi {name}"},
        ]});
        let s = segments(&chat);
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].1, "Hi {name}");
        let mut row = chat.clone();
        put(&mut row, &s[1].0, "Hei {name}".into());
        assert_eq!(
            row["messages"][1],
            json!({"role": "user", "content": "Hei {name}"})
        );
        assert_eq!(row["id"], 7);
        let alpaca = json!({"instruction": "a", "input": "", "output": "c", "text": "not this"});
        let keys: Vec<String> = segments(&alpaca).into_iter().map(|s| s.0.key).collect();
        assert_eq!(keys, vec!["instruction", "input", "output"]);
        let pref = json!({"prompt": "p", "chosen": [{"role": "assistant", "content": "c"}],
                          "rejected": [{"role": "assistant", "content": "r"}]});
        assert_eq!(segments(&pref).len(), 3);
    }

    fn job(row: usize, slot: Slot, source: &str, output: &str) -> Job {
        let masked = mask_code(source);
        let translate = !masked.is_only_code();
        Job {
            row,
            slot,
            source: source.into(),
            masked,
            translate,
            output: if translate { output } else { source }.into(),
            back: None,
        }
    }

    #[test]
    fn a_row_gets_its_code_and_placeholders_back_or_is_flagged() {
        let run = TranslateRun::default();
        let src = json!({"id": 1, "messages": [
            {"role": "user", "content": "Hello {name}, run `ls` and mail [EPOST]."},
            {"role": "assistant", "content": "```sh\nls -la\n```"},
        ]});
        let s = segments(&src);
        // A faithful model: markers and placeholders kept.
        let jobs = [
            job(
                0,
                s[0].0.clone(),
                &s[0].1,
                "Hei {name}, kjør [[C0]] og send e-post til [EPOST].",
            ),
            job(0, s[1].0.clone(), &s[1].1, "unused: only code is copied"),
        ];
        let mut row = src.clone();
        let q = run
            .quality(&jobs.iter().collect::<Vec<_>>(), &mut row)
            .unwrap();
        assert_eq!(
            row["messages"][0]["content"],
            "Hei {name}, kjør `ls` og send e-post til [EPOST]."
        );
        assert_eq!(row["messages"][1]["content"], "```sh\nls -la\n```");
        assert_eq!(row["messages"][1]["role"], "assistant");
        assert_eq!(q["translated"], 1);
        assert_eq!(q["segments"], 2);
        let flags: Vec<&str> = q["flags"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            !flags.contains(&"code_lost") && !flags.contains(&"placeholders_changed"),
            "{q}"
        );
        // A model that drops the code marker and renames a placeholder is flagged.
        let jobs = [job(
            0,
            s[0].0.clone(),
            &s[0].1,
            "Hei {navn}, kjør og send til [EPOST].",
        )];
        let mut row = src.clone();
        let q = run
            .quality(&jobs.iter().collect::<Vec<_>>(), &mut row)
            .unwrap();
        let flags: Vec<&str> = q["flags"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            flags.contains(&"code_lost") && flags.contains(&"placeholders_changed"),
            "{q}"
        );
        assert_eq!(q["ok"], false);
        assert_eq!(
            q["placeholder_changes"],
            json!([
                {"field": "messages[0]", "placeholder": "{name}", "source": 1, "output": 0},
                {"field": "messages[0]", "placeholder": "{navn}", "source": 0, "output": 1}
            ])
        );
    }
}
