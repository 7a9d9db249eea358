#!/usr/bin/env bash
# One command for the side-by-side benchmarks of docs/benchmarks.md: builds `tilpass-compare`
# (release, mimalloc; benches/compare.rs), then runs every benchmark on both sides — the Python
# reference (scripts/compare/<group>.py) and tilpass — alternately, each side a fresh process,
# for several rounds, with the same threads, inputs, warm-up and repetitions, and prints one
# markdown table (median and range of the per-round ratios, each side's median time).
#
#   scripts/compare/run.sh                      # 3 rounds, all benchmarks, threads = cores
#   scripts/compare/run.sh --rounds 5 --threads 2
#   scripts/compare/run.sh --only decoder,lora_sft_step
#   scripts/compare/run.sh --threads 1 --only sft_encode,metrics   # the 1-thread rows
#   scripts/compare/run.sh --quick              # smoke test: 1 round, 1 repetition
#   scripts/compare/run.sh --rounds 2 --only lora_sft_step_8k   # long context: time and memory
#   scripts/compare/run.sh --no-candle          # without the candle column
#
# The decoder and encoder rows get a candle column (candle 0.11.1's own Llama and BERT,
# scripts/compare/candle, built here into target/candle on first use: a few minutes) unless
# --no-candle is given or TILPASS_CANDLE_BIN names a built candle-compare.
#
#   # a GPU: the reference on CUDA, tilpass on its wgpu backend (a binary built with
#   # `cargo build --release -p tilpass-benches --bin tilpass-compare --features wgpu`)
#   TILPASS_COMPARE_BIN=path/to/tilpass-compare scripts/compare/run.sh --only decoder,train \
#       --device cuda --tilpass-device wgpu
#
# Environment: TILPASS_COMPARE_BIN (a built tilpass-compare: no build), TILPASS_REF_PYTHON (default ~/.cache/tilpass-refenv/bin/python, the pinned
# reference env of tests/fixtures/requirements.txt), TILPASS_ARTEFACTS (default artefacts/;
# needs minilm and mistral from scripts/fetch-artefacts.sh), CARGO_TARGET_DIR. Run it on a quiet
# machine: the table records the load average at the start and the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
py="${TILPASS_REF_PYTHON:-$HOME/.cache/tilpass-refenv/bin/python}"
if [[ ! -x "$py" ]]; then
    echo "run.sh: no Python at $py (set TILPASS_REF_PYTHON)" >&2
    exit 2
fi
args=()
candle=1
for arg in "$@"; do
    if [[ "$arg" == --no-candle ]]; then candle=0; else args+=("$arg"); fi
done
candle_bin=""
if [[ -n "${TILPASS_CANDLE_BIN:-}" ]]; then
    candle_bin="$TILPASS_CANDLE_BIN"
elif [[ $candle == 1 && -z "${TILPASS_COMPARE_BIN:-}" ]]; then
    echo "building candle-compare (release; scripts/compare/candle, --no-candle to leave it out) ..." >&2
    cargo build --release --manifest-path scripts/compare/candle/Cargo.toml \
        --target-dir "${CARGO_TARGET_DIR:-target}/candle" >&2
    candle_bin="${CARGO_TARGET_DIR:-target}/candle/release/candle-compare"
fi
set -- "${args[@]+"${args[@]}"}" --candle-bin "$candle_bin"
if [[ -n "${TILPASS_COMPARE_BIN:-}" ]]; then
    # A binary built elsewhere (e.g. with `--features wgpu` for a GPU machine without Rust).
    exec "$py" scripts/compare/run.py --rust-bin "$TILPASS_COMPARE_BIN" --python "$py" "$@"
fi
echo "building tilpass-compare (release) ..." >&2
bin=$(cargo build --release -p tilpass-benches --bin tilpass-compare \
    --message-format=json-render-diagnostics |
    "$py" -c 'import json, sys
exe = [m["executable"] for m in map(json.loads, sys.stdin)
       if m.get("reason") == "compiler-artifact" and m.get("executable")]
print(exe[-1])')
exec "$py" scripts/compare/run.py --rust-bin "$bin" --python "$py" "$@"
