//! Lucene's `NorwegianLightStemmer` (Jacques Savoy's light stemmer as adapted in Lucene's
//! `analysis-common`, Apache-2.0): one pass of suffix rules over a lowercased word, with
//! Bokmål-only, Nynorsk-only and shared endings, as a tantivy token filter. Lengths are counted
//! in characters (Lucene counts UTF-16 units; every Norwegian letter is one unit).

use std::mem;

use tantivy::tokenizer::{Token, TokenFilter, TokenStream, Tokenizer};

/// Which written standard's endings the light stemmer removes (Lucene's `BOKMAAL` / `NYNORSK`
/// flags; both together is `BOKMAAL | NYNORSK`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LightVariant {
    /// Remove Bokmål-specific endings (`-het`, `-ende`, `-este`, `-ere`, `-st`, ...).
    pub bokmaal: bool,
    /// Remove Nynorsk-specific endings (`-heit`, `-leik`, `-ande`, `-aste`, `-ar`, ...).
    pub nynorsk: bool,
}

impl LightVariant {
    /// Bokmål endings only (Lucene's `BOKMAAL`).
    pub const NB: Self = Self {
        bokmaal: true,
        nynorsk: false,
    };
    /// Nynorsk endings only (Lucene's `NYNORSK`).
    pub const NN: Self = Self {
        bokmaal: false,
        nynorsk: true,
    };
    /// Both (Lucene's `BOKMAAL | NYNORSK`).
    pub const BOTH: Self = Self {
        bokmaal: true,
        nynorsk: true,
    };
}

/// Stems one lowercased word with the rules of Lucene's `NorwegianLightStemmer.stem`: the first
/// rule that matches removes its ending and stops (after an optional possessive `-s`).
pub fn light_stem(word: &str, v: LightVariant) -> String {
    let s: Vec<char> = word.chars().collect();
    let n = stem_len(&s, v);
    s[..n].iter().collect()
}

fn ends(s: &[char], len: usize, suffix: &str) -> bool {
    let k = suffix.chars().count();
    k <= len && s[len - k..len].iter().copied().eq(suffix.chars())
}

/// The length of the stem of `s` (a prefix).
fn stem_len(s: &[char], v: LightVariant) -> usize {
    let (nb, nn) = (v.bokmaal, v.nynorsk);
    let mut len = s.len();
    // Possessive -s (bilens -> bilen), then go on.
    if len > 4 && s[len - 1] == 's' {
        len -= 1;
    }
    let e = |suffix: &str| ends(s, len, suffix);
    if len > 7 && ((nb && (e("heter") || e("heten"))) || (nn && e("heita"))) {
        return len - 5;
    }
    if len > 8 && nn && (e("heiter") || e("leiken") || e("leikar")) {
        return len - 6;
    }
    if len > 5 && (e("dom") || (nb && e("het"))) {
        return len - 3;
    }
    if len > 6 && nn && (e("heit") || e("semd") || e("leik")) {
        return len - 4;
    }
    if len > 7 && (e("elser") || e("elsen")) {
        return len - 5;
    }
    if len > 6
        && ((nb && e("ende"))
            || (nn && e("ande"))
            || e("else")
            || (nb && e("este"))
            || (nn && e("aste"))
            || (nb && e("eren"))
            || (nn && e("aren")))
    {
        return len - 4;
    }
    if len > 5
        && ((nb && e("ere"))
            || (nn && e("are"))
            || (nb && e("est"))
            || (nn && e("ast"))
            || e("ene")
            || (nn && e("ane")))
    {
        return len - 3;
    }
    if len > 4 && (e("er") || e("en") || e("et") || (nn && e("ar")) || (nb && e("st")) || e("te")) {
        return len - 2;
    }
    if len > 3 && matches!(s[len - 1], 'a' | 'e' | 'n') {
        return len - 1;
    }
    len
}

/// A tantivy token filter stemming every token with [`light_stem`].
#[derive(Debug, Clone, Copy)]
pub struct LightStemmer(pub LightVariant);

impl TokenFilter for LightStemmer {
    type Tokenizer<T: Tokenizer> = LightStemFilter<T>;

    fn transform<T: Tokenizer>(self, tokenizer: T) -> LightStemFilter<T> {
        LightStemFilter {
            variant: self.0,
            inner: tokenizer,
        }
    }
}

/// The tokenizer a [`LightStemmer`] wraps around another.
#[derive(Debug, Clone)]
pub struct LightStemFilter<T> {
    variant: LightVariant,
    inner: T,
}

impl<T: Tokenizer> Tokenizer for LightStemFilter<T> {
    type TokenStream<'a> = LightStemStream<T::TokenStream<'a>>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> Self::TokenStream<'a> {
        LightStemStream {
            variant: self.variant,
            tail: self.inner.token_stream(text),
        }
    }
}

/// The token stream of a [`LightStemFilter`].
#[derive(Debug)]
pub struct LightStemStream<T> {
    variant: LightVariant,
    tail: T,
}

impl<T: TokenStream> TokenStream for LightStemStream<T> {
    fn advance(&mut self) -> bool {
        if !self.tail.advance() {
            return false;
        }
        let token = self.tail.token_mut();
        let mut stemmed = light_stem(&token.text, self.variant);
        mem::swap(&mut token.text, &mut stemmed);
        true
    }

    fn token(&self) -> &Token {
        self.tail.token()
    }

    fn token_mut(&mut self) -> &mut Token {
        self.tail.token_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `word stem` pairs from Lucene's own test vocabularies for this stemmer
    /// (`lucene/analysis/common/src/test/org/apache/lucene/analysis/no/nb_light.txt`, run with
    /// `BOKMAAL`, and `nn_light.txt`, run with `NYNORSK`; Apache-2.0). Lucene's test feeds them
    /// through a whitespace tokenizer without lowercasing, as here.
    const NB_LIGHT: &str = "bil bil|bilen bil|biler bil|bilene bil|bilens bil|bilenes bil|\
        sekretæren sekretær|sekretær sekretær|sekretærene sekretær|kaker kak|kaken kak|\
        kakene kak|kakenes kak|bibliotekar bibliotekar|bibliotekarer bibliotekar|\
        bibliotekaren bibliotekar|bibliotekarens bibliotekar|bibliotekarene bibliotekar|\
        bibliotekarenes bibliotekar|veske vesk|veska vesk|vesken vesk|veskene vesk|veskas vesk|\
        huset hus|husene hus|husets hus|hus hus|husenes hus|flagg flagg|flagga flagg|\
        flaggene flagg|flaggets flagg|flaggenes flagg|politi politi|politiet politi|\
        politiets politi|politienes politi|god god|godhet god|godheten god|\
        forelskelse forelsk|forelsket forelsk|forelskelsen forelsk|forelske forelsk|\
        kristen krist|kristendom kristen|kristendommen kristendomm|\
        kristendommens kristendomm|fattig fattig|fattigdom fattig|fattigdommen fattigdomm|\
        fattigdommens fattigdomm|hemmelig hemmelig|hemmelighet hemmelig|\
        hemmelighets hemmelig|hemmeligheter hemmelig|hemmeligheten hemmelig|\
        hemmelighetens hemmelig|kjærlig kjærlig|kjærlighet kjærlig|kjærligheter kjærlig|\
        kjærligheten kjærlig|forlegen forleg|forlegenhet forlegen|forlegenheten forlegen|\
        forlegenhetens forlegen|tvetydig tvetydig|tvetydighet tvetydig|\
        tvetydigheter tvetydig|tvetydigheten tvetydig|tvetydighetens tvetydig|\
        virkelig virkelig|virkelighet virkelig|virkeligheten virkelig|\
        virkelighetens virkelig|billig billig|billigere billig|billigst billig|\
        billige billig|frisk frisk|friskere frisk|friskest frisk|syk syk|sykere syk|\
        sykest syk|vaffel vaffel|vafler vafl|vaflene vafl|tittel tittel|titler titl|\
        titlene titl|kam kam|kammer kamm|kammene kamm|kamrene kamr|ku ku|kyr kyr|kuer kuer|\
        kyrne kyrn|kuene kuen|datter datt|døtre døtr|døtrene døtr|abc abc|123 123|Jens Jens|\
        bedre bedr|best best|føle føl|følte føl|følt følt";

    const NN_LIGHT: &str = "gut gut|guten gut|gutar gut|gutane gut|gutens gut|gutanes gut|\
        søknad søknad|søknaden søknad|søknadar søknad|søknadane søknad|søknadens søknad|\
        søknadanes søknad|kjole kjol|kjola kjol|kjoler kjol|kjolene kjol|kjolas kjol|dyr dyr|\
        dyret dyr|dyra dyr|dyras dyr|prospekt prospekt|prospektet prospekt|\
        prospekta prospekt|prospektas prospekt|innhald innhald|innhaldet innhald|\
        innhalda innhald|hemmeleg hemmeleg|hemmelegheit hemmeleg|hemmelegheita hemmeleg|\
        hemmelegheiter hemmeleg|vanskeleg vanskeleg|vanskelegheit vanskeleg|\
        vanskelegheita vanskeleg|vanskelegheiter vanskeleg|hevelse hev|heva hev|\
        hevelsen hev|heve hev|ærleg ærleg|ærlegdom ærleg|ærlegdommen ærlegdomm|\
        ærlegdommens ærlegdomm|alderdom alder|alderdommen alderdomm|\
        alderdommens alderdomm|trygg trygg|tryggleik trygg|tryggleiken trygg|\
        tryggleikens trygg|tryggleikar trygg|kjærleik kjær|kjærleiken kjær|\
        kjærleikens kjær|kjærleikar kjær|verke verk|verksemd verk|hjelpe hjelp|\
        hjelpsemd hjelp|billeg billeg|billegare billeg|billegast billeg|smal smal|\
        smalare smal|smalast smal|farleg farleg|farlegare farleg|farlegast farleg|\
        søner søn|sønene søn|brør brør|brørne brørn|dotter dott|døtrer døtr|døtrene døtr|\
        klo klo|klørne klørn|mor mor|mødrer mødr|mødrene mødr|vedunder vedund|abc abc|\
        123 123|Jens Jens|gammal gammal|eldre eldr|eldst eldst|syngje syngj|syng syng|\
        song song|sunge sung";

    fn check(vocab: &str, v: LightVariant) -> usize {
        let mut n = 0;
        for pair in vocab.split('|') {
            let mut it = pair.split_whitespace();
            let (w, want) = (it.next().unwrap(), it.next().unwrap());
            assert_eq!(light_stem(w, v), want, "{w} ({v:?})");
            n += 1;
        }
        n
    }

    #[test]
    fn lucene_vocabularies() {
        assert_eq!(check(NB_LIGHT, LightVariant::NB), 112);
        assert_eq!(check(NN_LIGHT, LightVariant::NN), 92);
    }

    #[test]
    fn variants_differ_where_the_rules_do() {
        // -het is Bokmål only, -heit Nynorsk only; both strips either.
        assert_eq!(light_stem("godhet", LightVariant::NB), "god");
        assert_eq!(light_stem("godhet", LightVariant::NN), "godh");
        assert_eq!(light_stem("tryggleik", LightVariant::NB), "tryggleik");
        assert_eq!(light_stem("tryggleik", LightVariant::BOTH), "trygg");
        assert_eq!(light_stem("", LightVariant::BOTH), "");
    }
}
