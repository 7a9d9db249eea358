//! The lexical analysis chain (Lucene's `NorwegianAnalyzer` order): split into runs of
//! alphanumeric characters (tantivy's `SimpleTokenizer`), drop tokens of `max_token_bytes` bytes
//! or more, lowercase, remove the Snowball Norwegian stop words, stem with the Snowball
//! Norwegian stemmer, or with Lucene's `NorwegianLightStemmer` (Bokmål, Nynorsk or both
//! variants; [`crate::light_stem`]), or not at all ([`StemmerKind`]). Indexing and querying run
//! the same chain, named by the manifest.

use serde::{Deserialize, Serialize};
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer,
    TokenStream,
};

use crate::error::{RagError, Result};
use crate::light_stem::{LightStemmer, LightVariant};

/// Which stemmer ends the chain (`"stemmer"` in the manifest: `"snowball"`, `"light-nb"`,
/// `"light-nn"`, `"light-both"` or `"none"`; the booleans of earlier manifests read as
/// `true` = snowball, `false` = none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StemmerKind {
    /// Snowball's Norwegian stemmer (Lucene's `NorwegianAnalyzer`; Bokmål oriented).
    Snowball,
    /// Lucene's `NorwegianLightStemmer` with `BOKMAAL` endings.
    LightNb,
    /// Lucene's `NorwegianLightStemmer` with `NYNORSK` endings.
    LightNn,
    /// Lucene's `NorwegianLightStemmer` with `BOKMAAL | NYNORSK` endings.
    LightBoth,
    /// No stemming.
    None,
}

impl StemmerKind {
    /// Every kind with its manifest / CLI name.
    pub const ALL: [(StemmerKind, &'static str); 5] = [
        (StemmerKind::Snowball, "snowball"),
        (StemmerKind::LightNb, "light-nb"),
        (StemmerKind::LightNn, "light-nn"),
        (StemmerKind::LightBoth, "light-both"),
        (StemmerKind::None, "none"),
    ];

    /// The manifest / CLI name.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(k, _)| *k == self)
            .map_or("none", |(_, n)| n)
    }
}

impl std::str::FromStr for StemmerKind {
    type Err = RagError;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .iter()
            .find(|(_, n)| *n == s)
            .map(|(k, _)| *k)
            .ok_or_else(|| RagError::InvalidSetting {
                setting: "analysis.stemmer".into(),
                message: format!(
                    "{s:?} is not a stemmer; expected one of snowball, light-nb, light-nn, \
                     light-both, none"
                ),
            })
    }
}

impl<'de> Deserialize<'de> for StemmerKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Flag(bool),
            Name(String),
        }
        match Repr::deserialize(d)? {
            Repr::Flag(true) => Ok(StemmerKind::Snowball),
            Repr::Flag(false) => Ok(StemmerKind::None),
            Repr::Name(n) => n.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// The name the analyzer is registered under in the index's tokenizer manager.
pub(crate) const ANALYZER_NAME: &str = "tilpass_norwegian";

/// Settings of the analysis chain (stored in the manifest; an index is read with the chain it
/// was built with).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysisConfig {
    /// Language of the stop words and stemmer; `"norwegian"` (Snowball's Norwegian, Bokmål
    /// oriented) is the one supported now.
    pub language: String,
    /// Lowercase tokens (Unicode lowercase).
    pub lowercase: bool,
    /// Remove Snowball's stop words of the language (after lowercasing).
    pub stop_words: bool,
    /// The stemmer ending the chain.
    pub stemmer: StemmerKind,
    /// Tokens of this many UTF-8 bytes or more are dropped (tantivy's `RemoveLongFilter`).
    pub max_token_bytes: usize,
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        Self {
            language: "norwegian".into(),
            lowercase: true,
            stop_words: true,
            stemmer: StemmerKind::Snowball,
            max_token_bytes: 40,
        }
    }
}

impl AnalysisConfig {
    /// Checks the settings before any work.
    pub fn validate(&self) -> Result<()> {
        if self.language != "norwegian" {
            return Err(RagError::InvalidSetting {
                setting: "analysis.language".into(),
                message: format!(
                    "{:?} is not supported; expected \"norwegian\"",
                    self.language
                ),
            });
        }
        if self.max_token_bytes < 2 {
            return Err(RagError::InvalidSetting {
                setting: "analysis.max_token_bytes".into(),
                message: format!("{} is too small; expected at least 2", self.max_token_bytes),
            });
        }
        Ok(())
    }

    /// The tantivy analyzer of these settings.
    pub fn analyzer(&self) -> Result<TextAnalyzer> {
        self.validate()?;
        let mut b = TextAnalyzer::builder(SimpleTokenizer::default())
            .filter_dynamic(RemoveLongFilter::limit(self.max_token_bytes));
        if self.lowercase {
            b = b.filter_dynamic(LowerCaser);
        }
        if self.stop_words {
            let stop = StopWordFilter::new(Language::Norwegian).ok_or_else(|| {
                RagError::InvalidSetting {
                    setting: "analysis.stop_words".into(),
                    message: "this build has no Norwegian stop-word list".into(),
                }
            })?;
            b = b.filter_dynamic(stop);
        }
        b = match self.stemmer {
            StemmerKind::Snowball => b.filter_dynamic(Stemmer::new(Language::Norwegian)),
            StemmerKind::LightNb => b.filter_dynamic(LightStemmer(LightVariant::NB)),
            StemmerKind::LightNn => b.filter_dynamic(LightStemmer(LightVariant::NN)),
            StemmerKind::LightBoth => b.filter_dynamic(LightStemmer(LightVariant::BOTH)),
            StemmerKind::None => b,
        };
        Ok(b.build())
    }
}

/// Runs an analyzer over `text` and returns the terms it indexes, in order.
pub fn analyze(analyzer: &mut TextAnalyzer, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stream = analyzer.token_stream(text);
    while stream.advance() {
        out.push(stream.token().text.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_lowercases_drops_stop_words_and_stems() {
        let mut a = AnalysisConfig::default().analyzer().unwrap();
        let toks = analyze(&mut a, "Og KOMMUNENE i Norge");
        // "og" and "i" are Snowball Norwegian stop words; the rest are lowercased and stemmed.
        assert!(!toks.iter().any(|t| t == "og" || t == "i"), "{toks:?}");
        assert_eq!(toks.len(), 2, "{toks:?}");
        assert!(toks.iter().all(|t| t.chars().all(|c| !c.is_uppercase())));
        // Inflected forms share a stem.
        let a1 = analyze(&mut a, "kommunene");
        let a2 = analyze(&mut a, "kommunen");
        assert_eq!(a1, a2);
    }

    #[test]
    fn stemmer_kinds_parse_serialise_and_change_the_chain() {
        for (k, name) in StemmerKind::ALL {
            assert_eq!(name.parse::<StemmerKind>().unwrap(), k);
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("{name:?}"));
            assert_eq!(serde_json::from_str::<StemmerKind>(&json).unwrap(), k);
        }
        assert!(matches!(
            "porter".parse::<StemmerKind>(),
            Err(RagError::InvalidSetting { .. })
        ));
        // Manifests written before the choice existed.
        assert_eq!(
            serde_json::from_str::<StemmerKind>("true").unwrap(),
            StemmerKind::Snowball
        );
        assert_eq!(
            serde_json::from_str::<StemmerKind>("false").unwrap(),
            StemmerKind::None
        );
        let run = |k: StemmerKind, text: &str| {
            let c = AnalysisConfig {
                stemmer: k,
                ..Default::default()
            };
            analyze(&mut c.analyzer().unwrap(), text)
        };
        assert_eq!(run(StemmerKind::None, "Kommunene"), ["kommunene"]);
        assert_eq!(run(StemmerKind::LightNb, "Hemmeligheten"), ["hemmelig"]);
        assert_eq!(run(StemmerKind::LightNn, "Tryggleiken"), ["trygg"]);
        assert_eq!(
            run(StemmerKind::LightBoth, "hemmeligheten tryggleiken"),
            ["hemmelig", "trygg"]
        );
    }

    #[test]
    fn bad_language_is_a_typed_error() {
        let c = AnalysisConfig {
            language: "klingon".into(),
            ..Default::default()
        };
        assert!(matches!(c.analyzer(), Err(RagError::InvalidSetting { .. })));
    }
}
