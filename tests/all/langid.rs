//! Language identification: Bokmål vs Nynorsk on UD Norwegian sentences held out from the
//! training text (../shared/data/ud-norwegian, read at test time; CC BY-SA, not vendored).

use tilpass::metrics::{LangId, LangIdConfig};

fn sentences(file: &str) -> Option<Vec<String>> {
    let path = tilpass_tests::shared_data(&format!("ud-norwegian/{file}"))?;
    Some(
        std::fs::read_to_string(path)
            .ok()?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(String::from)
            .collect(),
    )
}

#[test]
fn bokmal_and_nynorsk_are_told_apart_on_held_out_sentences() {
    let (Some(nob), Some(nno)) = (sentences("nob-dev.txt"), sentences("nno-dev.txt")) else {
        return;
    };
    // Every fifth sentence is held out; the model trains on the rest.
    let split = |v: &[String]| -> (Vec<String>, Vec<String>) {
        let (mut train, mut test) = (Vec::new(), Vec::new());
        for (i, s) in v.iter().enumerate() {
            if i % 5 == 4 {
                test.push(s.clone())
            } else {
                train.push(s.clone())
            }
        }
        (train, test)
    };
    let (nob_train, nob_test) = split(&nob);
    let (nno_train, nno_test) = split(&nno);
    let mut samples: Vec<(&str, &str)> = nob_train.iter().map(|s| ("nb", s.as_str())).collect();
    samples.extend(nno_train.iter().map(|s| ("nn", s.as_str())));
    let model = LangId::train(&samples, LangIdConfig::default()).unwrap();
    let accuracy = |m: &LangId| {
        let mut right = 0;
        for (lang, set) in [("nb", &nob_test), ("nn", &nno_test)] {
            right += set.iter().filter(|s| m.predict(s).lang == lang).count();
        }
        right as f64 / (nob_test.len() + nno_test.len()) as f64
    };
    let trained = accuracy(&model);
    eprintln!(
        "Bokmål vs Nynorsk on {} held-out UD sentences: {:.2}% (trained on the other {})",
        nob_test.len() + nno_test.len(),
        100.0 * trained,
        samples.len()
    );
    assert!(trained >= 0.95, "held-out accuracy {trained}");
    // The built-in model (trained only on tilpass's small CC0 texts), restricted to nb/nn.
    let builtin = LangId::builtin();
    let mut right = 0;
    for (lang, set) in [("nb", &nob_test), ("nn", &nno_test)] {
        for s in set.iter() {
            let p = builtin.predict(s);
            let best = p
                .probabilities
                .iter()
                .find(|(l, _)| l == "nb" || l == "nn")
                .map(|(l, _)| l.as_str());
            right += usize::from(best == Some(lang));
        }
    }
    let b = right as f64 / (nob_test.len() + nno_test.len()) as f64;
    eprintln!(
        "built-in model, nb vs nn on the same sentences: {:.2}%",
        100.0 * b
    );
    assert!(b > 0.8, "built-in nb/nn accuracy {b}");
}

#[test]
fn the_builtin_model_knows_five_languages() {
    let m = LangId::builtin();
    assert_eq!(m.languages(), ["da", "en", "nb", "nn", "sv"]);
    for (text, lang) in [
        ("Eg veit ikkje kva eg skal gjere i morgon.", "nn"),
        ("Jeg vet ikke hva jeg skal gjøre i morgen.", "nb"),
        ("Jag vet inte vad jag ska göra i morgon.", "sv"),
        ("Jeg ved ikke, hvad jeg skal lave i morgen.", "da"),
        ("I do not know what I will do tomorrow.", "en"),
    ] {
        assert_eq!(m.predict(text).lang, lang, "{text}");
    }
}
