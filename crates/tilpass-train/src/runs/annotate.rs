//! `tilpass annotate` (LamBERT step 1): an instruction LLM labels the texts of a JSONL stream
//! by scoring each label's verbalisation after a prompt ([`crate::score_labels`]), writing
//! each row back with `label`, `confidence` and `probabilities`; streamed in windows,
//! resumable and shardable ([`super::stream`]). With shots, a verbalizer or calibration
//! ([`super::fewshot`], which documents the selection, scoring and calibration formulas) a
//! whole window is scored at once, and `gold_field` adds agreement with gold labels.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tilpass_models::{DecoderLm, SentenceEmbedder};
use tilpass_peft::load_causal_lm;
use tilpass_tokenize::Tokenizer;

use super::fewshot::{
    self, Agreement, Calibration, Form, FormChoice, Shot, ShotSelection, Verbalizer,
};
use super::jsonl::by_label;
use super::stream::{Shard, Stream};
use super::{RunConfig, check};
use crate::classify::{label_probabilities, score_labels};
use crate::error::{Result, TrainError};
use crate::trainer::Event;

/// Settings of an annotation job; field names are the `tilpass annotate` flags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnnotateRun {
    /// The LLM's directory (a causal LM with its tokenizer).
    pub model: Option<PathBuf>,
    /// A LoRA / DoRA adapter for the LLM (HF PEFT format).
    pub adapter: Option<PathBuf>,
    /// Device the CLI runs on; [`AnnotateRun::run`] takes the device as an argument.
    pub device: String,
    /// Input JSONL (one object per line).
    pub data: Option<PathBuf>,
    /// Field holding the text.
    pub text_field: String,
    /// The labels; each is scored as the continuation `" " + label`.
    pub labels: Vec<String>,
    /// The prompt, with `{text}` where the text goes (a literal `\n` is a newline).
    pub template: String,
    /// Output JSONL (in input order); written as `<out>.partial` beside a sidecar
    /// `<out>.run.json` and renamed when complete.
    pub out: Option<PathBuf>,
    /// Sequences (text × label) per forward pass, and rows per batch.
    pub batch_size: usize,
    /// Rows read at a time and sorted by prompt length for batching (memory is bounded by it).
    pub window: usize,
    /// `i/n`: label only the windows `w` with `w % n == i` (an array job's part; merge the
    /// parts with `tilpass merge-shards`).
    pub shard: Option<Shard>,
    /// Stop after writing this many rows; the output stays partial, and the same command
    /// continues it.
    pub max_rows: Option<usize>,
    /// On an error or Ctrl-C keep the partial output (the same command continues it); without
    /// it a run that started the output removes it. A hard kill always leaves it.
    pub keep_partial: bool,
    /// In-context examples: JSONL rows with `text_field` and a `label` ([`super::fewshot`]).
    pub shots: Option<PathBuf>,
    /// Shots per prompt (default: all of the file).
    pub k: Option<usize>,
    /// `fixed` (the same `k`, balanced per label) or `similar` (the `k` nearest by the
    /// embedder's cosine).
    pub shot_selection: ShotSelection,
    /// The sentence embedder for `shot_selection: similar` (an encoder directory with its
    /// tokenizer; sentence-transformers pooling files when present).
    pub embedder: Option<PathBuf>,
    /// How a shot is rendered, with `{text}` and `{label}` (a literal `\n` is a newline);
    /// the shots are joined before the query prompt.
    pub shot_template: String,
    /// Longest prompt in tokens: shots are dropped (least similar / last chosen first) until
    /// the prompt fits.
    pub max_prompt_tokens: Option<usize>,
    /// Label verbalisations: JSON `{"label": {"nb": [words], "nn": [words]}}`.
    pub verbalizer: Option<PathBuf>,
    /// The written form of the verbalisations: `auto` (per row, by language identification),
    /// `nb` or `nn`.
    pub form: FormChoice,
    /// `none`, `contextual` (content-free inputs) or `prior` (the window's mean prediction).
    pub calibrate: Calibration,
    /// A field of the input with gold labels: agreement (accuracy, macro-F1, Cohen's kappa,
    /// confusion) in the summary.
    pub gold_field: Option<String>,
}

impl Default for AnnotateRun {
    fn default() -> Self {
        Self {
            model: None,
            adapter: None,
            device: "flex".into(),
            data: None,
            text_field: "text".into(),
            labels: Vec::new(),
            template: "Tekst: {text}\nKategori:".into(),
            out: None,
            batch_size: 16,
            window: 4096,
            shard: None,
            max_rows: None,
            keep_partial: false,
            shots: None,
            k: None,
            shot_selection: ShotSelection::Fixed,
            embedder: None,
            shot_template: DEFAULT_SHOT_TEMPLATE.into(),
            max_prompt_tokens: None,
            verbalizer: None,
            form: FormChoice::Auto,
            calibrate: Calibration::None,
            gold_field: None,
        }
    }
}

/// The default `shot_template`.
pub const DEFAULT_SHOT_TEMPLATE: &str = "Tekst: {text}\nKategori: {label}\n\n";

impl RunConfig for AnnotateRun {
    const JOB: &'static str = "annotate";

    fn validate(&self) -> Result<()> {
        check::path("model", &self.model)?;
        check::path("data", &self.data)?;
        check::path("out", &self.out)?;
        if self.labels.is_empty() {
            return Err(TrainError::MissingSetting {
                setting: "labels".into(),
                flag: "labels".into(),
            });
        }
        if let Some(l) = self.labels.iter().find(|l| l.trim().is_empty()) {
            return Err(TrainError::setting(
                "labels",
                format!("{:?}", self.labels),
                format!("non-empty labels (found {l:?})"),
            ));
        }
        if let Some((i, l)) = self
            .labels
            .iter()
            .enumerate()
            .find(|(i, l)| self.labels[..*i].contains(l))
        {
            return Err(TrainError::setting(
                "labels",
                format!("{:?}", self.labels),
                format!("distinct labels ({l:?} is given twice, the second time as label {i})"),
            ));
        }
        if !self.template.contains("{text}") {
            return Err(TrainError::setting(
                "template",
                format!("{:?}", self.template),
                "a prompt with `{text}` where the text goes",
            ));
        }
        check::at_least("batch_size", self.batch_size, 1)?;
        check::at_least("window", self.window, 1)?;
        check::opt_at_least("k", self.k, 1)?;
        check::opt_at_least("max_prompt_tokens", self.max_prompt_tokens, 1)?;
        if self.shots.is_none() {
            if let Some(k) = self.k {
                return Err(TrainError::setting(
                    "k",
                    k,
                    "`shots` (a JSONL file of examples) with it",
                ));
            }
            if self.shot_selection == ShotSelection::Similar {
                return Err(TrainError::MissingSetting {
                    setting: "shots".into(),
                    flag: "shots".into(),
                });
            }
        }
        if let (None, Some(m)) = (&self.shots, self.max_prompt_tokens) {
            return Err(TrainError::setting(
                "max_prompt_tokens",
                m,
                "`shots` with it (the budget is kept by dropping shots)",
            ));
        }
        if self.verbalizer.is_none() && self.form != FormChoice::Auto {
            return Err(TrainError::setting(
                "form",
                format!("{:?}", self.form).to_lowercase(),
                "`verbalizer` with it (the form picks the verbalisations)",
            ));
        }
        match (self.shot_selection, &self.embedder) {
            (ShotSelection::Similar, None) => {
                return Err(TrainError::MissingSetting {
                    setting: "embedder".into(),
                    flag: "embedder".into(),
                });
            }
            (ShotSelection::Fixed, Some(e)) => {
                return Err(TrainError::setting(
                    "embedder",
                    e.display(),
                    "no embedder with `shot_selection: fixed` (it is used by `similar`)",
                ));
            }
            _ => {}
        }
        for key in ["{text}", "{label}"] {
            if !self.shot_template.contains(key) {
                return Err(TrainError::setting(
                    "shot_template",
                    format!("{:?}", self.shot_template),
                    format!("a shot template with `{key}`"),
                ));
            }
        }
        if let Some(g) = &self.gold_field
            && g.trim().is_empty()
        {
            return Err(TrainError::setting("gold_field", "\"\"", "a field name"));
        }
        Ok(())
    }
}

/// What an annotation job did.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AnnotateOutcome {
    /// Rows labelled by this call.
    pub rows: usize,
    /// Rows already in the (partial) output when this call started.
    pub resumed_from: usize,
    /// Whether the output is complete (false after `max_rows`).
    pub complete: bool,
    /// Seconds it took.
    pub seconds: f64,
}

/// What an annotation job did, with what few-shot prompting and gold labels add.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnnotateReport {
    /// Rows, resume point, completeness, time.
    #[serde(flatten)]
    pub outcome: AnnotateOutcome,
    /// Shots dropped from prompts to respect `max_prompt_tokens` (rows labelled by this call;
    /// a resumed window is counted again).
    pub shots_dropped: usize,
    /// Rows whose prompt lost at least one shot that way.
    pub rows_with_dropped_shots: usize,
    /// Rows whose prompt was longer than `max_prompt_tokens` even without shots.
    pub rows_over_budget: usize,
    /// Agreement with the gold field, when one is given and the output is complete.
    pub agreement: Option<Agreement>,
}

impl AnnotateRun {
    /// Labels every row of `data` on `device`, `batch_size` rows at a time, reporting
    /// [`Event::Rows`] after each batch.
    pub fn run(&self, device: &Device, progress: &mut dyn FnMut(Event)) -> Result<AnnotateOutcome> {
        self.run_report(device, progress).map(|r| r.outcome)
    }

    /// Whether the run uses the few-shot machinery (shots, a verbalizer or calibration).
    fn few_shot(&self) -> bool {
        self.shots.is_some() || self.verbalizer.is_some() || self.calibrate != Calibration::None
    }

    /// [`AnnotateRun::run`], with the shots dropped for the token budget and the agreement
    /// with `gold_field`.
    pub fn run_report(
        &self,
        device: &Device,
        progress: &mut dyn FnMut(Event),
    ) -> Result<AnnotateReport> {
        self.validate()?;
        let model_dir = check::path("model", &self.model)?;
        let (data, out) = (
            check::path("data", &self.data)?,
            check::path("out", &self.out)?,
        );
        super::jsonl::distinct_output(out, data)?;
        if let Some(g) = &self.gold_field {
            fewshot::check_gold(data, g, &self.labels)?;
        }
        // Files of the few-shot settings are read (and refused) before the model is loaded.
        let shots = match &self.shots {
            Some(p) => {
                let shots = fewshot::load_shots(p, &self.text_field, &self.labels)?;
                if let Some(k) = self.k
                    && k > shots.len()
                {
                    return Err(TrainError::setting(
                        "k",
                        k,
                        format!("at most the {} shots in {}", shots.len(), p.display()),
                    ));
                }
                shots
            }
            None => Vec::new(),
        };
        let verbalizer = match &self.verbalizer {
            Some(p) => Verbalizer::load(p, &self.labels)?,
            None => Verbalizer::identity(&self.labels),
        };
        let (model, prompt) = load_causal_lm(model_dir, self.adapter.as_deref(), device)?;
        if prompt.is_some() {
            return Err(TrainError::Config(format!(
                "{}: a prompt-learning adapter (prefix / prompt / P-tuning); annotation scores \
                 labels with LoRA / DoRA adapters",
                self.adapter.as_deref().unwrap_or(model_dir).display()
            )));
        }
        let tok = Tokenizer::from_dir(model_dir)?;
        let template = self.template.replace("\\n", "\n");
        let stream = Stream {
            job: Self::JOB,
            data,
            out,
            text_field: &self.text_field,
            window: self.window,
            batch_size: self.batch_size,
            shard: self.shard,
            max_rows: self.max_rows,
            keep_partial: self.keep_partial,
            config: self.output_settings()?,
        };
        let mut report = AnnotateReport {
            outcome: AnnotateOutcome {
                rows: 0,
                resumed_from: 0,
                complete: false,
                seconds: 0.0,
            },
            shots_dropped: 0,
            rows_with_dropped_shots: 0,
            rows_over_budget: 0,
            agreement: None,
        };
        let o = if self.few_shot() {
            let embedder = match &self.embedder {
                Some(dir) => Some((
                    SentenceEmbedder::load(dir, device)?,
                    Tokenizer::from_dir(dir)?,
                )),
                None => None,
            };
            let fs = FewShot::new(self, &model, &tok, shots, verbalizer, embedder)?;
            let o = stream.run(
                &|texts| fs.window(texts),
                &mut |batch| fs.take(batch),
                progress,
            )?;
            let c = fs.counts.get();
            report.shots_dropped = c.0;
            report.rows_with_dropped_shots = c.1;
            report.rows_over_budget = c.2;
            o
        } else {
            let verbal = self
                .labels
                .iter()
                .map(|l| tok.encode(&format!(" {l}"), false))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let mut labels = |batch: &[&[u32]]| -> Result<Vec<Map<String, Value>>> {
                let prompts: Vec<Vec<u32>> = batch.iter().map(|p| p.to_vec()).collect();
                let scores = score_labels(&model, &prompts, &verbal, self.batch_size)?;
                Ok(scores
                    .iter()
                    .map(|s| {
                        let (best, probs) = label_probabilities(s);
                        self.fields(best, &probs, None)
                    })
                    .collect())
            };
            stream.run(
                &|texts| {
                    texts
                        .iter()
                        .map(|t| Ok(tok.encode(&template.replace("{text}", t), true)?))
                        .collect()
                },
                &mut labels,
                progress,
            )?
        };
        report.outcome = AnnotateOutcome {
            rows: o.rows,
            resumed_from: o.resumed_from,
            complete: o.complete,
            seconds: o.seconds,
        };
        if let Some(g) = &self.gold_field
            && o.complete
        {
            report.agreement = Some(fewshot::agreement(
                data,
                out,
                g,
                &self.labels,
                self.window,
                self.shard,
            )?);
        }
        Ok(report)
    }

    /// The fields added to a row: `label`, `confidence`, `probabilities` (and the
    /// `uncalibrated` probabilities when calibrated).
    fn fields(&self, best: usize, probs: &[f64], raw: Option<&[f64]>) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("label".into(), json!(self.labels[best]));
        m.insert("confidence".into(), json!(probs[best]));
        m.insert("probabilities".into(), by_label(&self.labels, probs));
        if let Some(raw) = raw {
            m.insert("uncalibrated".into(), by_label(&self.labels, raw));
        }
        m
    }

    /// The settings that shape the output, recorded in its sidecar: the run config without
    /// `out`, `max_rows`, `keep_partial` and `gold_field`; the few-shot settings only when
    /// they differ from the defaults (so that outputs of zero-shot runs keep their
    /// fingerprint), with the SHA-256 of the shots and verbalizer files.
    pub fn output_settings(&self) -> Result<Value> {
        let mut v = self.to_json()?;
        let defaults = Self::default().to_json()?;
        if let Value::Object(m) = &mut v {
            for k in ["out", "max_rows", "keep_partial", "gold_field"] {
                m.shift_remove(k);
            }
            for k in [
                "shots",
                "k",
                "shot_selection",
                "embedder",
                "shot_template",
                "max_prompt_tokens",
                "verbalizer",
                "form",
                "calibrate",
            ] {
                if m.get(k) == defaults.get(k) {
                    m.shift_remove(k);
                }
            }
            for (k, p) in [
                ("shots_sha256", &self.shots),
                ("verbalizer_sha256", &self.verbalizer),
            ] {
                if let Some(p) = p {
                    m.insert(k.into(), json!(file_sha256(p)?));
                }
            }
        }
        Ok(v)
    }
}

/// SHA-256 (hex) of a small settings file.
fn file_sha256(p: &std::path::Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(p).map_err(|e| tilpass_core::Error::io(p, e))?;
    Ok(Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Content-free probabilities by (shot indices, written form).
type CfCache = HashMap<(Vec<usize>, Form), Vec<f64>>;

/// A prepared few-shot annotator: scores a whole window in [`FewShot::window`] and hands the
/// rows' fields to the stream's batches in [`FewShot::take`].
struct FewShot<'a> {
    run: &'a AnnotateRun,
    model: &'a DecoderLm,
    tok: &'a Tokenizer,
    shots: Vec<Shot>,
    verbalizer: Verbalizer,
    /// Token ids of `" " + word`, `[form][verbalisation]`, and each one's label.
    verbal: [(Vec<Vec<u32>>, Vec<usize>); 2],
    embedder: Option<(SentenceEmbedder, Tokenizer)>,
    /// Shot embeddings (similar selection).
    shot_emb: Vec<Vec<f32>>,
    /// Fixed selection, priority order.
    fixed: Vec<usize>,
    template: String,
    shot_template: String,
    /// p_cf per (shots in prompt order, form).
    cf_cache: RefCell<CfCache>,
    /// The window's fields, by row of the window.
    store: RefCell<Vec<Option<Map<String, Value>>>>,
    /// (shots dropped, rows with dropped shots, rows over budget).
    counts: Cell<(usize, usize, usize)>,
}

fn form_index(f: Form) -> usize {
    match f {
        Form::Nb => 0,
        Form::Nn => 1,
    }
}

impl<'a> FewShot<'a> {
    fn new(
        run: &'a AnnotateRun,
        model: &'a DecoderLm,
        tok: &'a Tokenizer,
        shots: Vec<Shot>,
        verbalizer: Verbalizer,
        embedder: Option<(SentenceEmbedder, Tokenizer)>,
    ) -> Result<Self> {
        let mut verbal: [(Vec<Vec<u32>>, Vec<usize>); 2] = Default::default();
        for form in [Form::Nb, Form::Nn] {
            let (ids, of) = &mut verbal[form_index(form)];
            for (l, w) in verbalizer.words.iter().enumerate() {
                for word in w.of(form) {
                    let t = tok.encode(&format!(" {word}"), false)?;
                    if t.is_empty() {
                        return Err(TrainError::setting(
                            "verbalizer",
                            run.verbalizer
                                .as_deref()
                                .map_or("(labels)".into(), |p| p.display().to_string()),
                            format!(
                                "verbalisations with at least one token (label {:?}, `{}` \
                                 word {word:?} has none)",
                                run.labels[l],
                                form.code()
                            ),
                        ));
                    }
                    ids.push(t);
                    of.push(l);
                }
            }
        }
        let k = run.k.unwrap_or(shots.len());
        let labels: Vec<usize> = shots.iter().map(|s| s.label).collect();
        let fixed = fewshot::select_fixed(&labels, k, run.labels.len());
        let shot_emb = match &embedder {
            Some((e, etok)) => {
                let ids = shots
                    .iter()
                    .map(|s| etok.encode(&s.text, true))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                e.embed_ids(&ids, run.batch_size)?
            }
            None => Vec::new(),
        };
        Ok(Self {
            run,
            model,
            tok,
            shots,
            verbalizer,
            verbal,
            embedder,
            shot_emb,
            fixed,
            template: run.template.replace("\\n", "\n"),
            shot_template: run.shot_template.replace("\\n", "\n"),
            cf_cache: RefCell::new(HashMap::new()),
            store: RefCell::new(Vec::new()),
            counts: Cell::new((0, 0, 0)),
        })
    }

    /// The prompt of `text` with `shots` (in prompt order) in `form`.
    fn prompt(&self, shots: &[usize], form: Form, text: &str) -> String {
        let pairs: Vec<(&str, &str)> = shots
            .iter()
            .map(|&i| {
                let s = &self.shots[i];
                (
                    s.text.as_str(),
                    self.verbalizer.words[s.label].of(form)[0].as_str(),
                )
            })
            .collect();
        fewshot::render_prompt(&self.shot_template, &self.template, &pairs, text)
    }

    /// Shots in prompt order from shots in priority order.
    fn prompt_order(&self, mut chosen: Vec<usize>) -> Vec<usize> {
        if self.run.shot_selection == ShotSelection::Similar {
            chosen.reverse();
        }
        chosen
    }

    /// Label distributions of `prompts` (token ids) in `form`, `[rows][labels]`, batched in
    /// order of length.
    fn distributions(&self, prompts: &[Vec<u32>], form: Form) -> Result<Vec<Vec<f64>>> {
        let (cands, of) = &self.verbal[form_index(form)];
        let mut order: Vec<usize> = (0..prompts.len()).collect();
        order.sort_by_key(|&i| prompts[i].len());
        let sorted: Vec<Vec<u32>> = order.iter().map(|&i| prompts[i].clone()).collect();
        let scores = score_labels(self.model, &sorted, cands, self.run.batch_size)?;
        let mut out = vec![Vec::new(); prompts.len()];
        for (&i, s) in order.iter().zip(scores) {
            let ls = fewshot::label_scores(&s, of, self.run.labels.len());
            out[i] = label_probabilities(&ls).1;
        }
        Ok(out)
    }

    /// p_cf of a set of shots (prompt order) and form, cached.
    fn content_free(&self, shots: &[usize], form: Form) -> Result<Vec<f64>> {
        let key = (shots.to_vec(), form);
        if let Some(p) = self.cf_cache.borrow().get(&key) {
            return Ok(p.clone());
        }
        let prompts = fewshot::CONTENT_FREE
            .iter()
            .map(|t| Ok(self.tok.encode(&self.prompt(shots, form, t), true)?))
            .collect::<Result<Vec<_>>>()?;
        let p = fewshot::mean_distribution(&self.distributions(&prompts, form)?);
        let mut cache = self.cf_cache.borrow_mut();
        if cache.len() >= 1024 {
            cache.clear();
        }
        cache.insert(key, p.clone());
        Ok(p)
    }

    /// Scores a window of texts; returns stand-in ids (row index, prompt length) for the
    /// stream's length sort and batches.
    fn window(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        let run = self.run;
        // Without a verbalizer both forms have the same words: no language identification.
        let forms: Vec<Form> = if run.verbalizer.is_some() {
            texts.iter().map(|t| run.form.form_of(t)).collect()
        } else {
            vec![Form::Nb; texts.len()]
        };
        let chosen: Vec<Vec<usize>> = match &self.embedder {
            Some((e, etok)) => {
                let k = run.k.unwrap_or(self.shots.len());
                let ids = texts
                    .iter()
                    .map(|t| etok.encode(t, true))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                e.embed_ids(&ids, run.batch_size)?
                    .iter()
                    .map(|q| fewshot::select_similar(q, &self.shot_emb, k))
                    .collect()
            }
            None => vec![self.fixed.clone(); texts.len()],
        };
        let (mut dropped, mut rows_dropped, mut over) = self.counts.get();
        let mut prompts = Vec::with_capacity(texts.len());
        let mut used = Vec::with_capacity(texts.len());
        for ((t, f), c) in texts.iter().zip(&forms).zip(chosen) {
            let mut n = c.len();
            loop {
                let shots = self.prompt_order(c[..n].to_vec());
                let ids = self.tok.encode(&self.prompt(&shots, *f, t), true)?;
                let fits = run.max_prompt_tokens.is_none_or(|m| ids.len() <= m);
                if fits || n == 0 {
                    if !fits {
                        over += 1;
                    }
                    if n < c.len() {
                        dropped += c.len() - n;
                        rows_dropped += 1;
                    }
                    prompts.push(ids);
                    used.push(shots);
                    break;
                }
                n -= 1;
            }
        }
        self.counts.set((dropped, rows_dropped, over));
        let mut probs = vec![Vec::new(); texts.len()];
        for form in [Form::Nb, Form::Nn] {
            let rows: Vec<usize> = (0..texts.len()).filter(|&i| forms[i] == form).collect();
            if rows.is_empty() {
                continue;
            }
            let group: Vec<Vec<u32>> = rows.iter().map(|&i| prompts[i].clone()).collect();
            for (&i, p) in rows.iter().zip(self.distributions(&group, form)?) {
                probs[i] = p;
            }
        }
        let calibrated: Vec<Vec<f64>> = match run.calibrate {
            Calibration::None => probs.clone(),
            Calibration::Prior => fewshot::prior_corrected(&probs),
            Calibration::Contextual => probs
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    Ok(fewshot::contextual(
                        p,
                        &self.content_free(&used[i], forms[i])?,
                    ))
                })
                .collect::<Result<_>>()?,
        };
        let mut store = self.store.borrow_mut();
        store.clear();
        for (i, q) in calibrated.iter().enumerate() {
            let best = q
                .iter()
                .enumerate()
                .fold(0, |b, (j, p)| if *p > q[b] { j } else { b });
            let raw = (run.calibrate != Calibration::None).then_some(probs[i].as_slice());
            let mut m = run.fields(best, q, raw);
            if run.verbalizer.is_some() {
                m.insert("form".into(), json!(forms[i].code()));
            }
            if run.shots.is_some() {
                m.insert("shots".into(), json!(used[i].len()));
            }
            store.push(Some(m));
        }
        Ok(prompts
            .iter()
            .enumerate()
            .map(|(i, p)| vec![i as u32; p.len().max(1)])
            .collect())
    }

    /// The fields of a batch of the window (stand-in ids from [`FewShot::window`]).
    fn take(&self, batch: &[&[u32]]) -> Result<Vec<Map<String, Value>>> {
        let mut store = self.store.borrow_mut();
        batch
            .iter()
            .map(|ids| {
                ids.first()
                    .and_then(|&i| store.get_mut(i as usize))
                    .and_then(Option::take)
                    .ok_or_else(|| TrainError::Config("a row labelled twice or not at all".into()))
            })
            .collect()
    }
}
