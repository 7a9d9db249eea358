#!/usr/bin/env bash
# The "Done when" check of issue 20's scale item: an interrupted `tilpass predict` over 1M
# synthetic items resumes to the same output as an uninterrupted run. Builds a tiny BERT
# classifier (the tests/fixtures/encoders/bert_cls weights, a word-level tokenizer, an adapter
# trained for 2 steps), writes N short rows (default 1,000,000), then
#   1. runs predict uninterrupted (timed, peak RSS via /usr/bin/time),
#   2. runs it again into another output, kills it with SIGKILL after KILL_AFTER seconds (a
#      hard kill: the partial output and its sidecar stay, possibly with a torn last line),
#   3. runs the same command again: it continues the partial output,
#   4. compares the two outputs byte for byte, and the 4 shard outputs merged with it.
#
#   scripts/predict-resume-1m.sh [N] [KILL_AFTER]      # TILPASS=path/to/tilpass to skip the build
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-1000000}"
kill_after="${2:-20}"
bin="${TILPASS:-}"
if [[ -z "$bin" ]]; then
    cargo build -q -p tilpass-cli
    bin="${CARGO_TARGET_DIR:-target}/debug/tilpass"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$work" "$n" <<'PY'
import json, shutil, sys, pathlib
work, n = pathlib.Path(sys.argv[1]), int(sys.argv[2])
model = work / "model"
shutil.copytree("tests/fixtures/encoders/bert_cls", model)
vocab = {f"t{i}": i for i in range(256)}
(model / "tokenizer.json").write_text(json.dumps({
    "version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
    "normalizer": None, "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": None,
    "decoder": None, "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "t0"}}))
with open(work / "train.jsonl", "w") as f:
    for i in range(12):
        f.write(json.dumps({"text": f"t{10 + i % 2} t{30 + i}", "label": ["nb", "nn"][i % 2]}) + "\n")
with open(work / "rows.jsonl", "w") as f:
    for i in range(n):
        k = 1 + (i * 7) % 12
        f.write(json.dumps({"id": i, "text": " ".join(f"t{(i * 13 + j * 5) % 250 + 3}" for j in range(k))}) + "\n")
PY
ls -l "$work/rows.jsonl" | awk '{print "input:", $5, "bytes"}'
"$bin" train classify --model "$work/model" --data "$work/train.jsonl" --out "$work/cls" \
    --steps 2 --batch-size 6 > /dev/null
args=(predict --model "$work/model" --adapter "$work/cls/adapter" --data "$work/rows.jsonl" --batch-size 64)
echo "1. uninterrupted:"
/usr/bin/time -f "   peak RSS %M KiB, %e s wall" "$bin" "${args[@]}" --out "$work/full.jsonl"
echo "2. killed (SIGKILL) after ${kill_after} s:"
"$bin" "${args[@]}" --out "$work/resumed.jsonl" > /dev/null &
pid=$!
sleep "$kill_after"
kill -KILL "$pid" || true
wait "$pid" 2> /dev/null || true
echo "   partial: $(wc -l < "$work/resumed.jsonl.partial") complete lines, $(stat -c %s "$work/resumed.jsonl.partial") bytes"
echo "3. resumed:"
/usr/bin/time -f "   peak RSS %M KiB, %e s wall" "$bin" "${args[@]}" --out "$work/resumed.jsonl"
cmp "$work/full.jsonl" "$work/resumed.jsonl"
echo "4. resumed == uninterrupted ($(wc -l < "$work/full.jsonl") rows, sha256 $(sha256sum < "$work/full.jsonl" | cut -c1-16))"
if [[ "${SHARDS:-0}" -gt 0 ]]; then
    parts=()
    for ((i = 0; i < SHARDS; i++)); do
        "$bin" "${args[@]}" --shard "$i/$SHARDS" --out "$work/part-$i.jsonl" > /dev/null
        parts+=("$work/part-$i.jsonl")
    done
    "$bin" merge-shards --out "$work/merged.jsonl" "${parts[@]}" > /dev/null
    cmp "$work/full.jsonl" "$work/merged.jsonl"
    echo "5. $SHARDS shards merged == uninterrupted"
fi
