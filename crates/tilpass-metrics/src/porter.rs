//! NLTK's Porter stemmer (`nltk.stem.porter.PorterStemmer`, default `NLTK_EXTENSIONS` mode, as
//! of nltk 3.10), which rouge-score applies to ASCII tokens longer than three characters.
//! Ported rule for rule; checked against nltk on a word list by the fixture script.

fn is_vowel(c: u8) -> bool {
    matches!(c, b'a' | b'e' | b'i' | b'o' | b'u')
}

/// `_is_consonant`.
fn is_consonant(w: &[u8], mut i: usize) -> bool {
    if is_vowel(w[i]) {
        return false;
    }
    if w[i] == b'y' {
        let mut negate = false;
        while i > 0 && w[i] == b'y' {
            negate = !negate;
            i -= 1;
        }
        return is_vowel(w[i]) == negate;
    }
    true
}

/// `_consonant_flags`.
fn consonant_flags(w: &[u8]) -> Vec<bool> {
    let mut flags: Vec<bool> = Vec::with_capacity(w.len());
    for (i, &c) in w.iter().enumerate() {
        let f = if is_vowel(c) {
            false
        } else if c == b'y' {
            i == 0 || !flags[i - 1]
        } else {
            true
        };
        flags.push(f);
    }
    flags
}

/// `_measure`: the number of vowel→consonant transitions.
fn measure(w: &[u8]) -> usize {
    let f = consonant_flags(w);
    f.windows(2).filter(|p| !p[0] && p[1]).count()
}

fn contains_vowel(w: &[u8]) -> bool {
    !consonant_flags(w).iter().all(|c| *c)
}

fn ends_double_consonant(w: &[u8]) -> bool {
    w.len() >= 2 && w[w.len() - 1] == w[w.len() - 2] && is_consonant(w, w.len() - 1)
}

fn ends_cvc(w: &[u8]) -> bool {
    let n = w.len();
    (n >= 3
        && is_consonant(w, n - 3)
        && !is_consonant(w, n - 2)
        && is_consonant(w, n - 1)
        && !matches!(w[n - 1], b'w' | b'x' | b'y'))
        || (n == 2 && !is_consonant(w, 0) && is_consonant(w, 1))
}

type Cond<'a> = &'a dyn Fn(&[u8]) -> bool;

/// One rule: suffix (`*d`: a double consonant), replacement, condition on the stem.
struct Rule<'a>(&'a str, &'a str, Option<Cond<'a>>);

/// `_apply_rule_list`: the first rule whose suffix matches decides.
fn apply(word: &[u8], rules: &[Rule]) -> Vec<u8> {
    for Rule(suffix, rep, cond) in rules {
        if *suffix == "*d" && ends_double_consonant(word) {
            let stem = &word[..word.len() - 2];
            return if cond.is_none_or(|c| c(stem)) {
                [stem, rep.as_bytes()].concat()
            } else {
                word.to_vec()
            };
        }
        if word.ends_with(suffix.as_bytes()) {
            let stem = &word[..word.len() - suffix.len()];
            return if cond.is_none_or(|c| c(stem)) {
                [stem, rep.as_bytes()].concat()
            } else {
                word.to_vec()
            };
        }
    }
    word.to_vec()
}

fn replace(word: &[u8], suffix: &str, rep: &str) -> Vec<u8> {
    [&word[..word.len() - suffix.len()], rep.as_bytes()].concat()
}

fn step1a(w: &[u8]) -> Vec<u8> {
    if w.ends_with(b"ies") && w.len() == 4 {
        return replace(w, "ies", "ie");
    }
    apply(
        w,
        &[
            Rule("sses", "ss", None),
            Rule("ies", "i", None),
            Rule("ss", "ss", None),
            Rule("s", "", None),
        ],
    )
}

fn step1b(w: &[u8]) -> Vec<u8> {
    if w.ends_with(b"ied") {
        return if w.len() == 4 {
            replace(w, "ied", "ie")
        } else {
            replace(w, "ied", "i")
        };
    }
    if w.ends_with(b"eed") {
        let stem = &w[..w.len() - 3];
        return if measure(stem) > 0 {
            [stem, b"ee"].concat()
        } else {
            w.to_vec()
        };
    }
    let mut inter = None;
    for suffix in ["ed", "ing"] {
        if w.ends_with(suffix.as_bytes()) {
            let s = &w[..w.len() - suffix.len()];
            if contains_vowel(s) {
                inter = Some(s.to_vec());
                break;
            }
        }
    }
    let Some(s) = inter else {
        return w.to_vec();
    };
    let last = s.last().copied().unwrap_or(b' ');
    let last_str = [last];
    let last_str = std::str::from_utf8(&last_str).unwrap_or("");
    let not_lsz = move |_: &[u8]| !matches!(last, b'l' | b's' | b'z');
    let cvc = |stem: &[u8]| measure(stem) == 1 && ends_cvc(stem);
    apply(
        &s,
        &[
            Rule("at", "ate", None),
            Rule("bl", "ble", None),
            Rule("iz", "ize", None),
            Rule("*d", last_str, Some(&not_lsz)),
            Rule("", "e", Some(&cvc)),
        ],
    )
}

fn step1c(w: &[u8]) -> Vec<u8> {
    let cond = |stem: &[u8]| stem.len() > 1 && is_consonant(stem, stem.len() - 1);
    apply(w, &[Rule("y", "i", Some(&cond))])
}

fn positive(stem: &[u8]) -> bool {
    measure(stem) > 0
}

fn step2(w: &[u8]) -> Vec<u8> {
    if w.ends_with(b"alli") && positive(&w[..w.len() - 4]) {
        return step2(&replace(w, "alli", "al"));
    }
    let p: Cond = &positive;
    let logi = |_: &[u8]| w.len() >= 3 && positive(&w[..w.len() - 3]);
    apply(
        w,
        &[
            Rule("ational", "ate", Some(p)),
            Rule("tional", "tion", Some(p)),
            Rule("enci", "ence", Some(p)),
            Rule("anci", "ance", Some(p)),
            Rule("izer", "ize", Some(p)),
            Rule("bli", "ble", Some(p)),
            Rule("alli", "al", Some(p)),
            Rule("entli", "ent", Some(p)),
            Rule("eli", "e", Some(p)),
            Rule("ousli", "ous", Some(p)),
            Rule("ization", "ize", Some(p)),
            Rule("ation", "ate", Some(p)),
            Rule("ator", "ate", Some(p)),
            Rule("alism", "al", Some(p)),
            Rule("iveness", "ive", Some(p)),
            Rule("fulness", "ful", Some(p)),
            Rule("ousness", "ous", Some(p)),
            Rule("aliti", "al", Some(p)),
            Rule("iviti", "ive", Some(p)),
            Rule("biliti", "ble", Some(p)),
            Rule("fulli", "ful", Some(p)),
            Rule("logi", "log", Some(&logi)),
        ],
    )
}

fn step3(w: &[u8]) -> Vec<u8> {
    let p: Cond = &positive;
    apply(
        w,
        &[
            Rule("icate", "ic", Some(p)),
            Rule("ative", "", Some(p)),
            Rule("alize", "al", Some(p)),
            Rule("iciti", "ic", Some(p)),
            Rule("ical", "ic", Some(p)),
            Rule("ful", "", Some(p)),
            Rule("ness", "", Some(p)),
        ],
    )
}

fn step4(w: &[u8]) -> Vec<u8> {
    let gt1 = |s: &[u8]| measure(s) > 1;
    let g: Cond = &gt1;
    let ion = |s: &[u8]| measure(s) > 1 && matches!(s.last(), Some(b's' | b't'));
    apply(
        w,
        &[
            Rule("al", "", Some(g)),
            Rule("ance", "", Some(g)),
            Rule("ence", "", Some(g)),
            Rule("er", "", Some(g)),
            Rule("ic", "", Some(g)),
            Rule("able", "", Some(g)),
            Rule("ible", "", Some(g)),
            Rule("ant", "", Some(g)),
            Rule("ement", "", Some(g)),
            Rule("ment", "", Some(g)),
            Rule("ent", "", Some(g)),
            Rule("ion", "", Some(&ion)),
            Rule("ou", "", Some(g)),
            Rule("ism", "", Some(g)),
            Rule("ate", "", Some(g)),
            Rule("iti", "", Some(g)),
            Rule("ous", "", Some(g)),
            Rule("ive", "", Some(g)),
            Rule("ize", "", Some(g)),
        ],
    )
}

fn step5a(w: &[u8]) -> Vec<u8> {
    if w.ends_with(b"e") {
        let stem = &w[..w.len() - 1];
        let m = measure(stem);
        if m > 1 || (m == 1 && !ends_cvc(stem)) {
            return stem.to_vec();
        }
    }
    w.to_vec()
}

fn step5b(w: &[u8]) -> Vec<u8> {
    let cond = |_: &[u8]| measure(&w[..w.len() - 1]) > 1;
    apply(w, &[Rule("ll", "l", Some(&cond))])
}

/// The Porter stem of `word` (lower-cased first), as `PorterStemmer().stem(word)`. Words
/// with non-ASCII letters are lower-cased and stemmed on their bytes, which only matters
/// outside rouge-score's ASCII tokens.
pub fn porter_stem(word: &str) -> String {
    let lower = word.to_lowercase();
    match lower.as_str() {
        "sky" | "skies" => return "sky".into(),
        "dying" => return "die".into(),
        "lying" => return "lie".into(),
        "tying" => return "tie".into(),
        "news" => return "news".into(),
        "innings" | "inning" => return "inning".into(),
        "outings" | "outing" => return "outing".into(),
        "cannings" | "canning" => return "canning".into(),
        "howe" => return "howe".into(),
        "proceed" => return "proceed".into(),
        "exceed" => return "exceed".into(),
        "succeed" => return "succeed".into(),
        _ => {}
    }
    if word.chars().count() <= 2 || !lower.is_ascii() {
        return lower;
    }
    let w = lower.as_bytes();
    let w = step1a(w);
    let w = step1b(&w);
    let w = step1c(&w);
    let w = step2(&w);
    let w = step3(&w);
    let w = step4(&w);
    let w = step5a(&w);
    let w = step5b(&w);
    String::from_utf8(w).unwrap_or(lower)
}
