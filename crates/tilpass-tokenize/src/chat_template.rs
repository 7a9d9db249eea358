//! Chat templates: HF's Jinja chat templates rendered with minijinja, with HF's semantics.
//!
//! Matches transformers' `apply_chat_template` environment: `trim_blocks` and `lstrip_blocks`,
//! loop controls, `raise_exception(...)`, `strftime_now(...)`, a `tojson` filter that writes JSON
//! as Python's `json.dumps(ensure_ascii=False)` does, Python string/dict methods
//! (`.strip()`, `.split()`, `.items()`, ...), the special tokens (`bos_token`, `eos_token`, ...)
//! as variables, and `{% generation %}...{% endgeneration %}` blocks, whose character spans
//! become the assistant-token mask (`return_assistant_tokens_mask=True`).

use std::ops::Range;

use minijinja::value::Kwargs;
use minijinja::{Environment, ErrorKind, Value as JValue};
use serde_json::Value;
use tilpass_data::Message;

use crate::error::{Result, TokenizeError};
use crate::special::SpecialTokens;

/// Names of the templates shipped with tilpass.
pub const BUILTIN_NAMES: [&str; 2] = ["chatml", "norsk"];

/// ChatML (`<|im_start|>role ... <|im_end|>`), as used by Qwen and many fine-tunes, with
/// `{% generation %}` blocks around assistant turns. Its end-of-turn token `<|im_end|>` must be
/// in the vocabulary (add it as a special token for tokenizers without it).
pub const CHATML_TEMPLATE: &str = include_str!("../templates/chatml.jinja");

/// A plain-text template with Norwegian role labels that needs no new special tokens, for base
/// models without a chat template (e.g. a tokenizer trained from scratch): `### System:`,
/// `### Bruker:` (user), `### Assistent:`; each assistant turn ends with the EOS token, which is
/// inside the `{% generation %}` block and so supervised.
pub const NORSK_TEMPLATE: &str = include_str!("../templates/norsk.jinja");

/// The source of a built-in template by name.
pub fn builtin(name: &str) -> Option<&'static str> {
    match name {
        "chatml" => Some(CHATML_TEMPLATE),
        "norsk" => Some(NORSK_TEMPLATE),
        _ => None,
    }
}

const GEN_START: char = '\u{FDD0}';
const GEN_END: char = '\u{FDD1}';
const GEN_FILTER: &str = "__tilpass_generation";
const RAISE_PREFIX: &str = "\u{FDD2}raise:";

/// Options for rendering, mirroring `apply_chat_template`'s arguments.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    /// Append the header of a new assistant turn.
    pub add_generation_prompt: bool,
    /// Leave the final message open (no end-of-turn), to let the model continue it.
    pub continue_final_message: bool,
    /// Tool schemas (`tools`), as JSON.
    pub tools: Option<Value>,
    /// Retrieved documents (`documents`), as JSON.
    pub documents: Option<Value>,
    /// Extra template variables (`chat_template_kwargs`, e.g. `enable_thinking`).
    pub extra: serde_json::Map<String, Value>,
}

/// Limits on rendering a chat template: templates arrive with every downloaded model, so they
/// are untrusted code. A template that exceeds a limit is [`TokenizeError::TemplateLimit`],
/// naming the template and the limit.
///
/// `fuel` bounds the instructions the template engine runs (a loop that would run for hours
/// stops within it); `max_output_bytes` bounds the rendered text and every single step that
/// would build a string larger than it (`indent`, `replace`, `format` widths, `tojson`
/// indentation), before anything is allocated.
///
/// Not covered: minijinja offers no hook on the `~` and `+` operators, so a template that
/// doubles a string by concatenating it with itself many times over is stopped only by fuel,
/// which bounds the number of doublings, not their size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct TemplateLimits {
    /// Engine instructions per render (minijinja fuel). Default [`Self::DEFAULT_FUEL`].
    pub fuel: u64,
    /// Longest rendered text, and longest string one step may build, in bytes. Default
    /// [`Self::DEFAULT_MAX_OUTPUT_BYTES`].
    pub max_output_bytes: usize,
}

impl TemplateLimits {
    /// 20 million instructions: a conversation of tens of thousands of turns renders with
    /// every HF template we know; an endless loop stops within a few seconds.
    pub const DEFAULT_FUEL: u64 = 20_000_000;
    /// 64 MiB, the same as the longest JSONL line a dataset may have.
    pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 64 << 20;
}

impl Default for TemplateLimits {
    fn default() -> Self {
        Self {
            fuel: Self::DEFAULT_FUEL,
            max_output_bytes: Self::DEFAULT_MAX_OUTPUT_BYTES,
        }
    }
}

/// A rendered conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedChat {
    /// The text to tokenize (with `add_special_tokens = false`).
    pub text: String,
    /// Byte ranges of `text` inside `{% generation %}` blocks.
    pub generation_spans: Vec<Range<usize>>,
}

/// A compiled chat template.
pub struct ChatTemplate {
    name: String,
    source: String,
    env: Environment<'static>,
    special: SpecialTokens,
    has_generation: bool,
    limits: TemplateLimits,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("name", &self.name)
            .field("has_generation", &self.has_generation)
            .finish()
    }
}

const LIMIT_PREFIX: &str = "\u{FDD3}limit:";

fn limit_exceeded(what: &str, limit: usize) -> minijinja::Error {
    minijinja::Error::new(
        ErrorKind::InvalidOperation,
        format!("{LIMIT_PREFIX}{what} would exceed the output limit of {limit} bytes"),
    )
}

fn template_error(name: &str, e: &minijinja::Error) -> TokenizeError {
    let detail = e.detail().unwrap_or_default();
    let at_line = || {
        e.line()
            .map(|l| format!(" (template line {l})"))
            .unwrap_or_default()
    };
    if e.kind() == ErrorKind::OutOfFuel {
        return TokenizeError::TemplateLimit {
            name: name.to_string(),
            limit: "fuel".into(),
            message: format!("ran out of fuel (too many steps){}", at_line()),
        };
    }
    if let Some(msg) = detail.strip_prefix(LIMIT_PREFIX) {
        return TokenizeError::TemplateLimit {
            name: name.to_string(),
            limit: "max_output_bytes".into(),
            message: format!("{msg}{}", at_line()),
        };
    }
    if let Some(msg) = detail.strip_prefix(RAISE_PREFIX) {
        return TokenizeError::TemplateRaised {
            name: name.to_string(),
            message: msg.to_string(),
        };
    }
    let mut message = format!("{}", e.kind());
    if !detail.is_empty() {
        message.push_str(": ");
        message.push_str(detail);
    }
    if let Some(line) = e.line() {
        message.push_str(&format!(" (template line {line})"));
    }
    TokenizeError::Template {
        name: name.to_string(),
        message,
    }
}

/// Rewrites `{% generation %}`/`{% endgeneration %}` into a filter block with the same
/// whitespace control, so minijinja can render it and we can find its output.
fn rewrite_generation(source: &str) -> (String, bool) {
    let open = regex::Regex::new(r"\{%([-+]?)\s*generation\s*([-+]?)%\}").expect("valid regex");
    let close = regex::Regex::new(r"\{%([-+]?)\s*endgeneration\s*([-+]?)%\}").expect("valid regex");
    let has = open.is_match(source);
    let s = open.replace_all(source, format!("{{%${{1}} filter {GEN_FILTER} ${{2}}%}}"));
    let s = close.replace_all(&s, "{%${1} endfilter ${2}%}");
    (s.into_owned(), has)
}

/// Writes JSON as Python's `json.dumps(obj, ensure_ascii=False, indent=indent,
/// separators=separators, sort_keys=sort_keys)`.
pub fn python_json(v: &Value, indent: Option<usize>, sort_keys: bool) -> String {
    python_json_limited(v, indent, sort_keys, usize::MAX).unwrap_or_default()
}

/// [`python_json`] that gives up (`None`) as soon as the text would exceed `max` bytes.
fn python_json_limited(
    v: &Value,
    indent: Option<usize>,
    sort_keys: bool,
    max: usize,
) -> Option<String> {
    fn esc(s: &str, out: &mut String) {
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{08}' => out.push_str("\\b"),
                '\u{0c}' => out.push_str("\\f"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    fn num(n: &serde_json::Number) -> String {
        if let Some(f) = n.as_f64().filter(|_| n.is_f64()) {
            if f.is_finite() && f == f.trunc() && f.abs() < 1e16 {
                return format!("{f:.1}");
            }
            // Python's repr uses e-XX with two digits at least.
            let s = format!("{f:?}");
            if let Some((m, e)) = s.split_once('e') {
                let (sign, digits) = match e.strip_prefix('-') {
                    Some(d) => ("-", d),
                    None => ("+", e),
                };
                return format!("{m}e{sign}{digits:0>2}");
            }
            return s;
        }
        n.to_string()
    }
    fn go(
        v: &Value,
        indent: Option<usize>,
        sort: bool,
        level: usize,
        max: usize,
        out: &mut String,
    ) {
        if out.len() > max {
            return;
        }
        let (item_sep, key_sep) = if indent.is_some() {
            (",", ": ")
        } else {
            (", ", ": ")
        };
        let newline = |out: &mut String, lvl: usize| {
            if let Some(i) = indent {
                let width = i.saturating_mul(lvl);
                if width > max.saturating_sub(out.len()) {
                    // Over the limit: mark it so without building the indentation.
                    out.extend(std::iter::repeat_n(' ', (max - out.len().min(max)) + 1));
                    return;
                }
                out.push('\n');
                out.push_str(&" ".repeat(width));
            }
        };
        match v {
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Number(n) => out.push_str(&num(n)),
            Value::String(s) => esc(s, out),
            Value::Array(a) => {
                if a.is_empty() {
                    out.push_str("[]");
                    return;
                }
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push_str(item_sep);
                    }
                    newline(out, level + 1);
                    go(x, indent, sort, level + 1, max, out);
                }
                newline(out, level);
                out.push(']');
            }
            Value::Object(o) => {
                if o.is_empty() {
                    out.push_str("{}");
                    return;
                }
                let mut keys: Vec<&String> = o.keys().collect();
                if sort {
                    keys.sort();
                }
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push_str(item_sep);
                    }
                    newline(out, level + 1);
                    esc(k, out);
                    out.push_str(key_sep);
                    go(&o[k], indent, sort, level + 1, max, out);
                }
                newline(out, level);
                out.push('}');
            }
        }
    }
    let mut out = String::new();
    go(v, indent, sort_keys, 0, max, &mut out);
    (out.len() <= max).then_some(out)
}

fn tojson_filter(
    value: JValue,
    kwargs: Kwargs,
    max: usize,
) -> std::result::Result<JValue, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let _: Option<JValue> = kwargs.get("ensure_ascii")?;
    let _: Option<JValue> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    let json = serde_json::to_value(&value)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    python_json_limited(&json, indent, sort_keys.unwrap_or(false), max)
        .map(JValue::from_safe_string)
        .ok_or_else(|| limit_exceeded("tojson", max))
}

/// The byte length `indent` would produce, or `None` when it cannot be computed.
fn indent_len(text: &str, width: usize) -> usize {
    let lines = text.matches('\n').count() + 1;
    text.len().saturating_add(width.saturating_mul(lines))
}

/// The byte length of `text.replace(from, to)` (Python semantics: an empty `from` matches
/// between every character and at both ends).
fn replace_len(text: &str, from: &str, to: &str) -> usize {
    let n = if from.is_empty() {
        text.chars().count() + 1
    } else {
        text.matches(from).count()
    };
    text.len()
        .saturating_sub(n.saturating_mul(from.len()))
        .saturating_add(n.saturating_mul(to.len()))
}

/// Fails when a format string asks for a width or precision above `max`: numbers in a printf
/// conversion (`%-10.3f`) or in the spec of a `{...:spec}` field, or taken from an argument
/// (`*`, a nested `{}`) when an integer argument exceeds `max`. Digits elsewhere in the text
/// are content and not checked.
fn check_format(
    fmt: &str,
    args: &[JValue],
    max: usize,
) -> std::result::Result<(), minijinja::Error> {
    fn too_big(spec: &str, max: usize) -> bool {
        let mut n = 0usize;
        for c in spec.chars() {
            match c.to_digit(10) {
                Some(d) => {
                    n = n.saturating_mul(10).saturating_add(d as usize);
                    if n > max {
                        return true;
                    }
                }
                None => n = 0,
            }
        }
        false
    }
    let mut indirect = false;
    let b = fmt.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                // Flags, width, precision and length, up to the conversion letter.
                let mut j = i + 1;
                while j < b.len() && b"-+ #0123456789.*hlL".contains(&b[j]) {
                    j += 1;
                }
                let spec = &fmt[i + 1..j];
                indirect |= spec.contains('*');
                if too_big(spec, max) {
                    return Err(limit_exceeded("a format width", max));
                }
                i = j.max(i + 1);
            }
            b'{' => {
                let close = fmt[i..].find('}').map_or(b.len(), |k| i + k);
                let field = &fmt[i + 1..close];
                if let Some((_, spec)) = field.split_once(':') {
                    indirect |= spec.contains('{');
                    if too_big(spec, max) {
                        return Err(limit_exceeded("a format width", max));
                    }
                }
                i = close + 1;
            }
            _ => i += 1,
        }
    }
    if indirect
        && args
            .iter()
            .filter_map(|a| i128::try_from(a.clone()).ok())
            .any(|n| n.unsigned_abs() > max as u128)
    {
        return Err(limit_exceeded("a format width", max));
    }
    Ok(())
}

/// Registers the filters and methods that take a size, checked against `max` first.
fn add_guarded_builtins(env: &mut Environment<'static>, max: usize) {
    use minijinja::State;
    use minijinja::value::{Rest, StringInput};
    env.add_filter(
        "indent",
        move |value: StringInput<'_>,
              width: Option<usize>,
              first: Option<bool>,
              blank: Option<bool>,
              kwargs: Kwargs| {
            let w = match width {
                Some(w) => w,
                None => kwargs.peek::<Option<usize>>("width")?.unwrap_or(4),
            };
            if indent_len(value.as_str(), w) > max {
                return Err(limit_exceeded("indent", max));
            }
            minijinja::filters::indent(value, width, first, blank, kwargs)
        },
    );
    env.add_filter(
        "replace",
        move |state: &mut State,
              value: StringInput<'_>,
              from: StringInput<'_>,
              to: StringInput<'_>| {
            if replace_len(value.as_str(), from.as_str(), to.as_str()) > max {
                return Err(limit_exceeded("replace", max));
            }
            minijinja::filters::replace(state, value, from, to)
        },
    );
    let format = JValue::from_function(minijinja::filters::format);
    env.add_filter(
        "format",
        move |state: &mut State, fmt: JValue, args: Rest<JValue>| {
            check_format(&fmt.to_string(), &args, max)?;
            let mut all = vec![fmt];
            all.extend(args.0);
            format.call(state, &all)
        },
    );
    env.set_unknown_method_callback(move |state, value, method, args| {
        if let Some(s) = value.as_str() {
            match method {
                "format" => check_format(s, args, max)?,
                "replace" => {
                    if let (Some(from), Some(to)) = (
                        args.first().and_then(JValue::as_str),
                        args.get(1).and_then(JValue::as_str),
                    ) && replace_len(s, from, to) > max
                    {
                        return Err(limit_exceeded("replace", max));
                    }
                }
                _ => {}
            }
        }
        minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
    });
}

/// A writer that keeps at most `max` bytes and fails past them.
struct LimitedWriter {
    out: Vec<u8>,
    max: usize,
}

impl std::io::Write for LimitedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.len() > self.max - self.out.len() {
            return Err(std::io::Error::other("output limit"));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `strftime_now(format)`: the current UTC time, formatted with the common strftime codes
/// (`%Y %m %d %b %B %H %M %S %y %j %A %a %%`).
fn strftime_now(fmt: String) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    strftime(secs, &fmt)
}

fn strftime(secs: i64, fmt: &str) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
    ];
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy_m = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy_m + 2) / 153;
    let d = doy_m - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let cum = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = cum[(m - 1) as usize] + d + i64::from(leap && m > 2);
    let wd = DAYS[days.rem_euclid(7) as usize];
    let month = MONTHS[(m - 1) as usize];
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&y.to_string()),
            Some('y') => out.push_str(&format!("{:02}", y % 100)),
            Some('m') => out.push_str(&format!("{m:02}")),
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('j') => out.push_str(&format!("{yday:03}")),
            Some('B') => out.push_str(month),
            Some('b') => out.push_str(&month[..3]),
            Some('A') => out.push_str(wd),
            Some('a') => out.push_str(&wd[..3]),
            Some('H') => out.push_str(&format!("{:02}", rem / 3600)),
            Some('M') => out.push_str(&format!("{:02}", rem % 3600 / 60)),
            Some('S') => out.push_str(&format!("{:02}", rem % 60)),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

impl ChatTemplate {
    /// Compiles a template with the default [`TemplateLimits`]. `special` supplies
    /// `bos_token`, `eos_token`, ... to the template.
    pub fn new(name: &str, source: &str, special: SpecialTokens) -> Result<Self> {
        Self::with_limits(name, source, special, TemplateLimits::default())
    }

    /// Compiles a template that renders within `limits`.
    pub fn with_limits(
        name: &str,
        source: &str,
        special: SpecialTokens,
        limits: TemplateLimits,
    ) -> Result<Self> {
        let (rewritten, has_generation) = rewrite_generation(source);
        let env = Self::environment(name, rewritten, limits)?;
        Ok(Self {
            name: name.to_string(),
            source: source.to_string(),
            env,
            special,
            has_generation,
            limits,
        })
    }

    /// The limits this template renders within.
    pub fn limits(&self) -> TemplateLimits {
        self.limits
    }

    fn environment(
        name: &str,
        rewritten: String,
        limits: TemplateLimits,
    ) -> Result<Environment<'static>> {
        let mut env = Environment::new();
        env.set_fuel(Some(limits.fuel));
        let max = limits.max_output_bytes;
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .keep_trailing_newline(false)
                .build()
                .expect("default delimiters are valid"),
        );
        add_guarded_builtins(&mut env, max);
        env.add_filter("tojson", move |value: JValue, kwargs: Kwargs| {
            tojson_filter(value, kwargs, max)
        });
        env.add_filter(GEN_FILTER, |body: String| {
            format!("{GEN_START}{body}{GEN_END}")
        });
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<JValue, minijinja::Error> {
                Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    format!("{RAISE_PREFIX}{msg}"),
                ))
            },
        );
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned("chat".to_string(), rewritten)
            .map_err(|e| template_error(name, &e))?;
        Ok(env)
    }

    /// The template's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The template source as given.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// True when the template marks assistant output with `{% generation %}` blocks.
    pub fn has_generation_blocks(&self) -> bool {
        self.has_generation
    }

    /// Renders typed messages.
    pub fn render(&self, messages: &[Message], opts: &RenderOptions) -> Result<RenderedChat> {
        let json = serde_json::to_value(messages).map_err(|e| TokenizeError::Template {
            name: self.name.clone(),
            message: format!("messages do not serialise: {e}"),
        })?;
        self.render_json(&json, opts)
    }

    /// Renders messages given as JSON (a list of objects with `role` and `content`).
    pub fn render_json(&self, messages: &Value, opts: &RenderOptions) -> Result<RenderedChat> {
        if opts.add_generation_prompt && opts.continue_final_message {
            return Err(TokenizeError::Invalid(
                "add_generation_prompt and continue_final_message cannot both be set".into(),
            ));
        }
        let mut ctx = serde_json::Map::new();
        for (k, v) in self.special.template_vars() {
            ctx.insert(k.to_string(), v);
        }
        for (k, v) in &opts.extra {
            ctx.insert(k.clone(), v.clone());
        }
        ctx.insert("messages".into(), messages.clone());
        ctx.insert("tools".into(), opts.tools.clone().unwrap_or(Value::Null));
        ctx.insert(
            "documents".into(),
            opts.documents.clone().unwrap_or(Value::Null),
        );
        ctx.insert(
            "add_generation_prompt".into(),
            Value::Bool(opts.add_generation_prompt),
        );
        let tpl = self
            .env
            .get_template("chat")
            .map_err(|e| template_error(&self.name, &e))?;
        let max = self.limits.max_output_bytes;
        let mut w = LimitedWriter {
            out: Vec::new(),
            max,
        };
        // minijinja can panic on some inputs (e.g. `messages[::-1]` of an empty list in 3.0.5):
        // a template is untrusted, so such a panic is this template's error, not a crash.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            tpl.render_captured_to(JValue::from(minijinja::value::Serde(&ctx)), &mut w)
                .map(drop)
        }))
        .map_err(|payload| {
            let why = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            TokenizeError::Template {
                name: self.name.clone(),
                message: format!(
                    "the template engine failed on this conversation (an internal error: {why})"
                ),
            }
        })?;
        if let Err(e) = result {
            if e.kind() == ErrorKind::WriteFailure && w.out.len() <= max {
                return Err(TokenizeError::TemplateLimit {
                    name: self.name.clone(),
                    limit: "max_output_bytes".into(),
                    message: format!("the rendered text would exceed {max} bytes"),
                });
            }
            return Err(template_error(&self.name, &e));
        }
        let raw = String::from_utf8(w.out).map_err(|e| TokenizeError::Template {
            name: self.name.clone(),
            message: format!("rendered text is not UTF-8: {e}"),
        })?;
        let mut rendered = extract_spans(&raw);
        if opts.continue_final_message {
            let last = messages
                .as_array()
                .and_then(|a| a.last())
                .and_then(|m| m.get("content"))
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    TokenizeError::Invalid(
                        "continue_final_message needs a final message with string content".into(),
                    )
                })?;
            let cut = match rendered.text.rfind(last) {
                Some(i) if !last.is_empty() => i + last.len(),
                _ => {
                    let t = last.trim();
                    match rendered.text.rfind(t) {
                        Some(i) => i + t.len(),
                        None => {
                            return Err(TokenizeError::Template {
                                name: self.name.clone(),
                                message: "continue_final_message: the final message's content \
                                          does not appear in the rendered text"
                                    .into(),
                            });
                        }
                    }
                }
            };
            rendered.text.truncate(cut);
            for s in &mut rendered.generation_spans {
                s.end = s.end.min(cut);
                s.start = s.start.min(cut);
            }
            rendered.generation_spans.retain(|s| !s.is_empty());
        }
        Ok(rendered)
    }
}

fn extract_spans(raw: &str) -> RenderedChat {
    let mut text = String::with_capacity(raw.len());
    let mut spans = vec![];
    let mut open: Vec<usize> = vec![];
    for c in raw.chars() {
        match c {
            GEN_START => open.push(text.len()),
            GEN_END => {
                if let Some(start) = open.pop()
                    && open.is_empty()
                {
                    spans.push(start..text.len());
                }
            }
            c => text.push(c),
        }
    }
    RenderedChat {
        text,
        generation_spans: spans,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn special() -> SpecialTokens {
        SpecialTokens {
            bos: Some("<s>".into()),
            eos: Some("</s>".into()),
            ..Default::default()
        }
    }

    #[test]
    fn python_json_matches_json_dumps() {
        // Expected strings are what CPython 3.11's json.dumps(..., ensure_ascii=False) prints.
        let v = json!({"name": "søk", "args": {"q": "ærø\n", "n": 3, "x": 1.5, "l": [], "o": {}}});
        assert_eq!(
            python_json(&v, None, false),
            r#"{"name": "søk", "args": {"q": "ærø\n", "n": 3, "x": 1.5, "l": [], "o": {}}}"#
        );
        assert_eq!(
            python_json(&json!({"b": [1, 2], "a": null}), Some(2), true),
            "{\n  \"a\": null,\n  \"b\": [\n    1,\n    2\n  ]\n}"
        );
        assert_eq!(python_json(&json!(1e-7), None, false), "1e-07");
        assert_eq!(python_json(&json!(2.0), None, false), "2.0");
    }

    #[test]
    fn strftime_formats_known_instants() {
        // 2024-02-29 13:05:09 UTC = 1709211909 (a leap day, a Thursday).
        assert_eq!(
            strftime(1_709_211_909, "%d %b %Y %H:%M:%S %A %j %%"),
            "29 Feb 2024 13:05:09 Thursday 060 %"
        );
        assert_eq!(strftime(0, "%Y-%m-%d %a"), "1970-01-01 Thu");
    }

    #[test]
    fn generation_blocks_give_spans_and_keep_whitespace_control() {
        let src = "{% for m in messages %}{% if m.role == 'assistant' %}A: {%- generation -%}  {{ m.content }}{{ eos_token }}  {%- endgeneration %}\n{% else %}U: {{ m.content }}\n{% endif %}{% endfor %}";
        let t = ChatTemplate::new("t", src, special()).unwrap();
        assert!(t.has_generation_blocks());
        let msgs = json!([{"role":"user","content":"Hei"},{"role":"assistant","content":"Hallo"}]);
        let r = t.render_json(&msgs, &RenderOptions::default()).unwrap();
        assert_eq!(r.text, "U: Hei\nA:Hallo</s>");
        assert_eq!(r.generation_spans, vec![9..18]);
        assert_eq!(&r.text[r.generation_spans[0].clone()], "Hallo</s>");
    }

    #[test]
    fn raise_exception_is_a_typed_error() {
        let t = ChatTemplate::new(
            "strict",
            "{% if messages[0].role != 'user' %}{{ raise_exception('must start with user') }}{% endif %}",
            special(),
        )
        .unwrap();
        let err = t
            .render_json(
                &json!([{"role":"assistant","content":"x"}]),
                &RenderOptions::default(),
            )
            .unwrap_err();
        match err {
            TokenizeError::TemplateRaised { name, message } => {
                assert_eq!(
                    (name.as_str(), message.as_str()),
                    ("strict", "must start with user")
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn syntax_and_render_errors_name_the_template_and_line() {
        let err = ChatTemplate::new(
            "broken",
            "{% for m in messages %}\n{{ m.content }",
            special(),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, TokenizeError::Template { .. }), "{msg}");
        assert!(msg.contains("broken") && msg.contains("line 2"), "{msg}");
        let t = ChatTemplate::new("div", "{{ 1 // 0 }}", special()).unwrap();
        let err = t
            .render_json(&json!([]), &RenderOptions::default())
            .unwrap_err();
        assert!(matches!(err, TokenizeError::Template { .. }), "{err}");
    }

    #[test]
    fn python_methods_namespaces_and_slices_work() {
        let src = "{%- set ns = namespace(n=0) %}{%- for m in messages[::-1] %}{%- if m.content.startswith('x') %}{% set ns.n = ns.n + 1 %}{% endif %}{%- endfor %}{{ ns.n }}|{{ messages[0].content.split('-')[-1].strip() }}|{{ 'Ab'.lower() }}{% for k, v in {'a': 1}.items() %}{{ k }}={{ v }}{% endfor %}";
        let t = ChatTemplate::new("py", src, special()).unwrap();
        let msgs = json!([{"role":"user","content":"x-  y "},{"role":"user","content":"xz"},{"role":"user","content":"q"}]);
        let r = t.render_json(&msgs, &RenderOptions::default()).unwrap();
        assert_eq!(r.text, "2|y|aba=1");
    }

    fn limit_of(src: &str, limits: TemplateLimits) -> (String, String) {
        let t = ChatTemplate::with_limits("hostile", src, special(), limits).unwrap();
        let start = std::time::Instant::now();
        let err = t
            .render_json(
                &json!([{"role":"user","content":"Hei\npå\ndeg"}]),
                &RenderOptions::default(),
            )
            .unwrap_err();
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "{src}: took {:?}",
            start.elapsed()
        );
        let msg = err.to_string();
        match err {
            TokenizeError::TemplateLimit { name, limit, .. } => {
                assert_eq!(name, "hostile", "{msg}");
                (limit, msg)
            }
            other => panic!("{src}: expected a limit error, got {other:?}"),
        }
    }

    #[test]
    fn endless_loops_run_out_of_fuel_with_a_typed_error() {
        for src in [
            "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
            "{% for a in range(100000) %}{% for b in range(100000) %}{% for c in range(100000) %}x{% endfor %}{% endfor %}{% endfor %}",
        ] {
            let limits = TemplateLimits {
                fuel: 1_000_000,
                max_output_bytes: 1 << 30,
            };
            let (limit, msg) = limit_of(src, limits);
            assert_eq!(limit, "fuel", "{msg}");
            assert!(msg.contains("hostile") && msg.contains("fuel"), "{msg}");
        }
        // The default fuel stops the same loop too.
        let (limit, _) = limit_of(
            "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
            TemplateLimits::default(),
        );
        assert_eq!(limit, "fuel");
    }

    #[test]
    fn output_growth_stops_at_the_output_limit_before_allocating() {
        let small = TemplateLimits {
            fuel: TemplateLimits::DEFAULT_FUEL,
            max_output_bytes: 1 << 20,
        };
        for src in [
            // Plain output growth.
            "{% for a in range(100000) %}{{ 'x' * 1000 }}{% endfor %}",
            // One step asked to build a huge string.
            "{{ messages[0].content|indent(1000000000000) }}",
            "{{ messages[0].content|indent(width=1000000000000) }}",
            "{{ messages[0].content|replace('', 'x' * 10000000) }}",
            "{{ messages[0].content.replace('e', 'x' * 10000000) }}",
            "{{ '%1000000000000d'|format(1) }}",
            "{{ '%*d'|format(1000000000000, 1) }}",
            "{{ '{:>1000000000000}'.format(1) }}",
            "{{ '{:{}}'.format(1, 1000000000000) }}",
            "{{ messages|tojson(indent=1000000000000) }}",
        ] {
            let (limit, msg) = limit_of(src, small);
            assert_eq!(limit, "max_output_bytes", "{src}: {msg}");
        }
    }

    #[test]
    fn ordinary_uses_of_the_guarded_filters_render_as_before() {
        let t = ChatTemplate::new(
            "ok",
            "{{ 'a\nb'|indent(2) }}|{{ 'a\nb'|indent(width=1, first=true) }}|{{ 'aXa'|replace('a', 'b') }}|{{ 'aXa'.replace('a', 'bb') }}|{{ '%5d'|format(42) }}|{{ '{:>4}'.format('x') }}|{{ [1]|tojson(indent=2) }}|{{ 'ab'.upper() }}",
            special(),
        )
        .unwrap();
        let r = t
            .render_json(&json!([]), &RenderOptions::default())
            .unwrap();
        assert_eq!(r.text, "a\n  b| a\n b|bXb|bbXbb|   42|   x|[\n  1\n]|AB");
        // Long numbers in the text of a format string are content, not widths.
        let t = ChatTemplate::new(
            "digits",
            "{{ 'Tlf. 2233445566778899 %d'|format(7) }}|{{ '{} 99999999999'.format(1) }}",
            special(),
        )
        .unwrap();
        let r = t
            .render_json(&json!([]), &RenderOptions::default())
            .unwrap();
        assert_eq!(r.text, "Tlf. 2233445566778899 7|1 99999999999");
    }

    /// Found by `fuzz_chat_templates`: minijinja 3.0.5 panics (index out of bounds) slicing an
    /// empty list with a negative step, as templates do with `messages[::-1]`.
    #[test]
    fn regression_fuzz_reverse_slice_of_no_messages_is_an_error_not_a_panic() {
        let t = ChatTemplate::new(
            "rev",
            "{% for m in messages[::-1] %}{{ m.content }}{% endfor %}",
            special(),
        )
        .unwrap();
        match t.render_json(&json!([]), &RenderOptions::default()) {
            Ok(r) => assert_eq!(r.text, ""),
            Err(e) => assert!(matches!(e, TokenizeError::Template { .. }), "{e:?}"),
        }
        let r = t
            .render_json(
                &json!([{"role":"user","content":"a"},{"role":"user","content":"b"}]),
                &RenderOptions::default(),
            )
            .unwrap();
        assert_eq!(r.text, "ba");
    }

    #[test]
    fn deep_recursion_is_an_error_not_a_stack_overflow() {
        let t = ChatTemplate::new(
            "rec",
            "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
            special(),
        )
        .unwrap();
        let err = t
            .render_json(&json!([]), &RenderOptions::default())
            .unwrap_err();
        assert!(err.to_string().contains("rec"), "{err}");
    }

    #[test]
    fn continue_final_message_cuts_after_the_content() {
        let t = ChatTemplate::new("chatml", CHATML_TEMPLATE, special()).unwrap();
        let msgs =
            json!([{"role":"user","content":"Hei"},{"role":"assistant","content":"Det var en"}]);
        let opts = RenderOptions {
            continue_final_message: true,
            ..Default::default()
        };
        let r = t.render_json(&msgs, &opts).unwrap();
        assert!(
            r.text.ends_with("<|im_start|>assistant\nDet var en"),
            "{:?}",
            r.text
        );
        assert_eq!(r.generation_spans.len(), 1);
    }
}
