//! Reward functions for GRPO / RLOO: the [`RewardFunction`] trait (any
//! `Fn(&prompt, &completion, &row) -> Option<f32>` is one, through [`FnReward`]), built-ins for
//! Norwegian — written form (Bokmål / Nynorsk, via `tilpass-data`'s language identifier),
//! length window, distinct-n repetition, regex format, exact answer — and [`RewardSpec`], the
//! parser of CLI specs such as `lang=nn`, `model=DIR:0.5`, `length=20..200`.
//!
//! `None` means "this function does not apply to this completion" (TRL's `None`, NaN in its
//! reward table): it is left out of the function's mean and of the weighted sum, and a
//! completion no function scores gets advantage 0 ([`crate::grpo_advantages`]).

use std::path::PathBuf;

use regex::Regex;
use serde_json::Value;
use tilpass_data::LangId;

use crate::error::{PreferenceError, Result};

/// A reward function of one completion.
pub trait RewardFunction: Send + Sync {
    /// The name in the logged metrics (`rewards/{name}/mean`).
    fn name(&self) -> String;
    /// The reward of `completion` to `prompt`; `row` is the dataset row (its other columns, e.g.
    /// a gold `answer`). `None` when the function does not apply.
    fn reward(&self, prompt: &str, completion: &str, row: &Value) -> Option<f32>;
    /// The rewards of a batch (`prompts`, `completions`, `rows` per completion), `[batch]`.
    /// The default calls [`RewardFunction::reward`] on each; reward models override it to
    /// score in batches and to report errors (a failed forward pass is not a missing reward).
    fn rewards(
        &self,
        prompts: &[&str],
        completions: &[&str],
        rows: &[&Value],
    ) -> Result<Vec<Option<f32>>> {
        Ok(prompts
            .iter()
            .zip(completions)
            .zip(rows)
            .map(|((p, c), r)| self.reward(p, c, r))
            .collect())
    }
}

/// A closure as a named [`RewardFunction`].
pub struct FnReward<F> {
    name: String,
    f: F,
}

impl<F> FnReward<F>
where
    F: Fn(&str, &str, &Value) -> Option<f32> + Send + Sync,
{
    /// Names a closure `(prompt, completion, row) -> Option<f32>`.
    pub fn new(name: impl Into<String>, f: F) -> Self {
        Self {
            name: name.into(),
            f,
        }
    }
}

impl<F> RewardFunction for FnReward<F>
where
    F: Fn(&str, &str, &Value) -> Option<f32> + Send + Sync,
{
    fn name(&self) -> String {
        self.name.clone()
    }
    fn reward(&self, prompt: &str, completion: &str, row: &Value) -> Option<f32> {
        (self.f)(prompt, completion, row)
    }
}

/// The written form a [`WrittenForm`] reward asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormTarget {
    /// Always this language label (`nb`, `nn`, or any label of the identifier).
    Fixed(String),
    /// The form the prompt asks for: the row's `lang` column when it has one, else the
    /// identified language of the prompt (asked in Nynorsk, answer in Nynorsk).
    FromPrompt,
}

/// Written-form / language consistency: the identifier's posterior probability that the
/// completion is in the target language, in [0, 1]; 0 for a completion without letters.
pub struct WrittenForm {
    target: FormTarget,
    langid: &'static LangId,
}

impl WrittenForm {
    /// With tilpass's built-in identifier (nb, nn, sv, da, en). Errors when a fixed target is
    /// not one of its labels.
    pub fn new(target: FormTarget) -> Result<Self> {
        let langid = LangId::builtin();
        if let FormTarget::Fixed(l) = &target
            && !langid.languages().iter().any(|x| x == l)
        {
            return Err(PreferenceError::InvalidSetting {
                setting: "reward lang",
                value: l.clone(),
                expected: format!("one of {:?} or `auto`", langid.languages()),
            });
        }
        Ok(Self { target, langid })
    }

    fn target(&self, prompt: &str, row: &Value) -> Option<String> {
        match &self.target {
            FormTarget::Fixed(l) => Some(l.clone()),
            FormTarget::FromPrompt => match row.get("lang").and_then(Value::as_str) {
                Some(l) => Some(l.to_string()),
                None if prompt.chars().any(char::is_alphabetic) => {
                    Some(self.langid.predict(prompt).lang)
                }
                None => None,
            },
        }
    }
}

impl RewardFunction for WrittenForm {
    fn name(&self) -> String {
        match &self.target {
            FormTarget::Fixed(l) => format!("lang_{l}"),
            FormTarget::FromPrompt => "lang_auto".into(),
        }
    }
    fn reward(&self, prompt: &str, completion: &str, row: &Value) -> Option<f32> {
        let target = self.target(prompt, row)?;
        if !completion.chars().any(char::is_alphabetic) {
            return Some(0.0);
        }
        let p = self.langid.predict(completion);
        let prob = p
            .probabilities
            .iter()
            .find(|(l, _)| *l == target)
            .map_or(0.0, |(_, p)| *p);
        Some(prob as f32)
    }
}

/// Length window in characters: 1 inside `[min, max]`, falling linearly to 0 at length 0 below
/// and at `2 * max` above.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LengthWindow {
    /// Fewest characters for the full reward.
    pub min: usize,
    /// Most characters for the full reward.
    pub max: usize,
}

impl RewardFunction for LengthWindow {
    fn name(&self) -> String {
        format!("length_{}_{}", self.min, self.max)
    }
    fn reward(&self, _: &str, completion: &str, _: &Value) -> Option<f32> {
        let n = completion.trim().chars().count() as f64;
        let (min, max) = (self.min as f64, self.max as f64);
        let r = if n < min {
            n / min
        } else if n > max {
            (1.0 - (n - max) / max.max(1.0)).max(0.0)
        } else {
            1.0
        };
        Some(r as f32)
    }
}

/// Repetition: distinct word n-grams / all word n-grams of the completion (lower-cased), in
/// (0, 1]; 1 for a completion shorter than `n` words (nothing repeats).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DistinctN {
    /// The n-gram order.
    pub n: usize,
}

impl RewardFunction for DistinctN {
    fn name(&self) -> String {
        format!("distinct_{}", self.n)
    }
    fn reward(&self, _: &str, completion: &str, _: &Value) -> Option<f32> {
        let lower = completion.to_lowercase();
        let words: Vec<&str> = lower
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect();
        let n = self.n.max(1);
        if words.len() < n {
            return Some(1.0);
        }
        let grams: Vec<&[&str]> = words.windows(n).collect();
        let distinct: std::collections::HashSet<&[&str]> = grams.iter().copied().collect();
        Some((distinct.len() as f64 / grams.len() as f64) as f32)
    }
}

/// Format: 1 when the regex matches somewhere in the completion (anchor it with `^...$` for
/// the whole text), else 0.
#[derive(Debug, Clone)]
pub struct RegexFormat {
    /// The pattern (Rust `regex` syntax).
    pub pattern: Regex,
}

impl RewardFunction for RegexFormat {
    fn name(&self) -> String {
        "format".into()
    }
    fn reward(&self, _: &str, completion: &str, _: &Value) -> Option<f32> {
        Some(if self.pattern.is_match(completion) {
            1.0
        } else {
            0.0
        })
    }
}

/// Exact answer: 1 when the completion's answer equals the row's gold answer (column
/// `column`), else 0; `None` for rows without one. The answer is the text after the last
/// `svar:` / `answer:` when there is one, else the whole completion; both sides are compared
/// lower-cased, with whitespace collapsed and trailing `.`, `!` and spaces dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExactAnswer {
    /// The gold-answer column (a string or a number).
    pub column: String,
}

fn normalise_answer(s: &str) -> String {
    let words: Vec<&str> = s.split_whitespace().collect();
    words
        .join(" ")
        .to_lowercase()
        .trim_end_matches(['.', '!', ' '])
        .to_string()
}

fn final_answer(completion: &str) -> &str {
    let lower = completion.to_lowercase();
    let at = ["svar:", "answer:"]
        .iter()
        .filter_map(|m| lower.rfind(m).map(|i| i + m.len()))
        .max();
    // Lower-casing can change byte offsets outside ASCII: cut only at a char boundary.
    match at {
        Some(i) if completion.is_char_boundary(i) && lower.len() == completion.len() => {
            &completion[i..]
        }
        _ => completion,
    }
}

impl RewardFunction for ExactAnswer {
    fn name(&self) -> String {
        format!("exact_{}", self.column)
    }
    fn reward(&self, _: &str, completion: &str, row: &Value) -> Option<f32> {
        let gold = match row.get(&self.column)? {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return None,
        };
        let got = normalise_answer(final_answer(completion));
        Some(if got == normalise_answer(&gold) {
            1.0
        } else {
            0.0
        })
    }
}

/// One `--reward` spec: `KIND=ARG[:WEIGHT]`.
///
/// | spec | reward |
/// |---|---|
/// | `lang=nn`, `lang=nb`, `lang=auto` | [`WrittenForm`] (fixed target, or as the prompt asks) |
/// | `model=DIR` | a reward model directory (`tilpass train reward`'s output) |
/// | `length=MIN..MAX` | [`LengthWindow`] (characters) |
/// | `distinct=N` | [`DistinctN`] |
/// | `format=REGEX` | [`RegexFormat`] |
/// | `exact=COLUMN` | [`ExactAnswer`] |
///
/// The weight (default 1) is the number after the last `:`, when it parses as one; a regex or
/// path ending in `:<number>` therefore needs an explicit weight (`format=a:1:1`).
#[derive(Debug, Clone, PartialEq)]
pub struct RewardSpec {
    /// What the reward is.
    pub kind: RewardKind,
    /// Its weight in the sum (`reward_weights`).
    pub weight: f64,
}

/// The kinds of [`RewardSpec`].
#[derive(Debug, Clone, PartialEq)]
pub enum RewardKind {
    /// Written form.
    Lang(FormTarget),
    /// A reward model directory.
    Model(PathBuf),
    /// Length window.
    Length(LengthWindow),
    /// Distinct-n.
    Distinct(usize),
    /// Regex format (the pattern's source).
    Format(String),
    /// Exact answer against a column.
    Exact(String),
}

impl RewardSpec {
    /// Parses `KIND=ARG[:WEIGHT]`; errors name the spec and what was expected.
    pub fn parse(spec: &str) -> Result<Self> {
        let bad = |expected: &str| PreferenceError::InvalidSetting {
            setting: "reward",
            value: spec.to_string(),
            expected: expected.to_string(),
        };
        let (kind, rest) = spec.split_once('=').ok_or_else(|| {
            bad("KIND=ARG[:WEIGHT] with KIND one of lang, model, length, distinct, format, exact")
        })?;
        let (arg, weight) = match rest.rsplit_once(':') {
            Some((a, w)) => match w.parse::<f64>() {
                Ok(w) if w.is_finite() => (a, w),
                Ok(_) => return Err(bad("a finite weight")),
                Err(_) => (rest, 1.0),
            },
            None => (rest, 1.0),
        };
        if arg.is_empty() {
            return Err(bad("a non-empty argument after `=`"));
        }
        let kind = match kind {
            "lang" => RewardKind::Lang(match arg {
                "auto" | "prompt" => FormTarget::FromPrompt,
                l => FormTarget::Fixed(l.to_string()),
            }),
            "model" => RewardKind::Model(PathBuf::from(arg)),
            "length" => {
                let (a, b) = arg
                    .split_once("..")
                    .ok_or_else(|| bad("length=MIN..MAX (characters)"))?;
                let (min, max) = (
                    a.trim()
                        .parse::<usize>()
                        .map_err(|_| bad("length=MIN..MAX with whole numbers"))?,
                    b.trim()
                        .parse::<usize>()
                        .map_err(|_| bad("length=MIN..MAX with whole numbers"))?,
                );
                if min > max || max == 0 {
                    return Err(bad("length=MIN..MAX with MIN <= MAX and MAX > 0"));
                }
                RewardKind::Length(LengthWindow { min, max })
            }
            "distinct" => match arg.parse::<usize>() {
                Ok(n) if n >= 1 => RewardKind::Distinct(n),
                _ => return Err(bad("distinct=N with N >= 1")),
            },
            "format" => {
                Regex::new(arg).map_err(|e| bad(&format!("a valid regex ({e})")))?;
                RewardKind::Format(arg.to_string())
            }
            "exact" => RewardKind::Exact(arg.to_string()),
            _ => {
                return Err(bad(
                    "KIND one of lang, model, length, distinct, format, exact",
                ));
            }
        };
        Ok(Self { kind, weight })
    }

    /// The reward function of a rule-based spec; `None` for `model=` (loaded by the trainer,
    /// which has the device and tokenizer).
    pub fn build(&self) -> Result<Option<Box<dyn RewardFunction>>> {
        Ok(Some(match &self.kind {
            RewardKind::Lang(t) => Box::new(WrittenForm::new(t.clone())?),
            RewardKind::Model(_) => return Ok(None),
            RewardKind::Length(w) => Box::new(*w),
            RewardKind::Distinct(n) => Box::new(DistinctN { n: *n }),
            RewardKind::Format(p) => Box::new(RegexFormat {
                pattern: Regex::new(p).map_err(|e| PreferenceError::InvalidSetting {
                    setting: "reward",
                    value: format!("format={p}"),
                    expected: format!("a valid regex ({e})"),
                })?,
            }),
            RewardKind::Exact(c) => Box::new(ExactAnswer { column: c.clone() }),
        }))
    }
}

/// The rewards of a batch: `[completions][functions]`, `None` where a function did not apply
/// (the input of [`crate::grpo_advantages`]). `prompts`, `completions` and `rows` are per
/// completion (a prompt repeated G times).
pub fn score_rewards(
    functions: &[&dyn RewardFunction],
    prompts: &[&str],
    completions: &[&str],
    rows: &[&Value],
) -> Result<Vec<Vec<Option<f64>>>> {
    let n = completions.len();
    if prompts.len() != n || rows.len() != n {
        return Err(PreferenceError::Shape {
            input: "prompts",
            got: format!("{} prompts, {} rows", prompts.len(), rows.len()),
            expected: format!("{n} (one per completion)"),
        });
    }
    let columns = functions
        .iter()
        .map(|f| {
            let v = f.rewards(prompts, completions, rows)?;
            if v.len() != n {
                return Err(PreferenceError::Shape {
                    input: "rewards",
                    got: format!("{} rewards from `{}`", v.len(), f.name()),
                    expected: format!("{n} (one per completion)"),
                });
            }
            Ok(v)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((0..n)
        .map(|i| {
            columns
                .iter()
                .map(|c| c[i].map(f64::from).filter(|r| !r.is_nan()))
                .collect()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NN_PROMPT: &str = "Kva heiter hovudstaden i Noreg? Svar på nynorsk.";
    const NN: &str = "Eg trur at hovudstaden i Noreg heiter Oslo. Det er ikkje så mange som veit kva byen heitte før.";
    const NB: &str = "Jeg tror at hovedstaden i Norge heter Oslo. Det er ikke så mange som vet hva byen het før.";

    #[test]
    fn written_form_rewards_the_form_asked_for() {
        let nn = WrittenForm::new(FormTarget::Fixed("nn".into())).unwrap();
        let row = json!({});
        let good = nn.reward(NN_PROMPT, NN, &row).unwrap();
        let bad = nn.reward(NN_PROMPT, NB, &row).unwrap();
        assert!(good > 0.9 && bad < 0.1, "nn {good} nb {bad}");
        assert_eq!(nn.reward(NN_PROMPT, "123 !", &row), Some(0.0));
        // As the prompt asks: a Nynorsk prompt wants Nynorsk, a Bokmål one Bokmål.
        let auto = WrittenForm::new(FormTarget::FromPrompt).unwrap();
        assert!(auto.reward(NN_PROMPT, NN, &row).unwrap() > 0.9);
        let nb_prompt = "Hva heter hovedstaden i Norge? Jeg vil ha svar på bokmål.";
        assert!(auto.reward(nb_prompt, NB, &row).unwrap() > 0.9);
        assert!(auto.reward(nb_prompt, NN, &row).unwrap() < 0.1);
        // The row's `lang` column wins over the prompt.
        assert!(auto.reward(nb_prompt, NN, &json!({"lang": "nn"})).unwrap() > 0.9);
        assert!(WrittenForm::new(FormTarget::Fixed("xx".into())).is_err());
    }

    #[test]
    fn length_window() {
        let w = LengthWindow { min: 10, max: 20 };
        let row = json!({});
        assert_eq!(w.reward("", "Hei på deg!", &row), Some(1.0));
        assert_eq!(w.reward("", "Hei", &row), Some(0.3));
        assert_eq!(w.reward("", &"å".repeat(30), &row), Some(0.5));
        assert_eq!(w.reward("", &"å".repeat(40), &row), Some(0.0));
    }

    #[test]
    fn distinct_n_penalises_repetition() {
        let d = DistinctN { n: 2 };
        let row = json!({});
        assert_eq!(d.reward("", "Eg likar fjell og fjord", &row), Some(1.0));
        // 5 bigrams, 2 distinct: "ja takk" x3 and "takk ja" x2 (lower-cased).
        let r = d.reward("", "Ja takk, ja takk, JA TAKK!", &row).unwrap();
        assert!((r - 0.4).abs() < 1e-6, "{r}");
        assert_eq!(d.reward("", "Hei", &row), Some(1.0));
    }

    #[test]
    fn format_and_exact_answer() {
        let f = RegexFormat {
            pattern: Regex::new(r"(?s)^<tenk>.*</tenk>\s*Svar:").unwrap(),
        };
        let row = json!({"answer": "Oslo"});
        assert_eq!(
            f.reward("", "<tenk>Hovudstaden.</tenk> Svar: Oslo", &row),
            Some(1.0)
        );
        assert_eq!(f.reward("", "Svar: Oslo", &row), Some(0.0));
        let e = ExactAnswer {
            column: "answer".into(),
        };
        assert_eq!(
            e.reward("", "Eg tenkjer litt. Svar:  oslo.", &row),
            Some(1.0)
        );
        assert_eq!(e.reward("", "Oslo", &row), Some(1.0));
        assert_eq!(e.reward("", "Svar: Bergen", &row), Some(0.0));
        assert_eq!(e.reward("", "Svar: 42", &json!({"answer": 42})), Some(1.0));
        assert_eq!(e.reward("", "Oslo", &json!({})), None);
        // Non-ASCII before the marker still finds the answer (or falls back to the whole text).
        assert_eq!(e.reward("", "Ærleg talt, svar: Oslo", &row), Some(1.0));
    }

    #[test]
    fn closures_and_scoring_keep_none() {
        let c = FnReward::new("lengd", |_p: &str, c: &str, _r: &Value| {
            (!c.is_empty()).then_some(c.len() as f32)
        });
        let d = DistinctN { n: 1 };
        let fs: Vec<&dyn RewardFunction> = vec![&c, &d];
        let row = json!({});
        let got = score_rewards(&fs, &["a", "a"], &["hei", ""], &[&row, &row]).unwrap();
        assert_eq!(got, vec![vec![Some(3.0), Some(1.0)], vec![None, Some(1.0)]]);
        assert_eq!(c.name(), "lengd");
        assert!(score_rewards(&fs, &["a"], &["hei", ""], &[&row, &row]).is_err());
    }

    #[test]
    fn specs_parse_with_weights() {
        let p = |s| RewardSpec::parse(s).unwrap();
        assert_eq!(
            p("lang=nn"),
            RewardSpec {
                kind: RewardKind::Lang(FormTarget::Fixed("nn".into())),
                weight: 1.0
            }
        );
        assert_eq!(
            p("lang=auto").kind,
            RewardKind::Lang(FormTarget::FromPrompt)
        );
        let m = p("model=runs/rm:0.5");
        assert_eq!(m.kind, RewardKind::Model(PathBuf::from("runs/rm")));
        assert_eq!(m.weight, 0.5);
        assert_eq!(
            p("length=20..200:2").kind,
            RewardKind::Length(LengthWindow { min: 20, max: 200 })
        );
        assert_eq!(p("length=20..200:2").weight, 2.0);
        assert_eq!(p("distinct=3").kind, RewardKind::Distinct(3));
        assert_eq!(p("format=^Svar:").kind, RewardKind::Format("^Svar:".into()));
        assert_eq!(p("format=a:1:-1").weight, -1.0);
        assert_eq!(p("exact=answer").kind, RewardKind::Exact("answer".into()));
        for bad in [
            "lang",
            "length=200..20",
            "length=a..b",
            "distinct=0",
            "format=(",
            "foo=1",
            "lang=",
            "lang=nn:inf",
        ] {
            let e = RewardSpec::parse(bad).unwrap_err();
            assert!(e.to_string().contains(bad), "{bad}: {e}");
        }
        assert!(p("model=x").build().unwrap().is_none());
        assert_eq!(
            p("distinct=2").build().unwrap().unwrap().name(),
            "distinct_2"
        );
        assert!(p("lang=xx").build().is_err());
    }
}
