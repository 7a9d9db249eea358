//! Writes the deterministic synthetic chat dataset of the `tilpass data` scale runs
//! (scripts/data_100k.sh): `--rows N` TRL conversational rows with ids and metadata,
//! near-duplicates, personal data, English rows, code blocks and placeholders — see
//! `tilpass_examples::data_synth` for what row `i` holds.
//!
//! ```text
//! cargo run --release --example data_synth -- --out FILE [--rows 100000] [--seed 0]
//! ```

use std::path::PathBuf;

use tilpass_examples::data_synth::{BoxError, write_synth};

const USAGE: &str =
    "usage: data_synth --out FILE [--rows N (default 100000)] [--seed S (default 0)]";

fn main() -> Result<(), BoxError> {
    let (mut out, mut rows, mut seed) = (None::<PathBuf>, 100_000usize, 0u64);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .ok_or_else(|| format!("{name} needs a value; {USAGE}"))
        };
        match a.as_str() {
            "--out" => out = Some(value("--out")?.into()),
            "--rows" => {
                let v = value("--rows")?;
                rows = v
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| format!("--rows {v}: expected a positive whole number"))?;
            }
            "--seed" => {
                let v = value("--seed")?;
                seed = v
                    .parse()
                    .map_err(|_| format!("--seed {v}: expected a whole number"))?;
            }
            "-h" | "--help" => {
                eprintln!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other}; {USAGE}").into()),
        }
    }
    let out = out.ok_or_else(|| format!("--out is required; {USAGE}"))?;
    let t = std::time::Instant::now();
    write_synth(&out, rows, seed)?;
    eprintln!(
        "data_synth: {rows} rows (seed {seed}) in {} in {:.1} s",
        out.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
