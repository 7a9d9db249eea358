#!/usr/bin/env bash
# The scale check of issue 21: every `tilpass data` command of the issue on a synthetic
# 100,000-row chat set (examples/data_synth_lib.rs), translation and self-instruct with the
# quickstart's chat model, each of those two killed with SIGKILL mid-run and resumed.
#
#   scripts/data_100k.sh [--rows N] [--model DIR] [--work DIR] [--batch-size B]
#                        [--max-new-tokens T] [--translate-rows N] [--ref-rows R] [--si-num K] [--si-ref K]
#                        [--si-attempts A] [--only near-dedup,filter,pii,card,translate,self-instruct]
#
#   --rows N          rows of the synthetic set (default 100000; CI or a test can run it small)
#   --model DIR       the quickstart's chat model (default WORK/qs/chat-model, built with
#                     `cargo run --release --example quickstart -- WORK/qs` when absent)
#   --work DIR        where inputs and outputs go (default: a new temporary directory, removed
#                     at the end unless KEEP=1)
#   --batch-size B    translate / self-instruct batch size (default 32)
#   --max-new-tokens T  translate's cap on new tokens per text (default 64; the synthetic texts
#                     are at most ~50 tokens, and a text that never emits EOS stops there)
#   --translate-rows N  translate the first N rows of the set (default: all of them)
#   --ref-rows R      rows of the uninterrupted translation reference (default 1024, rounded
#                     down to a multiple of B); the full run is killed once it has written R/2
#                     rows, so the batch the kill interrupts lies inside the reference
#   --si-num K        self-instruct: accepted tasks wanted (default 1000)
#   --si-ref K        self-instruct: accepted tasks of the uninterrupted reference (default 50);
#                     the full run is killed at K/2 accepted
#   --si-attempts A   self-instruct: attempts at most (default 40 x --si-num)
#
# Binaries: TILPASS=path/to/tilpass and DATA_SYNTH=path/to/data_synth skip the release builds.
# Timings (rows/s) and peak RSS (/usr/bin/time -v "Maximum resident set size") per command go
# to stdout and WORK/results.tsv; the script exits 1 when a verification fails.
set -euo pipefail
cd "$(dirname "$0")/.."
rows=100000 tr_rows="" model="" work="" bs=32 mnt=64 ref_rows=1024 si_num=1000 si_ref=50 si_attempts=""
only="near-dedup,filter,pii,card,translate,self-instruct"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --rows) rows="$2"; shift 2 ;;
        --model) model="$2"; shift 2 ;;
        --work) work="$2"; shift 2 ;;
        --batch-size) bs="$2"; shift 2 ;;
        --max-new-tokens) mnt="$2"; shift 2 ;;
        --translate-rows) tr_rows="$2"; shift 2 ;;
        --ref-rows) ref_rows="$2"; shift 2 ;;
        --si-num) si_num="$2"; shift 2 ;;
        --si-ref) si_ref="$2"; shift 2 ;;
        --si-attempts) si_attempts="$2"; shift 2 ;;
        --only) only="$2"; shift 2 ;;
        -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
        *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
tr_rows="${tr_rows:-$rows}"
(( tr_rows <= rows )) || { echo "--translate-rows must be at most --rows" >&2; exit 2; }
for v in rows tr_rows bs mnt ref_rows si_num si_ref; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || { echo "--${v//_/-} ${!v}: expected a positive whole number" >&2; exit 2; }
done
si_attempts="${si_attempts:-$((40 * si_num))}"
ref_rows=$(( ref_rows / bs * bs ))
(( ref_rows > tr_rows )) && ref_rows=$(( tr_rows / bs * bs ))
(( ref_rows >= bs )) || { echo "--ref-rows must be at least --batch-size and --rows" >&2; exit 2; }
want() { [[ ",$only," == *",$1,"* ]]; }

target="${CARGO_TARGET_DIR:-target}"
bin="${TILPASS:-}"
synth="${DATA_SYNTH:-}"
if [[ -z "$bin" ]]; then
    cargo build -q --release -p tilpass-cli
    bin="$target/release/tilpass"
fi
if [[ -z "$synth" ]]; then
    cargo build -q --release -p tilpass-examples --example data_synth
    synth="$target/release/examples/data_synth"
fi
if [[ -z "$work" ]]; then
    work=$(mktemp -d)
    [[ "${KEEP:-0}" == 1 ]] || trap 'rm -rf "$work"' EXIT
fi
mkdir -p "$work"
if [[ -z "$model" ]]; then
    model="$work/qs/chat-model"
    if [[ ! -f "$model/config.json" ]]; then
        echo "building the quickstart's chat model in $work/qs"
        cargo run -q --release --example quickstart -- "$work/qs" > "$work/quickstart.log"
    fi
fi
[[ -f "$model/config.json" ]] || { echo "no model in $model" >&2; exit 2; }
results="$work/results.tsv"
printf 'command\trows\tseconds\trows_per_s\tpeak_rss_mib\tnote\n' > "$results"
failed=0
fail() { echo "FAILED: $*"; failed=1; }

# `timed NAME ROWS NOTE -- CMD...`: runs CMD under /usr/bin/time -v, records seconds, rows/s
# and peak RSS; CMD's stdout goes to WORK/NAME.json.
timed() {
    local name="$1" n="$2" note="$3"; shift 4
    /usr/bin/time -v -o "$work/$name.time" "$@" > "$work/$name.json"
    local rss secs
    rss=$(awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2 / 1024}' "$work/$name.time")
    secs=$(awk -F': ' '/Elapsed \(wall clock\)/ {n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; print s}' "$work/$name.time")
    local rate
    rate=$(awk -v n="$n" -v s="$secs" 'BEGIN {printf "%.1f", (s > 0 ? n / s : 0)}')
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$n" "$secs" "$rate" "$rss" "$note" | tee -a "$results"
}

# `kill_at FILE LINES PID`: waits until FILE has LINES complete lines, then SIGKILLs PID (a
# child of this shell) and reaps it; sets `at` to the complete lines FILE then holds. An error
# when PID ends by itself first (the run was too short to interrupt).
kill_at() {
    local file="$1" lines="$2" pid="$3" have=0
    while kill -0 "$pid" 2> /dev/null; do
        have=$( { wc -l < "$file"; } 2> /dev/null || echo 0)
        (( have >= lines )) && break
        sleep 0.2
    done
    if ! kill -KILL "$pid" 2> /dev/null; then
        echo "the run ended before it had $lines rows: nothing to interrupt" >&2
        exit 1
    fi
    wait "$pid" 2> /dev/null || true
    at=$(wc -l < "$file")
}

echo "== data: $rows synthetic rows"
data="$work/synth.jsonl"
t0=$(date +%s.%N)
"$synth" --rows "$rows" --out "$data"
echo "   $(stat -c %s "$data") bytes in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}') s"
echo "   load: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"

# Checks that OUT's rows are input rows passed through unchanged (byte for byte), in input
# order, with no id twice; `--all` also requires every input row.
python_check() {
    python3 - "$@" <<'PY'
import json, sys
args = sys.argv[1:]
mode, data, out = args[0], args[1], args[2]
src = {}
order = []
with open(data, encoding="utf-8") as f:
    for line in f:
        row = json.loads(line)
        src[row["id"]] = line
        order.append(row["id"])
pos = {k: i for i, k in enumerate(order)}
seen, last, n = set(), -1, 0
with open(out, encoding="utf-8") as f:
    for k, line in enumerate(f, 1):
        row = json.loads(line)
        i = row["id"]
        assert i in src, f"{out}:{k}: id {i} is no input row"
        assert i not in seen, f"{out}:{k}: id {i} twice"
        assert pos[i] > last, f"{out}:{k}: id {i} out of order"
        seen.add(i); last = pos[i]; n += 1
        if mode in ("same", "all-same"):
            assert line == src[i], f"{out}:{k}: row {i} changed"
        else:
            s = json.loads(src[i])
            for key, v in s.items():
                if key != "messages":
                    assert row[key] == v, f"{out}:{k}: field {key} of {i} changed"
            assert [m["role"] for m in row["messages"]] == [m["role"] for m in s["messages"]], f"{out}:{k}: roles of {i} changed"
if mode.startswith("all"):
    assert n == len(order), f"{out}: {n} rows of {len(order)}"
print(f"   verified: {n} rows, ids unique, input order, " + ("unchanged" if "same" in mode else "ids/meta/roles kept"))
PY
}

if want near-dedup; then
    echo "== near-dedup"
    timed near-dedup "$rows" "" -- "$bin" data near-dedup "$data" --out "$work/near.jsonl" --report "$work/near.report.jsonl"
    python_check same "$data" "$work/near.jsonl" || fail "near-dedup pass-through"
    python3 - "$data" "$work/near.jsonl" <<'PY' || fail "near-dedup recall"
import json, sys
kept = {json.loads(l)["id"] for l in open(sys.argv[2])}
dups = [json.loads(l) for l in open(sys.argv[1])]
planted = [r for r in dups if r["meta"].get("near_duplicate_of")]
removed = sum(r["id"] not in kept for r in planted)
print(f"   {len(dups) - len(kept)} removed; planted near-duplicates removed: {removed} of {len(planted)}")
assert removed >= 0.9 * len(planted)
PY
fi
if want filter; then
    echo "== filter"
    # Chat rows are short: the Gopher 50-word minimum would drop nearly all (docs/data-quality.md);
    # the language rule (nb, nn) drops the English rows.
    timed filter "$rows" "" -- "$bin" data filter "$data" --out "$work/filter.jsonl" --report "$work/filter.report.jsonl" --min-words 3
    python_check same "$data" "$work/filter.jsonl" || fail "filter pass-through"
fi
if want pii; then
    echo "== pii"
    timed pii "$rows" "" -- "$bin" data pii "$data" --out "$work/pii.jsonl" --report "$work/pii.report.jsonl"
    python_check all-kept "$data" "$work/pii.jsonl" || fail "pii pass-through"
    python3 - "$data" "$work/pii.jsonl" <<'PY' || fail "pii recall"
import json, sys
src = [json.loads(l) for l in open(sys.argv[1])]
out = [json.loads(l) for l in open(sys.argv[2])]
planted = [(s, o) for s, o in zip(src, out) if s["meta"]["kind"] == "pii"]
tags = ["[EPOST]", "[TELEFON]", "[FØDSELSNUMMER]", "[KONTONUMMER]", "[URL]"]
full = sum(all(t in o["messages"][-1]["content"] for t in tags) for s, o in planted)
print(f"   rows with all five kinds redacted: {full} of {len(planted)} planted")
assert full == len(planted)
PY
fi
if want card; then
    echo "== card"
    timed card "$rows" "" -- "$bin" data card "$data" --out "$work/card" --license "CC0-1.0"
    [[ -s "$work/card/README.md" ]] || fail "card: no README.md"
fi

if want translate; then
    echo "== translate $tr_rows rows (batch $bs, max new tokens $mnt; reference: first $ref_rows rows)"
    targs=(--model "$model" --batch-size "$bs" --max-new-tokens "$mnt")
    tr_data="$data"
    if (( tr_rows < rows )); then
        tr_data="$work/translate-input.jsonl"
        head -n "$tr_rows" "$data" > "$tr_data"
    fi
    head -n "$ref_rows" "$data" > "$work/prefix.jsonl"
    timed translate-ref "$ref_rows" "uninterrupted reference" -- "$bin" data translate "$work/prefix.jsonl" --out "$work/tr-ref.jsonl" "${targs[@]}"
    full="$work/translated.jsonl"
    "$bin" data translate "$tr_data" --out "$full" "${targs[@]}" > /dev/null 2>&1 &
    pid=$!
    kill_at "$full" $(( ref_rows / 2 )) "$pid"
    (( at < tr_rows )) || fail "translate: the run finished before the kill"
    echo "   killed (SIGKILL) pid $pid with $at complete rows and $(( $(stat -c %s "$full") - $(head -n "$at" "$full" | wc -c) )) bytes of a torn line"
    timed translate-resume "$(( tr_rows - at ))" "resumed after kill at row $at" -- "$bin" data translate "$tr_data" --out "$full" "${targs[@]}"
    python3 -c "import json,sys; print('   outcome:', json.load(open(sys.argv[1])))" "$work/translate-resume.json"
    python_check all-kept "$tr_data" "$full" || fail "translate: rows lost, repeated or out of order"
    if cmp -s <(head -n "$ref_rows" "$full") "$work/tr-ref.jsonl"; then
        echo "   resumed output == uninterrupted reference on the first $ref_rows rows (byte for byte)"
    else
        fail "translate: resumed output differs from the uninterrupted reference"
    fi
    python3 - "$full" <<'PY'
import json, sys, collections
flags = collections.Counter(); ok = 0; n = 0
for l in open(sys.argv[1]):
    q = json.loads(l)["quality"]; n += 1; ok += q["ok"]; flags.update(q["flags"])
print(f"   quality: {ok} of {n} rows unflagged; flags {dict(flags.most_common())}")
PY
fi

if want self-instruct; then
    echo "== self-instruct from the $rows-row seed pool ($si_num tasks wanted, $si_attempts attempts at most)"
    sargs=(--seeds "$data" --model "$model" --batch-size "$bs" --max-attempts "$si_attempts" --seed 1)
    timed si-ref "$si_ref" "uninterrupted reference (accepted tasks/s)" -- "$bin" data self-instruct "${sargs[@]}" --num "$si_ref" --out "$work/si-ref.jsonl"
    out="$work/self-instruct.jsonl"
    "$bin" data self-instruct "${sargs[@]}" --num "$si_num" --out "$out" > /dev/null 2>&1 &
    pid=$!
    kill_at "$out" $(( si_ref / 2 )) "$pid"
    (( at < si_num )) || fail "self-instruct: the run finished before the kill"
    echo "   killed (SIGKILL) pid $pid with $at accepted tasks written"
    timed si-resume "$(( si_num - at ))" "resumed after kill at $at accepted (accepted tasks/s)" -- "$bin" data self-instruct "${sargs[@]}" --num "$si_num" --out "$out"
    python3 -c "import json,sys; print('   outcome:', json.load(open(sys.argv[1])))" "$work/si-resume.json"
    python3 - "$out" "$work/si-ref.jsonl" "$si_num" "$si_attempts" <<'PY' || fail "self-instruct verification"
import json, sys
out, ref, num, max_attempts = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
acc = [json.loads(l) for l in open(out)]
rej = [json.loads(l) for l in open(out + ".rejects.jsonl")]
attempts = sorted([r["self_instruct"]["attempt"] for r in acc] + [r["attempt"] for r in rej])
assert attempts == list(range(len(attempts))), "attempts lost or repeated"
assert len(acc) == num or len(attempts) == max_attempts, f"incomplete: {len(acc)} accepted, {len(attempts)} attempts"
assert all(r["self_instruct"]["rouge_l_max"] < 0.7 for r in acc)
texts = [r["messages"][0]["content"] for r in acc]
print(f"   complete: {len(acc)} accepted, {len(rej)} rejected, attempts 0..{len(attempts) - 1} each once, all rouge_l_max < 0.7")
# The reference stopped at its K-th accepted task: the full run's rows up to that attempt are
# the reference's, byte for byte.
ref_acc = open(ref).read().splitlines(True)
ref_rej = open(ref + ".rejects.jsonl").read().splitlines(True)
last = json.loads(ref_acc[-1])["self_instruct"]["attempt"]
got_acc = [l for l in open(out).read().splitlines(True) if json.loads(l)["self_instruct"]["attempt"] <= last]
got_rej = [l for l in open(out + ".rejects.jsonl").read().splitlines(True) if json.loads(l)["attempt"] <= last]
want_rej = [l for l in ref_rej if json.loads(l)["attempt"] <= last]
assert got_acc == ref_acc and got_rej == want_rej, "differs from the uninterrupted reference"
print(f"   resumed output == uninterrupted reference over attempts 0..{last} ({len(ref_acc)} accepted, {len(want_rej)} rejected; byte for byte)")
from collections import Counter
print("   reject reasons:", dict(Counter(r["reason"] for r in rej).most_common()))
PY
fi
echo "== results ($results)"
column -t -s $'\t' "$results"
exit "$failed"
