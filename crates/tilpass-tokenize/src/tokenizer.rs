//! Loading a Hugging Face tokenizer directory: `tokenizer.json` (or GPT-2 `vocab.json` +
//! `merges.txt`, or BERT `vocab.txt`), `tokenizer_config.json`, `special_tokens_map.json` and
//! chat templates (`chat_template` in the config, `chat_template.jinja`, `chat_template.json`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tokenizers::{AddedToken, Encoding};

use crate::chat_template::{ChatTemplate, TemplateLimits};
use crate::error::{Result, TokenizeError, tk_err};
pub use crate::special::SpecialTokens;

/// `tokenizer.json`.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// `tokenizer_config.json`.
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";
/// `special_tokens_map.json`.
pub const SPECIAL_TOKENS_MAP_FILE: &str = "special_tokens_map.json";
/// `chat_template.jinja` (transformers >= 4.50 writes the default template here).
pub const CHAT_TEMPLATE_JINJA_FILE: &str = "chat_template.jinja";

/// A tokenizer with its special tokens and chat templates.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    source: String,
    special: SpecialTokens,
    templates: BTreeMap<String, String>,
    model_max_length: Option<usize>,
    config: serde_json::Map<String, Value>,
    template_limits: TemplateLimits,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("source", &self.source)
            .field("vocab_size", &self.vocab_size())
            .field("special", &self.special)
            .field("templates", &self.templates.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A text file with a leading BOM dropped; invalid UTF-8 names the line.
fn read_text(path: &Path) -> Result<String> {
    tilpass_core::read_text(path).map_err(|e| match e {
        tilpass_core::Error::Io { path, source } => TokenizeError::Io { path, source },
        other => TokenizeError::Core(other),
    })
}

fn read_json_file(path: &Path) -> Result<Option<Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = read_text(path)?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| TokenizeError::Json {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
}

/// A token in `tokenizer_config.json` is a string or `{"content": ..., ...}`.
fn token_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(|c| c.as_str()).map(String::from),
        _ => None,
    }
}

fn collect_templates(
    cfg: &serde_json::Map<String, Value>,
    path: &Path,
    out: &mut BTreeMap<String, String>,
) -> Result<()> {
    match cfg.get("chat_template") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            out.insert("default".into(), s.clone());
        }
        Some(Value::Array(list)) => {
            for item in list {
                let name = item.get("name").and_then(Value::as_str);
                let tpl = item.get("template").and_then(Value::as_str);
                match (name, tpl) {
                    (Some(n), Some(t)) => {
                        out.insert(n.to_string(), t.to_string());
                    }
                    _ => {
                        return Err(TokenizeError::Json {
                            path: path.to_path_buf(),
                            message:
                                "chat_template list entries need `name` and `template` strings"
                                    .into(),
                        });
                    }
                }
            }
        }
        Some(_) => {
            return Err(TokenizeError::Json {
                path: path.to_path_buf(),
                message: "chat_template must be a string or a list of {name, template}".into(),
            });
        }
    }
    Ok(())
}

impl Tokenizer {
    /// Loads a tokenizer directory.
    ///
    /// Uses `tokenizer.json` when present, else GPT-2 style `vocab.json` + `merges.txt`, else
    /// BERT style `vocab.txt`. Padding and truncation stored in `tokenizer.json` are turned off
    /// (as transformers does per call); use [`crate::batch`] for padding.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(TokenizeError::MissingTokenizer {
                dir: dir.to_path_buf(),
                looked_for: "a directory".into(),
            });
        }
        let cfg_path = dir.join(TOKENIZER_CONFIG_FILE);
        let config = match read_json_file(&cfg_path)? {
            Some(Value::Object(o)) => o,
            Some(_) => {
                return Err(TokenizeError::Json {
                    path: cfg_path,
                    message: "expected a JSON object".into(),
                });
            }
            None => Default::default(),
        };
        let inner = load_model(dir, &config)?;
        let mut tok = Self::from_parts(inner, dir.display().to_string(), config.clone());

        // special_tokens_map.json fills what tokenizer_config.json does not say.
        if let Some(Value::Object(map)) = read_json_file(&dir.join(SPECIAL_TOKENS_MAP_FILE))? {
            tok.apply_special_map(&map, false);
        }
        // Chat templates: config, then chat_template.json, then .jinja files (later wins, as in
        // transformers, which prefers the separate files).
        let mut templates = BTreeMap::new();
        collect_templates(&config, &cfg_path, &mut templates)?;
        let json_tpl = dir.join("chat_template.json");
        if let Some(Value::Object(o)) = read_json_file(&json_tpl)? {
            collect_templates(&o, &json_tpl, &mut templates)?;
        }
        let jinja = dir.join(CHAT_TEMPLATE_JINJA_FILE);
        if jinja.is_file() {
            let t = read_text(&jinja)?;
            templates.insert("default".into(), t);
        }
        let extra_dir = dir.join("additional_chat_templates");
        if extra_dir.is_dir() {
            let entries = std::fs::read_dir(&extra_dir).map_err(|e| TokenizeError::Io {
                path: extra_dir.clone(),
                source: e,
            })?;
            for e in entries.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "jinja") {
                    let name = p
                        .file_stem()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .to_string();
                    let t = read_text(&p)?;
                    templates.insert(name, t);
                }
            }
        }
        tok.templates = templates;
        Ok(tok)
    }

    /// Wraps an in-memory `tokenizers` tokenizer with a `tokenizer_config.json`-like map.
    pub fn from_parts(
        mut inner: tokenizers::Tokenizer,
        source: impl Into<String>,
        config: serde_json::Map<String, Value>,
    ) -> Self {
        inner.with_padding(None);
        // Only fails for an invalid stride, which `None` cannot have.
        let _ = inner.with_truncation(None);
        let model_max_length = config
            .get("model_max_length")
            .and_then(Value::as_f64)
            .filter(|v| *v < 1e12)
            .map(|v| v as usize);
        let mut tok = Self {
            inner,
            source: source.into(),
            special: SpecialTokens::default(),
            templates: BTreeMap::new(),
            model_max_length,
            config: config.clone(),
            template_limits: TemplateLimits::default(),
        };
        tok.apply_special_map(&config, true);
        let _ = collect_templates(
            &config,
            Path::new(TOKENIZER_CONFIG_FILE),
            &mut tok.templates,
        );
        tok
    }

    fn apply_special_map(&mut self, map: &serde_json::Map<String, Value>, overwrite: bool) {
        let s = &mut self.special;
        for (key, slot) in [
            ("bos_token", &mut s.bos),
            ("eos_token", &mut s.eos),
            ("pad_token", &mut s.pad),
            ("unk_token", &mut s.unk),
            ("cls_token", &mut s.cls),
            ("sep_token", &mut s.sep),
            ("mask_token", &mut s.mask),
        ] {
            if let Some(v) = map.get(key)
                && (overwrite || slot.is_none())
                && let Some(t) = token_string(v)
            {
                *slot = Some(t);
            }
        }
        if let Some(Value::Array(list)) = map.get("additional_special_tokens")
            && (overwrite || s.additional.is_empty())
        {
            s.additional = list.iter().filter_map(token_string).collect();
        }
    }

    /// Loads a single `tokenizer.json` file (no config: no special-token names, no template).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let inner =
            tokenizers::Tokenizer::from_file(path).map_err(tk_err(path.display().to_string()))?;
        Ok(Self::from_parts(
            inner,
            path.display().to_string(),
            Default::default(),
        ))
    }

    /// Where the tokenizer came from (for messages).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The wrapped `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Mutable access to the wrapped tokenizer.
    pub fn inner_mut(&mut self) -> &mut tokenizers::Tokenizer {
        &mut self.inner
    }

    /// Special tokens.
    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.special
    }

    /// Mutable special tokens (e.g. to set a pad token).
    pub fn special_tokens_mut(&mut self) -> &mut SpecialTokens {
        &mut self.special
    }

    /// `model_max_length` from the config, when it is a real limit.
    pub fn model_max_length(&self) -> Option<usize> {
        self.model_max_length
    }

    /// The raw `tokenizer_config.json`.
    pub fn config(&self) -> &serde_json::Map<String, Value> {
        &self.config
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Id of a token string.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Token string of an id.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    fn special_id(&self, t: &Option<String>) -> Option<u32> {
        t.as_deref().and_then(|t| self.token_to_id(t))
    }

    /// Id of the BOS token.
    pub fn bos_id(&self) -> Option<u32> {
        self.special_id(&self.special.bos)
    }

    /// Id of the EOS token.
    pub fn eos_id(&self) -> Option<u32> {
        self.special_id(&self.special.eos)
    }

    /// Id of the padding token, falling back to EOS (as TRL does when no pad token is set).
    pub fn pad_id(&self) -> Option<u32> {
        self.special_id(&self.special.pad).or_else(|| self.eos_id())
    }

    /// Encodes text. `add_special_tokens` applies the post-processor (BOS, `[CLS] ... [SEP]`).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        Ok(self
            .encode_full(text, add_special_tokens)?
            .get_ids()
            .to_vec())
    }

    /// Encodes text and returns the full encoding (byte offsets, tokens, ...).
    pub fn encode_full(&self, text: &str, add_special_tokens: bool) -> Result<Encoding> {
        self.inner
            .encode(text, add_special_tokens)
            .map_err(tk_err(format!("encoding with {}", self.source)))
    }

    /// Encodes many texts in parallel.
    pub fn encode_batch(&self, texts: &[&str], add_special_tokens: bool) -> Result<Vec<Vec<u32>>> {
        let enc = self
            .inner
            .encode_batch(texts.to_vec(), add_special_tokens)
            .map_err(tk_err(format!("encoding with {}", self.source)))?;
        Ok(enc.into_iter().map(|e| e.get_ids().to_vec()).collect())
    }

    /// Encodes text with its special tokens, truncated to at most `max_len` tokens as
    /// transformers truncates (`tokenizer(text, truncation=True, max_length=max_len)`,
    /// `tokenizers`' `TruncationParams` with `longest_first`, direction right, stride 0): the
    /// content is cut to `max_len` minus the special tokens the post-processor adds, which are
    /// then added, so a long text keeps its closing `[SEP]` / EOS. Errors when `max_len` leaves
    /// no room for the special tokens.
    pub fn encode_truncated(&self, text: &str, max_len: usize) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(tk_err(format!("encoding with {}", self.source)))?;
        Ok(self.truncate_and_finish(enc, max_len)?.get_ids().to_vec())
    }

    /// [`Self::encode_truncated`] of many texts, encoded in parallel.
    pub fn encode_batch_truncated(&self, texts: &[&str], max_len: usize) -> Result<Vec<Vec<u32>>> {
        let enc = self
            .inner
            .encode_batch(texts.to_vec(), false)
            .map_err(tk_err(format!("encoding with {}", self.source)))?;
        enc.into_iter()
            .map(|e| Ok(self.truncate_and_finish(e, max_len)?.get_ids().to_vec()))
            .collect()
    }

    /// Truncates an encoding made without special tokens to leave room for them, then adds
    /// them (the post-processor), as `tokenizers` does with truncation set.
    fn truncate_and_finish(&self, enc: Encoding, max_len: usize) -> Result<Encoding> {
        use tokenizers::utils::truncation::{
            TruncationDirection, TruncationParams, TruncationStrategy, truncate_encodings,
        };
        let added = self
            .inner
            .get_post_processor()
            .map_or(0, |p| tokenizers::PostProcessor::added_tokens(p, false));
        if max_len <= added {
            return Err(TokenizeError::Tokenizer {
                context: format!("truncating with {}", self.source),
                message: format!(
                    "max length {max_len} leaves no room for text: the tokenizer adds {added} \
                     special tokens"
                ),
            });
        }
        let params = TruncationParams {
            max_length: max_len - added,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
            direction: TruncationDirection::Right,
        };
        let (enc, _) = truncate_encodings(enc, None, &params)
            .map_err(tk_err(format!("truncating with {}", self.source)))?;
        self.inner
            .post_process(enc, None, true)
            .map_err(tk_err(format!(
                "adding special tokens with {}",
                self.source
            )))
    }

    /// Decodes ids to text.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(tk_err(format!("decoding with {}", self.source)))
    }

    /// Names of the chat templates this tokenizer carries (`default` first when present).
    pub fn chat_template_names(&self) -> Vec<&str> {
        self.templates.keys().map(String::as_str).collect()
    }

    /// Sets (or replaces) a chat template by name (`default` is used when none is named).
    pub fn set_chat_template(&mut self, name: impl Into<String>, source: impl Into<String>) {
        self.templates.insert(name.into(), source.into());
    }

    /// The limits the chat templates of this tokenizer render within (see
    /// [`TemplateLimits`]; default [`TemplateLimits::default`]).
    pub fn template_limits(&self) -> TemplateLimits {
        self.template_limits
    }

    /// Sets the limits [`Self::chat_template`] compiles templates with.
    pub fn set_template_limits(&mut self, limits: TemplateLimits) {
        self.template_limits = limits;
    }

    /// The chat template `name` (or the default), compiled with [`Self::template_limits`].
    ///
    /// `name` may also be a built-in (`chatml`, `norsk`; see [`crate::chat_template::builtin`]),
    /// used when the tokenizer has no template of that name.
    pub fn chat_template(&self, name: Option<&str>) -> Result<ChatTemplate> {
        let key = name.unwrap_or("default");
        let limits = self.template_limits;
        if let Some(src) = self.templates.get(key) {
            return ChatTemplate::with_limits(key, src, self.special.clone(), limits);
        }
        if let Some(src) = name.and_then(crate::chat_template::builtin) {
            return ChatTemplate::with_limits(key, src, self.special.clone(), limits);
        }
        match name {
            None => Err(TokenizeError::NoChatTemplate {
                context: self.source.clone(),
            }),
            Some(n) => Err(TokenizeError::UnknownTemplate {
                name: n.to_string(),
                available: self
                    .templates
                    .keys()
                    .map(String::as_str)
                    .chain(crate::chat_template::BUILTIN_NAMES)
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// Adds tokens (not special) to the vocabulary; returns how many were new.
    pub fn add_tokens(&mut self, tokens: &[String], single_word: bool) -> usize {
        let added: Vec<AddedToken> = tokens
            .iter()
            .map(|t| AddedToken::from(t.clone(), false).single_word(single_word))
            .collect();
        self.inner.add_tokens(added).unwrap_or(0)
    }

    /// Adds special tokens; returns how many were new.
    pub fn add_special_tokens(&mut self, tokens: &[String]) -> usize {
        let added: Vec<AddedToken> = tokens
            .iter()
            .map(|t| AddedToken::from(t.clone(), true))
            .collect();
        self.inner.add_special_tokens(added).unwrap_or(0)
    }

    /// Writes `tokenizer.json` and `tokenizer_config.json` (special tokens, templates,
    /// `model_max_length`) to `dir`, loadable by transformers' `AutoTokenizer`.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| TokenizeError::Io {
            path: dir.to_path_buf(),
            source: e,
        })?;
        let json = self
            .inner
            .to_string(true)
            .map_err(tk_err(format!("serialising {}", self.source)))?;
        write(dir.join(TOKENIZER_FILE), json.as_bytes())?;
        let mut cfg = self.config.clone();
        for (k, v) in self.special.template_vars() {
            cfg.insert(k.to_string(), v);
        }
        cfg.entry("tokenizer_class")
            .or_insert_with(|| Value::String("PreTrainedTokenizerFast".into()));
        if let Some(m) = self.model_max_length {
            cfg.insert("model_max_length".into(), Value::from(m));
        }
        match self.templates.len() {
            0 => {
                cfg.remove("chat_template");
            }
            1 if self.templates.contains_key("default") => {
                cfg.insert(
                    "chat_template".into(),
                    Value::String(self.templates["default"].clone()),
                );
            }
            _ => {
                let list = self
                    .templates
                    .iter()
                    .map(|(n, t)| serde_json::json!({"name": n, "template": t}))
                    .collect();
                cfg.insert("chat_template".into(), Value::Array(list));
            }
        }
        let text = serde_json::to_string_pretty(&Value::Object(cfg)).expect("JSON value");
        write(dir.join(TOKENIZER_CONFIG_FILE), text.as_bytes())
    }
}

fn write(path: PathBuf, bytes: &[u8]) -> Result<()> {
    tilpass_core::write_atomic(&path, bytes).map_err(|e| TokenizeError::Io {
        path,
        source: std::io::Error::other(e.to_string()),
    })
}

/// BERT's post-processor: `[CLS] A [SEP]` and `[CLS] A [SEP] B [SEP]` (type ids 0/1).
pub(crate) fn cls_sep_processor(
    cls: &str,
    cls_id: u32,
    sep: &str,
    sep_id: u32,
) -> Result<tokenizers::processors::template::TemplateProcessing> {
    tokenizers::processors::template::TemplateProcessing::builder()
        .try_single(format!("{cls}:0 $A:0 {sep}:0"))
        .and_then(|b| b.try_pair(format!("{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1")))
        .map_err(|e| TokenizeError::Invalid(e.to_string()))?
        .special_tokens(vec![(cls.to_string(), cls_id), (sep.to_string(), sep_id)])
        .build()
        .map_err(|e| TokenizeError::Invalid(e.to_string()))
}

fn load_model(
    dir: &Path,
    config: &serde_json::Map<String, Value>,
) -> Result<tokenizers::Tokenizer> {
    use tokenizers::models::bpe::BPE;
    use tokenizers::models::wordpiece::WordPiece;
    let json = dir.join(TOKENIZER_FILE);
    if json.is_file() {
        return tokenizers::Tokenizer::from_file(&json).map_err(tk_err(json.display().to_string()));
    }
    let (vocab_json, merges) = (dir.join("vocab.json"), dir.join("merges.txt"));
    if vocab_json.is_file() && merges.is_file() {
        // GPT-2 byte-level BPE, as transformers' GPT2TokenizerFast converts it.
        let bpe = BPE::from_file(
            &vocab_json.display().to_string(),
            &merges.display().to_string(),
        )
        .build()
        .map_err(tk_err(vocab_json.display().to_string()))?;
        let mut tok = tokenizers::Tokenizer::new(bpe);
        let add_prefix_space = config
            .get("add_prefix_space")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        tok.with_pre_tokenizer(Some(
            tokenizers::pre_tokenizers::byte_level::ByteLevel::default()
                .add_prefix_space(add_prefix_space),
        ));
        tok.with_decoder(Some(tokenizers::decoders::byte_level::ByteLevel::default()));
        tok.with_post_processor(Some(
            tokenizers::pre_tokenizers::byte_level::ByteLevel::default().trim_offsets(false),
        ));
        let eos = config
            .get("eos_token")
            .and_then(token_string)
            .unwrap_or_else(|| "<|endoftext|>".into());
        tok.add_special_tokens([AddedToken::from(eos, true)])
            .map_err(tk_err(vocab_json.display().to_string()))?;
        return Ok(tok);
    }
    let vocab_txt = dir.join("vocab.txt");
    if vocab_txt.is_file() {
        // BERT WordPiece, as transformers' BertTokenizerFast converts it.
        let unk = config
            .get("unk_token")
            .and_then(token_string)
            .unwrap_or_else(|| "[UNK]".into());
        let wp = WordPiece::from_file(&vocab_txt.display().to_string())
            .unk_token(unk)
            .build()
            .map_err(tk_err(vocab_txt.display().to_string()))?;
        let mut tok = tokenizers::Tokenizer::new(wp);
        let lowercase = config
            .get("do_lower_case")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        let strip_accents = config.get("strip_accents").and_then(Value::as_bool);
        tok.with_normalizer(Some(tokenizers::normalizers::bert::BertNormalizer::new(
            true,
            true,
            strip_accents,
            lowercase,
        )))
        .map_err(tk_err(vocab_txt.display().to_string()))?;
        tok.with_pre_tokenizer(Some(tokenizers::pre_tokenizers::bert::BertPreTokenizer));
        tok.with_decoder(Some(tokenizers::decoders::wordpiece::WordPiece::default()));
        let get = |k: &str, d: &str| {
            config
                .get(k)
                .and_then(token_string)
                .unwrap_or_else(|| d.to_string())
        };
        let (cls, sep) = (get("cls_token", "[CLS]"), get("sep_token", "[SEP]"));
        let id = |t: &str| {
            tok.token_to_id(t).ok_or_else(|| TokenizeError::Tokenizer {
                context: vocab_txt.display().to_string(),
                message: format!("special token {t} is not in the vocabulary"),
            })
        };
        let (cls_id, sep_id) = (id(&cls)?, id(&sep)?);
        tok.with_post_processor(Some(cls_sep_processor(&cls, cls_id, &sep, sep_id)?));
        let specials: Vec<AddedToken> = [
            get("pad_token", "[PAD]"),
            get("unk_token", "[UNK]"),
            cls,
            sep,
            get("mask_token", "[MASK]"),
        ]
        .into_iter()
        .filter(|t| tok.token_to_id(t).is_some())
        .map(|t| AddedToken::from(t, true))
        .collect();
        tok.add_special_tokens(specials)
            .map_err(tk_err(vocab_txt.display().to_string()))?;
        return Ok(tok);
    }
    Err(TokenizeError::MissingTokenizer {
        dir: dir.to_path_buf(),
        looked_for: "tokenizer.json, vocab.json + merges.txt, vocab.txt".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A word-level tokenizer written to `dir` with the given config files.
    fn write_dir(dir: &Path, config: Option<&str>, special_map: Option<&str>) {
        use tokenizers::models::wordlevel::WordLevel;
        let vocab = [
            ("<s>", 0),
            ("</s>", 1),
            ("<pad>", 2),
            ("<unk>", 3),
            ("hei", 4),
            ("du", 5),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let model = WordLevel::builder()
            .vocab(vocab)
            .unk_token("<unk>".into())
            .build()
            .unwrap();
        let mut tok = tokenizers::Tokenizer::new(model);
        tok.with_pre_tokenizer(Some(tokenizers::pre_tokenizers::whitespace::Whitespace));
        tok.add_special_tokens([
            AddedToken::from("<s>", true),
            AddedToken::from("</s>", true),
        ])
        .unwrap();
        tok.save(dir.join(TOKENIZER_FILE), false).unwrap();
        if let Some(c) = config {
            std::fs::write(dir.join(TOKENIZER_CONFIG_FILE), c).unwrap();
        }
        if let Some(m) = special_map {
            std::fs::write(dir.join(SPECIAL_TOKENS_MAP_FILE), m).unwrap();
        }
    }

    #[test]
    fn special_tokens_come_from_config_then_special_tokens_map() {
        let dir = tempfile::tempdir().unwrap();
        write_dir(
            dir.path(),
            Some(
                r#"{"bos_token": {"content": "<s>", "lstrip": false}, "eos_token": "</s>", "model_max_length": 512}"#,
            ),
            Some(
                r#"{"bos_token": "IGNORED", "pad_token": "<pad>", "unk_token": {"content": "<unk>"}}"#,
            ),
        );
        let tok = Tokenizer::from_dir(dir.path()).unwrap();
        let s = tok.special_tokens();
        assert_eq!(s.bos.as_deref(), Some("<s>"), "the config wins");
        assert_eq!(s.eos.as_deref(), Some("</s>"));
        assert_eq!(
            s.pad.as_deref(),
            Some("<pad>"),
            "filled from special_tokens_map.json"
        );
        assert_eq!(s.unk.as_deref(), Some("<unk>"));
        assert_eq!(
            (tok.bos_id(), tok.eos_id(), tok.pad_id()),
            (Some(0), Some(1), Some(2))
        );
        assert_eq!(tok.model_max_length(), Some(512));
        assert_eq!(tok.encode("hei du <s>", false).unwrap(), [4, 5, 0]);
    }

    #[test]
    fn named_template_lists_and_jinja_files() {
        let dir = tempfile::tempdir().unwrap();
        write_dir(
            dir.path(),
            Some(
                r#"{"chat_template": [{"name": "default", "template": "A"}, {"name": "tool_use", "template": "B{{ tools | length }}"}]}"#,
            ),
            None,
        );
        let mut tok = Tokenizer::from_dir(dir.path()).unwrap();
        assert_eq!(tok.chat_template_names(), ["default", "tool_use"]);
        let t = tok.chat_template(Some("tool_use")).unwrap();
        let opts = crate::RenderOptions {
            tools: Some(serde_json::json!([1, 2])),
            ..Default::default()
        };
        assert_eq!(
            t.render_json(&serde_json::json!([]), &opts).unwrap().text,
            "B2"
        );
        // chat_template.jinja overrides the config's default, as in transformers.
        std::fs::write(dir.path().join(CHAT_TEMPLATE_JINJA_FILE), "J").unwrap();
        tok = Tokenizer::from_dir(dir.path()).unwrap();
        let t = tok.chat_template(None).unwrap();
        assert_eq!(
            t.render_json(&serde_json::json!([]), &Default::default())
                .unwrap()
                .text,
            "J"
        );
        // Saving and loading keeps both templates.
        let out = tempfile::tempdir().unwrap();
        tok.save(out.path()).unwrap();
        let back = Tokenizer::from_dir(out.path()).unwrap();
        assert_eq!(back.chat_template_names(), ["default", "tool_use"]);
        let bad = tempfile::tempdir().unwrap();
        write_dir(bad.path(), Some(r#"{"chat_template": 5}"#), None);
        let err = Tokenizer::from_dir(bad.path()).unwrap_err();
        assert!(err.to_string().contains("tokenizer_config.json"), "{err}");
    }
}
