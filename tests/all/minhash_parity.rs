//! MinHash and MinHashLSH equal datasketch 2.0.0 (tests/fixtures/data/minhash.json, made by
//! tests/fixtures/generate_minhash.py): numpy RandomState draws and permutations, hash values
//! (both schemes, several seeds, num_perm and shingle settings), the optimal (b, r) and the
//! candidate sets of ~200 documents with planted near-duplicates, all exactly equal.

use serde_json::Value;
use tilpass::data::lsh::{LshConfig, MinHashLsh, optimal_params};
use tilpass::data::minhash::{MinHashConfig, MinHashScheme, MinHasher, Shingles, jaccard};
use tilpass::data::near_dedup::{NearDedupConfig, near_dedup_texts};
use tilpass::data::nprandom::Mt19937;
use tilpass_tests::fixture_json;

fn scheme(v: &Value) -> MinHashScheme {
    serde_json::from_value(v.clone()).unwrap()
}

fn u64s(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

fn config(c: &Value) -> MinHashConfig {
    MinHashConfig {
        num_perm: c["num_perm"].as_u64().unwrap() as usize,
        seed: c["seed"].as_u64().unwrap() as u32,
        scheme: scheme(&c["scheme"]),
        shingles: c["shingle"].as_str().unwrap().parse::<Shingles>().unwrap(),
    }
}

#[test]
fn numpy_random_state_and_permutations_match() {
    let fx = fixture_json("data/minhash.json");
    for r in fx["rng"].as_array().unwrap() {
        let seed = r["seed"].as_u64().unwrap() as u32;
        let mut g = Mt19937::new(seed);
        let got: Vec<u64> = (0..6).map(|_| g.randint_u32(0, 1 << 32) as u64).collect();
        assert_eq!(got, u64s(&r["uint32"]), "seed {seed}");
        for (name, s) in [
            ("legacy_a_b", MinHashScheme::Legacy),
            ("affine32_a_b", MinHashScheme::Affine32),
        ] {
            let h = MinHasher::new(&MinHashConfig {
                num_perm: 16,
                seed,
                scheme: s,
                ..Default::default()
            })
            .unwrap();
            let (a, b) = h.permutations();
            assert_eq!(a[..8], u64s(&r[name][0])[..], "{name} a, seed {seed}");
            assert_eq!(b[..8], u64s(&r[name][1])[..], "{name} b, seed {seed}");
        }
    }
}

#[test]
fn hash_values_equal_datasketch() {
    let fx = fixture_json("data/minhash.json");
    let cases = fx["minhash"].as_array().unwrap();
    assert!(cases.len() >= 200);
    for c in cases {
        let h = MinHasher::new(&config(c)).unwrap();
        let text = c["text"].as_str().unwrap();
        let got: Vec<u64> = h.signature(text).into_iter().map(u64::from).collect();
        assert_eq!(got, u64s(&c["hashvalues"]), "{c}");
    }
}

#[test]
fn optimal_band_parameters_equal_datasketch() {
    let fx = fixture_json("data/minhash.json");
    for p in fx["params"].as_array().unwrap() {
        let t = p["threshold"].as_f64().unwrap();
        let n = p["num_perm"].as_u64().unwrap() as usize;
        let w = (
            p["weights"][0].as_f64().unwrap(),
            p["weights"][1].as_f64().unwrap(),
        );
        let want = (
            p["b"].as_u64().unwrap() as usize,
            p["r"].as_u64().unwrap() as usize,
        );
        assert_eq!(optimal_params(t, n, w), want, "{p}");
        let lsh = MinHashLsh::new(&LshConfig {
            threshold: t,
            num_perm: n,
            weights: w,
        });
        assert_eq!(lsh.is_ok(), p["lsh_accepts"].as_bool().unwrap(), "{p}");
    }
}

#[test]
fn lsh_candidate_sets_equal_datasketch() {
    let fx = fixture_json("data/minhash.json");
    let docs: Vec<&str> = fx["lsh_docs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert!(docs.len() >= 200);
    for c in fx["lsh"].as_array().unwrap() {
        let cfg = config(c);
        let h = MinHasher::new(&cfg).unwrap();
        let sigs = h.signatures(&docs);
        let threshold = c["threshold"].as_f64().unwrap();
        let lsh = MinHashLsh::new(&LshConfig {
            threshold,
            num_perm: cfg.num_perm,
            weights: (0.5, 0.5),
        })
        .unwrap();
        assert_eq!(
            (lsh.bands as u64, lsh.rows as u64),
            (c["b"].as_u64().unwrap(), c["r"].as_u64().unwrap())
        );
        let want: Vec<Vec<usize>> = serde_json::from_value(c["candidates"].clone()).unwrap();
        let got = lsh.candidates(&sigs);
        assert!(
            want.iter().any(|w| w.len() > 1),
            "the fixture plants near-duplicates"
        );
        assert_eq!(got, want, "{}", c["shingle"]);
        for (pair, j) in c["jaccard"].as_object().unwrap() {
            let (i, k) = pair.split_once(',').unwrap();
            let (i, k): (usize, usize) = (i.parse().unwrap(), k.parse().unwrap());
            assert_eq!(
                jaccard(sigs.get(i), sigs.get(k)),
                j.as_f64().unwrap(),
                "{pair}"
            );
        }
        // Clusters: every removed document has a candidate path to its kept one, each step at
        // or above the threshold, and the kept one comes first.
        let out = near_dedup_texts(
            &docs,
            &NearDedupConfig {
                threshold,
                num_perm: cfg.num_perm,
                shingles: cfg.shingles,
                seed: cfg.seed,
                scheme: cfg.scheme,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(!out.removed.is_empty());
        for d in &out.removed {
            assert!(d.kept < d.index && out.keep.binary_search(&d.kept).is_ok());
        }
        // A pair of candidates at or above the threshold never survives both.
        for (i, cands) in got.iter().enumerate() {
            for &k in cands.iter().filter(|&&k| k > i) {
                if jaccard(sigs.get(i), sigs.get(k)) >= threshold {
                    assert!(out.keep.binary_search(&k).is_err(), "{i} and {k} both kept");
                }
            }
        }
    }
}
