//! Retrieval-augmented prompts: the retrieved passages, numbered `[1] title — passage`, before
//! the question, under Norwegian instructions (Bokmål or Nynorsk) to answer only from the
//! sources, cite them as `[n]` and say so when they do not answer. The prompt goes through the
//! tokenizer's chat template when it has one (instructions as the system message, sources and
//! question as the user message), else a plain layout; it is counted with the model's
//! tokenizer and kept inside a token budget that leaves room for the answer.

use serde::{Deserialize, Serialize};
use tilpass_data::{Message, Role};
use tilpass_tokenize::{RenderOptions, TokenizeError, Tokenizer};

use crate::answer::AnswerError;
use crate::kb::Hit;

/// The language of the instructions and labels of a prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PromptLang {
    /// Bokmål.
    #[default]
    Nb,
    /// Nynorsk.
    Nn,
}

impl PromptLang {
    /// Parses `nb` or `nn`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "nb" => Some(Self::Nb),
            "nn" => Some(Self::Nn),
            _ => None,
        }
    }

    /// The default instructions in this language.
    pub fn instructions(self) -> &'static str {
        match self {
            Self::Nb => INSTRUCTIONS_NB,
            Self::Nn => INSTRUCTIONS_NN,
        }
    }

    fn labels(self) -> Labels {
        match self {
            Self::Nb => Labels {
                sources: "Kilder:",
                none: "(ingen kilder funnet)",
                question: "Spørsmål:",
                answer: "Svar:",
            },
            Self::Nn => Labels {
                sources: "Kjelder:",
                none: "(ingen kjelder funne)",
                question: "Spørsmål:",
                answer: "Svar:",
            },
        }
    }
}

/// Default instructions in Bokmål.
pub const INSTRUCTIONS_NB: &str = "Svar på spørsmålet bare ut fra kildene nedenfor. Vis til \
kildene med nummeret i hakeparentes, for eksempel [1] eller [1, 2]. Hvis kildene ikke svarer \
på spørsmålet, si at du ikke finner svaret i kildene.";

/// Default instructions in Nynorsk.
pub const INSTRUCTIONS_NN: &str = "Svar på spørsmålet berre ut frå kjeldene nedanfor. Vis til \
kjeldene med nummeret i hakeparentes, til dømes [1] eller [1, 2]. Om kjeldene ikkje svarar på \
spørsmålet, sei at du ikkje finn svaret i kjeldene.";

/// Section labels of one language.
struct Labels {
    sources: &'static str,
    none: &'static str,
    question: &'static str,
    answer: &'static str,
}

/// Settings of the prompt builder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PromptConfig {
    /// Language of the default instructions and the labels (`nb` or `nn`).
    pub lang: PromptLang,
    /// Instructions replacing the language's default ([`INSTRUCTIONS_NB`], [`INSTRUCTIONS_NN`]).
    pub instructions: Option<String>,
    /// Most passages in the prompt (the best-ranked ones; at least 1). Default 5.
    pub max_passages: usize,
    /// Token budget of prompt and answer together (`None`: the model's context, given to
    /// [`build_prompt`]; with both, the smaller).
    pub max_tokens: Option<usize>,
    /// Tokens kept free for the answer (at most half of the budget is kept when the budget is
    /// small). Default 256.
    pub answer_tokens: usize,
    /// Chat template: `None` uses the tokenizer's own when it has one, else the plain layout;
    /// `"plain"` forces the plain layout; any other value names a template of the tokenizer or
    /// a built-in (`chatml`, `norsk`).
    pub chat_template: Option<String>,
}

impl Default for PromptConfig {
    fn default() -> Self {
        Self {
            lang: PromptLang::Nb,
            instructions: None,
            max_passages: 5,
            max_tokens: None,
            answer_tokens: 256,
            chat_template: None,
        }
    }
}

/// The value of [`PromptConfig::chat_template`] that forces the plain layout.
pub const PLAIN_LAYOUT: &str = "plain";

fn bad(setting: &str, message: impl Into<String>) -> AnswerError {
    AnswerError::InvalidSetting {
        setting: setting.into(),
        message: message.into(),
    }
}

impl PromptConfig {
    /// Checks every setting (each error names it and the accepted range).
    pub fn validate(&self) -> Result<(), AnswerError> {
        if self.max_passages == 0 {
            return Err(bad("max_passages", "must be an integer >= 1, got 0"));
        }
        if self.answer_tokens == 0 {
            return Err(bad("answer_tokens", "must be an integer >= 1, got 0"));
        }
        if let Some(n) = self.max_tokens
            && n < 2
        {
            return Err(bad(
                "max_tokens",
                format!("must be an integer >= 2, got {n}"),
            ));
        }
        if let Some(i) = &self.instructions
            && i.trim().is_empty()
        {
            return Err(bad(
                "instructions",
                "must hold some text (leave it out for the default instructions)",
            ));
        }
        Ok(())
    }

    /// The instructions in effect.
    pub fn instructions(&self) -> &str {
        self.instructions
            .as_deref()
            .unwrap_or_else(|| self.lang.instructions())
    }
}

/// A passage as it was put into a prompt, numbered `n` (1-based, in rank order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptPassage {
    /// Its number in the prompt (`[n]`).
    pub n: usize,
    /// Document id.
    pub id: String,
    /// Document title, if any.
    pub title: Option<String>,
    /// The passage text given to the model (cut when `truncated`).
    pub text: String,
    /// First character of the text in the document.
    pub start: u64,
    /// One past the last character of the text in the document (earlier than the hit's end
    /// when `truncated`).
    pub end: u64,
    /// The retrieval score.
    pub score: f32,
    /// Whether the passage was cut to fit the budget.
    pub truncated: bool,
}

impl PromptPassage {
    /// Hit `hit` as passage `[n]`, whole.
    pub fn from_hit(n: usize, hit: &Hit) -> Self {
        Self {
            n,
            id: hit.id.clone(),
            title: hit.title.clone(),
            text: hit.passage.clone(),
            start: hit.start,
            end: hit.end,
            score: hit.score,
            truncated: false,
        }
    }
}

/// A prompt built by [`build_prompt`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RagPrompt {
    /// The prompt text (rendered by the chat template, or the plain layout).
    pub text: String,
    /// Its token ids: the template's text encoded without special tokens (templates write
    /// their own), the plain layout with them (the tokenizer's BOS).
    pub ids: Vec<u32>,
    /// The passages in the prompt, `[1]` first.
    pub passages: Vec<PromptPassage>,
    /// Hits left out for the budget (lowest-ranked first out), beyond `max_passages`'s cut.
    pub dropped: usize,
    /// The chat template used (`None`: the plain layout).
    pub template: Option<String>,
    /// The messages the chat template rendered (instructions as the system message, or opening
    /// the user message when the template has no system role; then the sources and the
    /// question); empty for the plain layout. With an assistant turn appended they make a
    /// training conversation whose prompt is this one ([`crate::sft`]).
    #[serde(default)]
    pub messages: Vec<Message>,
    /// Most tokens the prompt could take (budget minus the room kept for the answer; `None`
    /// without a budget).
    pub prompt_limit: Option<usize>,
}

/// One line per passage: `[n] title — text`, whitespace runs folded to one space.
fn passage_line(n: usize, title: Option<&str>, text: &str, cut: bool) -> String {
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let ellipsis = if cut { " …" } else { "" };
    match title.map(str::trim).filter(|t| !t.is_empty()) {
        Some(t) => format!("[{n}] {t} — {text}{ellipsis}"),
        None => format!("[{n}] {text}{ellipsis}"),
    }
}

/// The sources section and the question: what goes in the user message of a chat template.
fn user_body(lang: PromptLang, question: &str, passages: &[PromptPassage]) -> String {
    let l = lang.labels();
    let mut s = String::from(l.sources);
    s.push('\n');
    if passages.is_empty() {
        s.push_str(l.none);
        s.push('\n');
    }
    for p in passages {
        s.push_str(&passage_line(p.n, p.title.as_deref(), &p.text, p.truncated));
        s.push('\n');
    }
    s.push('\n');
    s.push_str(l.question);
    s.push(' ');
    s.push_str(question.trim());
    s
}

/// The plain layout (no chat template): instructions, sources, question, then `Svar:` for the
/// model to continue.
pub fn plain_prompt(
    lang: PromptLang,
    instructions: &str,
    question: &str,
    passages: &[PromptPassage],
) -> String {
    format!(
        "{}\n\n{}\n{}",
        instructions.trim(),
        user_body(lang, question, passages),
        lang.labels().answer
    )
}

/// How a prompt is rendered and counted.
enum Layout {
    /// The plain layout, encoded with special tokens.
    Plain,
    /// A chat template; `system` tells whether it takes a system message (else the
    /// instructions open the user message).
    Template {
        template: Box<tilpass_tokenize::ChatTemplate>,
        system: bool,
    },
}

struct Renderer<'a> {
    cfg: &'a PromptConfig,
    tok: &'a Tokenizer,
    question: &'a str,
    layout: Layout,
}

/// The messages of a chat-template prompt: the instructions as the system message (or, when
/// `system` is false, opening the user message), the sources and question as the user message.
fn messages(
    cfg: &PromptConfig,
    question: &str,
    passages: &[PromptPassage],
    system: bool,
) -> Vec<Message> {
    let body = user_body(cfg.lang, question, passages);
    let instr = cfg.instructions().trim();
    if system {
        vec![
            Message::new(Role::System, instr),
            Message::new(Role::User, body),
        ]
    } else {
        vec![Message::new(Role::User, format!("{instr}\n\n{body}"))]
    }
}

impl Renderer<'_> {
    fn render(&self, passages: &[PromptPassage]) -> Result<(String, Vec<u32>), AnswerError> {
        match &self.layout {
            Layout::Plain => {
                let text = plain_prompt(
                    self.cfg.lang,
                    self.cfg.instructions(),
                    self.question,
                    passages,
                );
                let ids = self.tok.encode(&text, true)?;
                Ok((text, ids))
            }
            Layout::Template { template, system } => {
                let opts = RenderOptions {
                    add_generation_prompt: true,
                    ..Default::default()
                };
                let text = template
                    .render(&messages(self.cfg, self.question, passages, *system), &opts)?
                    .text;
                let ids = self.tok.encode(&text, false)?;
                Ok((text, ids))
            }
        }
    }
}

/// Builds the prompt for `question` from `hits` (best first): the first
/// [`PromptConfig::max_passages`] hits, numbered from 1, under the instructions.
///
/// The budget is the smaller of [`PromptConfig::max_tokens`] and `context` (the model's
/// context length); the prompt may take the budget minus the room kept for the answer
/// ([`PromptConfig::answer_tokens`], at most half the budget). When the passages do not fit,
/// the lowest-ranked are dropped until they do; when even the best one alone does not fit, it
/// is cut (at a word boundary, its span shortened to match) to what fits. Tokens are counted
/// on exactly the ids returned. A question and instructions that do not fit without any
/// passage are [`AnswerError::InvalidSetting`] naming the budget; an empty question is
/// [`crate::RagError::EmptyQuery`].
pub fn build_prompt(
    cfg: &PromptConfig,
    tok: &Tokenizer,
    question: &str,
    hits: &[Hit],
    context: Option<usize>,
) -> Result<RagPrompt, AnswerError> {
    cfg.validate()?;
    if question.trim().is_empty() {
        return Err(crate::RagError::EmptyQuery.into());
    }
    let layout = match cfg.chat_template.as_deref() {
        Some(PLAIN_LAYOUT) => Layout::Plain,
        name => match tok.chat_template(name) {
            Ok(template) => Layout::Template {
                template: Box::new(template),
                system: true,
            },
            Err(TokenizeError::NoChatTemplate { .. }) if name.is_none() => Layout::Plain,
            Err(e) => return Err(e.into()),
        },
    };
    // Templates without a system role (they raise on one) get the instructions in the user
    // message instead.
    let layout = match layout {
        Layout::Template { template, .. } => {
            let opts = RenderOptions {
                add_generation_prompt: true,
                ..Default::default()
            };
            let system = template
                .render(&messages(cfg, question, &[], true), &opts)
                .is_ok();
            Layout::Template { template, system }
        }
        plain => plain,
    };
    let r = Renderer {
        cfg,
        tok,
        question,
        layout,
    };
    let template = match &r.layout {
        Layout::Plain => None,
        Layout::Template { template, .. } => Some(template.name().to_string()),
    };
    let budget = match (cfg.max_tokens, context) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let limit = budget.map(|b| b - cfg.answer_tokens.min(b / 2));
    let chosen: Vec<PromptPassage> = hits
        .iter()
        .take(cfg.max_passages)
        .enumerate()
        .map(|(i, h)| PromptPassage::from_hit(i + 1, h))
        .collect();
    let fits = |ids: &[u32]| limit.is_none_or(|l| ids.len() <= l);
    let done = |text: String, ids: Vec<u32>, passages: Vec<PromptPassage>| RagPrompt {
        messages: match &r.layout {
            Layout::Plain => Vec::new(),
            Layout::Template { system, .. } => messages(cfg, question, &passages, *system),
        },
        text,
        ids,
        dropped: chosen.len() - passages.len(),
        passages,
        template: template.clone(),
        prompt_limit: limit,
    };
    // Drop the lowest-ranked passages until the rest fit.
    for keep in (1..=chosen.len()).rev() {
        let (text, ids) = r.render(&chosen[..keep])?;
        if fits(&ids) {
            return Ok(done(text, ids, chosen[..keep].to_vec()));
        }
    }
    let (text, ids) = r.render(&[])?;
    if let (Some(limit), Some(budget)) = (limit, budget)
        && !fits(&ids)
    {
        return Err(bad(
            "max_tokens",
            format!(
                "the instructions and the question alone take {} tokens; a budget of {budget} \
                 tokens keeps {} for the answer and leaves {limit} for the prompt (raise the \
                 budget, lower answer_tokens or shorten the question)",
                ids.len(),
                budget - limit
            ),
        ));
    }
    let Some(best) = chosen.first() else {
        return Ok(done(text, ids, Vec::new()));
    };
    // The best passage alone does not fit: cut it to the longest prefix that does.
    let chars: Vec<(usize, char)> = best.text.char_indices().collect();
    let cut = |n: usize| -> PromptPassage {
        let byte_end = chars.get(n).map(|(b, _)| *b).unwrap_or(best.text.len());
        let text = best.text[..byte_end].trim_end().to_string();
        PromptPassage {
            end: best.start + text.chars().count() as u64,
            text,
            truncated: true,
            ..best.clone()
        }
    };
    let (mut lo, mut hi) = (0usize, chars.len());
    while lo + 1 < hi {
        let mid = (lo + hi) / 2;
        let (_, ids) = r.render(std::slice::from_ref(&cut(mid)))?;
        if fits(&ids) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    // Back off to the end of a word when the prefix ends inside one.
    let mut n = lo;
    if n < chars.len()
        && !chars[n].1.is_whitespace()
        && let Some(w) = (1..n).rev().find(|&i| chars[i].1.is_whitespace())
    {
        n = w;
    }
    for n in [n, lo] {
        if n == 0 {
            continue;
        }
        let p = cut(n);
        let (text, ids) = r.render(std::slice::from_ref(&p))?;
        if fits(&ids) && !p.text.is_empty() {
            return Ok(done(text, ids, vec![p]));
        }
    }
    Ok(done(text, ids, Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A word-level tokenizer (whitespace-split; every word one token, unknown words `<unk>`),
    /// so token counts are word counts; `template` is its chat template.
    fn tokenizer(template: Option<&str>) -> (tempfile::TempDir, Tokenizer) {
        let dir = tempfile::tempdir().unwrap();
        let tok = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
            "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"},
            "post_processor": null, "decoder": null,
            "model": {"type": "WordLevel", "vocab": {"<unk>": 0, "</s>": 1}, "unk_token": "<unk>"}
        });
        std::fs::write(dir.path().join("tokenizer.json"), tok.to_string()).unwrap();
        let mut cfg = serde_json::json!({"eos_token": "</s>"});
        if let Some(t) = template {
            cfg["chat_template"] = t.into();
        }
        std::fs::write(dir.path().join("tokenizer_config.json"), cfg.to_string()).unwrap();
        let tok = Tokenizer::from_dir(dir.path()).unwrap();
        (dir, tok)
    }

    fn hit(id: &str, title: Option<&str>, passage: &str, start: u64) -> Hit {
        Hit {
            id: id.into(),
            score: 1.0,
            passage: passage.into(),
            start,
            end: start + passage.chars().count() as u64,
            title: title.map(Into::into),
            ord: 0,
            meta: None,
        }
    }

    fn hits() -> Vec<Hit> {
        vec![
            hit(
                "kommune",
                Some("Kommunenes ansvar"),
                "Kommunene har ansvar for grunnskolen og barnehagene.",
                0,
            ),
            hit(
                "fylke",
                Some("Fylket"),
                "Fylket driver de videregående skolene.",
                40,
            ),
            hit(
                "stat",
                None,
                "Staten eier sykehusene.\nHelse Sør-Øst er størst.",
                7,
            ),
        ]
    }

    const Q: &str = "Hvem har ansvar for barnehagene?";

    fn words(s: &str) -> usize {
        s.split_whitespace().count()
    }

    #[test]
    fn plain_layout_numbers_passages_before_the_question() {
        let (_d, tok) = tokenizer(None);
        let p = build_prompt(&PromptConfig::default(), &tok, Q, &hits(), None).unwrap();
        assert_eq!(p.template, None);
        assert_eq!(p.dropped, 0);
        let want = format!(
            "{INSTRUCTIONS_NB}\n\nKilder:\n\
             [1] Kommunenes ansvar — Kommunene har ansvar for grunnskolen og barnehagene.\n\
             [2] Fylket — Fylket driver de videregående skolene.\n\
             [3] Staten eier sykehusene. Helse Sør-Øst er størst.\n\n\
             Spørsmål: {Q}\nSvar:"
        );
        assert_eq!(p.text, want);
        assert_eq!(p.ids, tok.encode(&p.text, true).unwrap());
        assert_eq!(p.ids.len(), words(&want));
        let ids: Vec<(usize, &str)> = p.passages.iter().map(|x| (x.n, x.id.as_str())).collect();
        assert_eq!(ids, [(1, "kommune"), (2, "fylke"), (3, "stat")]);
        // max_passages keeps the best-ranked.
        let cfg = PromptConfig {
            max_passages: 2,
            lang: PromptLang::Nn,
            ..Default::default()
        };
        let p = build_prompt(&cfg, &tok, Q, &hits(), None).unwrap();
        assert_eq!(p.passages.len(), 2);
        assert!(p.text.starts_with(INSTRUCTIONS_NN), "{}", p.text);
        assert!(p.text.contains("\n\nKjelder:\n[1] "), "{}", p.text);
        // No hits: the sources section says so.
        let p = build_prompt(&cfg, &tok, Q, &[], None).unwrap();
        assert!(
            p.text.contains("Kjelder:\n(ingen kjelder funne)\n"),
            "{}",
            p.text
        );
    }

    #[test]
    fn the_budget_drops_the_lowest_ranked_then_cuts() {
        let (_d, tok) = tokenizer(None);
        let cfg = PromptConfig::default();
        let len = |n: usize| {
            build_prompt(&cfg, &tok, Q, &hits()[..n], None)
                .unwrap()
                .ids
                .len()
        };
        let (one, two, three) = (len(1), len(2), len(3));
        assert!(one < two && two < three);
        // Room for exactly two passages: the third is dropped.
        let cfg = PromptConfig {
            max_tokens: Some(two + 10),
            answer_tokens: 10,
            ..Default::default()
        };
        let p = build_prompt(&cfg, &tok, Q, &hits(), None).unwrap();
        assert_eq!((p.passages.len(), p.dropped), (2, 1));
        assert_eq!(p.prompt_limit, Some(two));
        assert_eq!(p.ids.len(), two);
        // The model's context counts too (the smaller budget wins).
        let p = build_prompt(&cfg, &tok, Q, &hits(), Some(one + 10)).unwrap();
        assert_eq!((p.passages.len(), p.dropped), (1, 2));
        // Three words short of the best passage: it is cut at a word boundary, its span too
        // (four words go: the cut mark `…` is a word).
        let doc = "Kommunene har ansvar for grunnskolen og barnehagene.";
        let p = build_prompt(&cfg, &tok, Q, &hits(), Some(one - 3 + 10)).unwrap();
        assert_eq!(p.passages.len(), 1);
        let c = &p.passages[0];
        assert!(c.truncated);
        assert_eq!(c.text, "Kommunene har ansvar");
        let span: String = doc
            .chars()
            .skip(c.start as usize)
            .take((c.end - c.start) as usize)
            .collect();
        assert_eq!(span, c.text);
        assert!(p.ids.len() <= one - 3, "{} > {}", p.ids.len(), one - 3);
        assert!(
            p.text
                .contains("[1] Kommunenes ansvar — Kommunene har ansvar …\n")
        );
        // No room even without passages: an error naming the budget.
        let none = build_prompt(&cfg, &tok, Q, &[], None).unwrap().ids.len();
        let e = build_prompt(&cfg, &tok, Q, &hits(), Some(none - 1 + 10)).unwrap_err();
        assert!(
            matches!(&e, AnswerError::InvalidSetting { setting, .. } if setting == "max_tokens")
        );
        assert!(
            e.to_string().contains(&format!("take {none} tokens")),
            "{e}"
        );
    }

    #[test]
    fn a_small_budget_keeps_at_most_half_for_the_answer() {
        let (_d, tok) = tokenizer(None);
        let cfg = PromptConfig {
            answer_tokens: 1000,
            ..Default::default()
        };
        let p = build_prompt(&cfg, &tok, Q, &hits(), Some(400)).unwrap();
        assert_eq!(p.prompt_limit, Some(200));
        assert_eq!(p.passages.len(), 3);
    }

    #[test]
    fn chat_templates_get_system_and_user_messages() {
        let norsk = tilpass_tokenize::chat_template::NORSK_TEMPLATE;
        let (_d, tok) = tokenizer(Some(norsk));
        let p = build_prompt(&PromptConfig::default(), &tok, Q, &hits(), None).unwrap();
        assert_eq!(p.template.as_deref(), Some("default"));
        assert!(
            p.text.starts_with(&format!(
                "### System:\n{INSTRUCTIONS_NB}\n\n### Bruker:\nKilder:\n[1] "
            )),
            "{}",
            p.text
        );
        assert!(
            p.text
                .ends_with(&format!("Spørsmål: {Q}\n\n### Assistent:\n")),
            "{}",
            p.text
        );
        assert_eq!(p.ids, tok.encode(&p.text, false).unwrap());
        // "plain" forces the plain layout; a built-in can be named.
        let plain = PromptConfig {
            chat_template: Some(PLAIN_LAYOUT.into()),
            ..Default::default()
        };
        assert_eq!(
            build_prompt(&plain, &tok, Q, &hits(), None)
                .unwrap()
                .template,
            None
        );
        let (_d2, bare) = tokenizer(None);
        let named = PromptConfig {
            chat_template: Some("norsk".into()),
            ..Default::default()
        };
        let p = build_prompt(&named, &bare, Q, &hits(), None).unwrap();
        assert_eq!(p.template.as_deref(), Some("norsk"));
        let unknown = PromptConfig {
            chat_template: Some("nope".into()),
            ..Default::default()
        };
        assert!(matches!(
            build_prompt(&unknown, &bare, Q, &hits(), None),
            Err(AnswerError::Tokenize(_))
        ));
    }

    #[test]
    fn templates_without_a_system_role_get_the_instructions_in_the_user_turn() {
        let t = "{% for m in messages %}{% if m['role'] == 'system' %}\
                 {{ raise_exception('no system role') }}{% endif %}\
                 <{{ m['role'] }}>{{ m['content'] }}{% endfor %}<assistant>";
        let (_d, tok) = tokenizer(Some(t));
        let p = build_prompt(&PromptConfig::default(), &tok, Q, &hits(), None).unwrap();
        assert!(
            p.text
                .starts_with(&format!("<user>{INSTRUCTIONS_NB}\n\nKilder:\n[1] ")),
            "{}",
            p.text
        );
    }

    #[test]
    fn bad_settings_and_empty_questions_are_refused() {
        let (_d, tok) = tokenizer(None);
        let e = build_prompt(&PromptConfig::default(), &tok, "  ", &hits(), None).unwrap_err();
        assert!(matches!(e, AnswerError::Rag(crate::RagError::EmptyQuery)));
        for (cfg, setting) in [
            (
                PromptConfig {
                    max_passages: 0,
                    ..Default::default()
                },
                "max_passages",
            ),
            (
                PromptConfig {
                    answer_tokens: 0,
                    ..Default::default()
                },
                "answer_tokens",
            ),
            (
                PromptConfig {
                    instructions: Some(" ".into()),
                    ..Default::default()
                },
                "instructions",
            ),
        ] {
            let e = build_prompt(&cfg, &tok, Q, &hits(), None).unwrap_err();
            assert!(e.to_string().starts_with(setting), "{e}");
        }
        // The config reads from JSON with defaults, and refuses unknown keys.
        let cfg: PromptConfig =
            serde_json::from_str(r#"{"lang": "nn", "max_passages": 3}"#).unwrap();
        assert_eq!(
            (cfg.lang, cfg.max_passages, cfg.answer_tokens),
            (PromptLang::Nn, 3, 256)
        );
        assert!(serde_json::from_str::<PromptConfig>(r#"{"langs": "nn"}"#).is_err());
    }
}
