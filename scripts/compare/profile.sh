#!/usr/bin/env bash
# Where the time goes: samples `tilpass-compare GROUP --bench BENCH` with `perf record` during
# the timed repetitions only (setup, warm-up and dropping results are not sampled: the binary
# enables and disables perf through a control fifo), then prints the samples grouped by kind
# of work (scripts/compare/profile_table.py) as a markdown table.
#
#   scripts/compare/profile.sh train lora_sft_step:1:3
#   scripts/compare/profile.sh decoder prefill_512:1:5
#
# Needs `perf` (Debian: linux-perf) and perf_event_paranoid <= 2 (or root). Builds
# `tilpass-compare` in release mode first unless TILPASS_COMPARE_BIN names a binary.
# THREADS (default 2) sets `--threads`; PERF_FREQ (default 999) the sampling frequency.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 GROUP BENCH[:WARMUP:REPS]" >&2; exit 2; }
root="$(cd "$(dirname "$0")/../.." && pwd)"
bin="${TILPASS_COMPARE_BIN:-}"
if [ -z "$bin" ]; then
  cargo build --release -p tilpass-benches --bin tilpass-compare --manifest-path "$root/Cargo.toml" >&2
  bin="${CARGO_TARGET_DIR:-$root/target}/release/tilpass-compare"
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkfifo "$tmp/ctl" "$tmp/ack"
TILPASS_PERF_CTL="$tmp/ctl" TILPASS_PERF_ACK="$tmp/ack" \
  perf record -q -F "${PERF_FREQ:-999}" -D -1 --control "fifo:$tmp/ctl,$tmp/ack" -o "$tmp/perf.data" -- \
  "$bin" "$1" --threads "${THREADS:-2}" --bench "$2" > "$tmp/out.json"
perf report -i "$tmp/perf.data" --no-children --sort symbol --stdio -g none 2>/dev/null > "$tmp/report.txt"
python3 "$root/scripts/compare/profile_table.py" "$tmp/report.txt" "$tmp/out.json"
