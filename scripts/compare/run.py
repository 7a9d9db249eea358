#!/usr/bin/env python3
"""Runs every benchmark of docs/benchmarks.md on both sides, alternately, for several rounds,
and prints one side-by-side markdown table. Called by scripts/compare/run.sh, which builds
`tilpass-compare` first; run that instead of this file.

Each round runs, for every group (sft_encode, decoder, encoder, predict, train, dpo_step, grpo_step, metrics,
minhash, rag), the Python
script `scripts/compare/<group>.py` and `tilpass-compare <group>` as two fresh processes, the
order alternating between groups and rounds. Both get the same thread count (`--threads` and
OMP/MKL/OpenBLAS/Rayon variables) and the same benchmark list with the same warm-up and
repetition counts (PLAN below); each process reports the median of its timed repetitions. The
ratio of a round is reference time / tilpass time (> 1: tilpass is faster); the table gives the
median and range of those ratios over the rounds, and each side's median over the rounds.
Values both sides compute (generated-token counts, scores, token counts, shapes) must agree, or
the run fails.

With `--candle-bin` (run.sh builds scripts/compare/candle unless told `--no-candle`), the decoder
and encoder groups run a third process per round, candle's (CANDLE below), and the table gains a
candle column: the Rust library a user would pick instead of tilpass.

Standard library only.
"""

import argparse
import datetime
import json
import os
import pathlib
import platform
import re
import statistics
import subprocess
import sys
import time

import rag_harness

ROOT = pathlib.Path(__file__).resolve().parents[2]

# group, benchmark, warm-up runs, timed repetitions per process, title, reference library.
PLAN = [
    ("sft_encode", "sft_encode_1000", 1, 5, "SFT encoding of 1,000 conversations",
     "transformers + TRL-style labels"),
    ("decoder", "prefill_512", 1, 5, "prefill 512 tokens", "PyTorch + transformers"),
    ("decoder", "prefill_512_last", 1, 5,
     "prefill 512 tokens, the last position's logits only (generate's prefill)", "PyTorch + transformers"),
    ("decoder", "greedy_decode_256", 1, 3, "greedy decode 256 tokens after 32, KV cache",
     "PyTorch + transformers"),
    ("decoder", "greedy_decode_256_b8", 1, 3,
     "greedy decode 256 tokens, batch 8 (prompts of 18-32 tokens, left-padded), KV cache",
     "PyTorch + transformers"),
    ("decoder", "greedy_decode_256_bf16", 1, 3,
     "greedy decode 256 tokens after 32, bf16 weights (PyTorch: bf16 model), KV cache",
     "PyTorch + transformers"),
    ("decoder", "decode_step_16", 2, 20, "one decode step, hidden 256 / 4 layers, cache of 16",
     "PyTorch + transformers"),
    ("decoder", "decode_step_128", 2, 20, "same, cache of 128", "PyTorch + transformers"),
    ("decoder", "decode_step_512", 2, 20, "same, cache of 512", "PyTorch + transformers"),
    ("encoder", "embed_1000", 1, 3, "all-MiniLM-L6-v2 embeddings of 1,000 sentences, batch 32",
     "sentence-transformers"),
    ("predict", "predict_minilm", 1, 3,
     "predict 500 texts, MiniLM-L6-size random-init BERT classifier, batch 32, max 128 tokens",
     "transformers pipeline(\"text-classification\")"),
    ("predict", "predict_base", 0, 2,
     "predict 100 texts, BERT-base-size random-init classifier, batch 32, max 128 tokens",
     "transformers pipeline(\"text-classification\")"),
    ("train", "lora_sft_step", 1, 5, "LoRA SFT step, 4 × 256 tokens", "PyTorch + PEFT"),
    ("train", "lora_sft_step_2k", 1, 3, "LoRA SFT step, 1 × 2,048 tokens", "PyTorch + PEFT"),
    ("train", "lora_sft_step_8k", 1, 1, "LoRA SFT step, 1 × 8,192 tokens", "PyTorch + PEFT"),
    ("train", "t5_lora_sft_step", 1, 5, "T5 LoRA SFT step, 4 × (256 source + 64 target) tokens",
     "PyTorch + PEFT"),
    ("dpo_step", "dpo_step", 1, 5, "DPO step (LoRA r16), 2 pairs × 256 tokens", "TRL 1.16 DPOTrainer loss + PEFT"),
    ("grpo_step", "grpo_generate", 1, 3,
     "GRPO step, generation: G = 8 × 64 new tokens after 64, sampled, KV cache, rewards (LoRA r16)",
     "TRL 1.16 GRPOTrainer._generate_and_score_completions + PEFT"),
    ("grpo_step", "grpo_train", 1, 3, "GRPO step, training: loss + backward + AdamW on the 8 × 128 tokens",
     "TRL 1.16 GRPOTrainer.compute_loss + PEFT"),
    ("metrics", "corpus_bleu", 1, 5, "corpus BLEU, 10,000 pairs", "sacrebleu"),
    ("metrics", "corpus_chrf", 1, 5, "corpus chrF, 10,000 pairs", "sacrebleu"),
    ("minhash", "minhash_100k", 0, 2, "MinHash (128 perms, word 5-shingles) of 100,000 documents",
     "datasketch 2.0 MinHash.update_batch"),
    ("minhash", "lsh_100k", 0, 2, "MinHashLSH (threshold 0.8) insert + query of 100,000 signatures",
     "datasketch 2.0 MinHashLSH"),
]
# Issue 19's ratio goals for the compute-bound benchmarks: the roofline lines under the table
# say what rate each would need (the goal times the reference's rate) against the FMA ceiling.
GOALS = {"prefill_512": 1.5, "embed_1000": 1.5, "lora_sft_step": 1.5}
# The benchmarks bound by arithmetic (large products), placed under the FMA ceiling; decoding is
# bound by reading the weights (and single small-model steps by latency), not by FLOPs.
COMPUTE_BOUND = ["prefill_512", "prefill_512_last", "embed_1000", "lora_sft_step", "lora_sft_step_2k", "t5_lora_sft_step"]
# Run only when named in --only (not with their group): minutes per process.
OPT_IN = {"lora_sft_step_8k"}
# Benchmarks whose processes' peak resident memory is printed under the table (name them alone
# in --only: the Python side's peak counts everything its process ran before).
MEMORY = {"lora_sft_step_8k"}
# The benchmarks candle also runs (scripts/compare/candle, `candle-compare`): the Rust library a
# user would pick instead (issue 19: keep tilpass ahead of it in every figure). The others have no
# candle counterpart: its Llama computes the LM head for the last position only (no all-logits
# prefill) and has no padding mask (no batch of prompts of different lengths), and candle has no
# LoRA / PEFT, BM25 or metrics of its own.
CANDLE = {"prefill_512_last", "greedy_decode_256", "greedy_decode_256_bf16", "decode_step_16",
          "decode_step_128", "decode_step_512", "embed_1000"}
CANDLE_WHY = {
    "prefill_512": "all logits: candle's Llama computes the last position's only",
    "greedy_decode_256_b8": "candle's Llama has no padding mask",
}
PLAN += rag_harness.plan()  # BM25, indexing and HNSW against bm25s, rank-bm25, hnswlib
GROUPS = list(dict.fromkeys(p[0] for p in PLAN))


def fmt_time(s):
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.1f} ms" if s >= 0.01 else f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.0f} µs"


def fmt_rate(x):
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def sh(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def machine():
    cpu = "?"
    mem = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 2**20:.0f} GiB"
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cores} × {cpu}, {mem}, {platform.system()} {platform.release()}"


def load():
    try:
        return open("/proc/loadavg").read().split()[0]
    except OSError:
        return "?"


def locked_version(crate):
    lock = (ROOT / "Cargo.lock").read_text()
    m = re.search(r'name = "' + re.escape(crate) + r'"\nversion = "([^"]+)"', lock)
    return m.group(1) if m else "?"


def run_side(cmd, env, log, timeout=None):
    start = time.time()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        with open(log, "a") as f:
            f.write(f"$ {' '.join(cmd)}\n{err}\n(killed after {timeout} s)\n")
        sys.exit(f"killed after {timeout} s (--process-timeout): {' '.join(cmd)}\n{err[-3000:]}")
    with open(log, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n{p.stderr}\n")
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-3000:]}")
    try:
        out = json.loads(p.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        sys.exit(f"no JSON from {' '.join(cmd)}:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    out["wall_s"] = time.time() - start
    out["machine"] = machine()
    return out


def roofline(plan, rounds, results, median_time):
    """Lines placing the COMPUTE_BOUND benchmarks under the cores' FMA ceiling that
    tilpass-compare measures: both sides' model GFLOP/s (the same FLOP count for the same work)
    as a share of it, and the rate a ratio goal of GOALS would need."""
    ceilings = [rep["fma_peak_gflops"] for _, s, rep in results
                if s == "tilpass" and rep.get("fma_peak_gflops")]
    isa = {rep.get("isa") for _, s, rep in results if s == "tilpass" and rep.get("isa")}
    matmul = [rep["peak_gflops"] for _, s, rep in results if s == "tilpass" and rep.get("peak_gflops")]
    kernels = [rep["kernel_gflops"] for _, s, rep in results
               if s == "tilpass" and rep.get("kernel_gflops")]
    kernel_name = {rep.get("kernel") for _, s, rep in results if s == "tilpass" and rep.get("kernel")}
    if not ceilings:
        return []
    peak = statistics.median(ceilings)
    kernel = statistics.median(kernels) if kernels else None
    gflops = {e["name"]: e["model_gflop"] for _, s, rep in results if s == "tilpass"
              for e in rep["benchmarks"] if "model_gflop" in e}
    rows = []
    for _, b, _, _, title, _ in plan:
        if b not in COMPUTE_BOUND or b not in gflops:
            continue
        gflop = gflops[b]
        mp = statistics.median(median_time(r, "python", b)[0] for r in range(rounds))
        mr = statistics.median(median_time(r, "tilpass", b)[0] for r in range(rounds))
        ref, ours = gflop / mp, gflop / mr
        goal = GOALS.get(b)
        need = (f"{goal:g}×: {goal * ref:.0f} GFLOP/s ({100 * goal * ref / peak:.0f}%"
                + (f"; {100 * goal * ref / kernel:.0f}% of gemm's kernel" if kernel else "") + ")"
                if goal else "—")
        rows.append(f"| {title} | {gflop:.1f} | {ref:.0f} GFLOP/s ({100 * ref / peak:.0f}%) "
                    f"| {ours:.0f} GFLOP/s ({100 * ours / peak:.0f}%) | {need} |")
    if not rows:
        return []
    return [
        "",
        f"Against the cores' FMA ceiling: {peak:.0f} GFLOP/s "
        f"({', '.join(sorted(isa))}, every thread at once, no memory traffic; the median of "
        f"tilpass-compare's {len(ceilings)} measurements, {min(ceilings):.0f}–{max(ceilings):.0f}; "
        f"its f32 matmul of 1024² reached {statistics.median(matmul):.0f}, "
        f"{min(matmul):.0f}–{max(matmul):.0f}). Rates are model GFLOP over each side's median time, "
        "the same count for both sides; percentages are of the ceiling.",
    ] + ([
        "",
        f"gemm's f32 microkernel alone ({', '.join(sorted(kernel_name))}; the kernel of every "
        "large product of Flex's matmul and of tilpass's host products) ran at "
        f"{kernel:.0f} GFLOP/s ({min(kernels):.0f}–{max(kernels):.0f}; "
        f"{100 * kernel / peak:.0f}% of the ceiling) with its operands already packed and in "
        "cache, every thread at once: no product through gemm can be faster. A row's products "
        "alone take at least their FLOPs over that rate; packing, the passes between products "
        "and waiting between threads come on top.",
    ] if kernel else []) + [
        "",
        "| work | model GFLOP per run | reference | tilpass | issue 19's goal would need |",
        "| --- | --- | --- | --- | --- |",
        *rows,
    ] + ([
        "",
        f"**Some processes ran on a slowed host: Flex's 1024² matmul ranged {min(matmul):.0f}–"
        f"{max(matmul):.0f} GFLOP/s between tilpass's processes (the FMA ceiling "
        f"{min(ceilings):.0f}–{max(ceilings):.0f}). Other work shared the caches or memory; "
        "the ratios of those rounds measure that as much as the libraries.**",
    ] if matmul and min(matmul) < 0.8 * max(matmul) else [])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rust-bin", help="the built tilpass-compare (required unless --from-results)")
    ap.add_argument("--candle-bin", default="",
                    help="the built candle-compare (scripts/compare/candle): adds candle's column to the "
                         "decoder and encoder rows; empty: no candle column")
    ap.add_argument("--python", default=os.environ.get("TILPASS_REF_PYTHON",
                                                     str(pathlib.Path.home() / ".cache/tilpass-refenv/bin/python")))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="default: the cores this process may use")
    ap.add_argument("--only", default="", help="comma-separated groups or benchmarks (default: all)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 1 round, 1 warm-up and 1 repetition (3 for decode steps)")
    ap.add_argument("--out", default=None, help="directory for the raw JSON, logs and table")
    ap.add_argument("--from-results", metavar="RESULTS_JSON",
                    help="print the table of an earlier run's results.json instead of running (a run "
                         "cut short: its complete rounds; give the same --only and device options)")
    ap.add_argument("--process-timeout", type=float, default=None,
                    help="seconds one process may take before the run stops (default: no limit)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                    help="the reference side's torch device (decoder and train groups only; default cpu)")
    ap.add_argument("--tilpass-device", default="flex",
                    help="tilpass-compare's --device (default flex; e.g. wgpu or cuda with a binary built "
                         "with that backend)")
    ap.add_argument("--rag-scale", type=float, default=None,
                    help="rag group: corpus sizes times this, in (0, 1] (default 1: 1M passages)")
    a = ap.parse_args()
    if not a.rust_bin and not a.from_results:
        ap.error("--rust-bin is required (or --from-results)")
    if a.rag_scale is not None:
        os.environ["TILPASS_RAG_SCALE"] = str(a.rag_scale)
        PLAN[:] = [p for p in PLAN if p[0] != "rag"] + rag_harness.plan()

    threads = a.threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    rounds = 1 if a.quick else a.rounds
    if rounds < 1:
        sys.exit("--rounds must be at least 1")
    only = {s for s in a.only.split(",") if s}
    unknown = only - {p[0] for p in PLAN} - {p[1] for p in PLAN}
    if unknown:
        sys.exit(f"--only: unknown {sorted(unknown)}; groups {GROUPS}, benchmarks {[p[1] for p in PLAN]}")
    # The rag group runs only when asked for (--only rag): its preparation builds a 1M-passage index.
    plan = [p for p in PLAN if ((p[0] in only or p[1] in only) if only else p[0] != "rag")
            and (p[1] not in OPT_IN or p[1] in only)]
    if a.device != "cpu" or a.tilpass_device != "flex":
        a.candle_bin = ""  # candle's column is the CPU's
        off = sorted({p[0] for p in plan} - {"decoder", "train"})
        if off:
            sys.exit(f"--device/--tilpass-device: only the decoder and train groups run on a GPU, not {off}")
    if a.quick:
        plan = [(g, b, 1, 3 if b.startswith("decode_step_") else 1, t, r) for g, b, _, _, t, r in plan]
    groups = [g for g in GROUPS if any(p[0] == g for p in plan)]

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    if a.from_results:
        results, rounds, plan = earlier_results(a.from_results, plan, groups)
        threads = next(rep["threads"] for _, s, rep in results if s == "tilpass")
        render(a, plan, groups, rounds, threads, results, None, "not recorded", "not recorded",
               pathlib.Path(a.out) if a.out else None, a.from_results)
        return
    out_dir = pathlib.Path(a.out or ROOT / "target" / "compare" / stamp)
    out_dir.mkdir(parents=True, exist_ok=True)
    log = out_dir / "stderr.log"

    env = dict(os.environ)
    env["HF_HUB_OFFLINE"] = "1"
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS"):
        env[var] = str(threads)

    if "rag" in groups:
        rag_harness.prepare(a.rust_bin, a.python, env, log)
    if "predict" in groups:  # the random-init classifiers both sides load
        subprocess.run([a.python, str(ROOT / "scripts" / "compare" / "predict.py"), "--prepare"],
                       cwd=ROOT, env=env, check=True)
    load_start = load()
    results = []  # (round, side, report)
    t0 = time.time()
    for r in range(rounds):
        for gi, group in enumerate(groups):
            benches = []
            for g, b, w, n, _, _ in plan:
                if g == group:
                    benches += ["--bench", f"{b}:{w}:{n}"]
            py = [a.python, str(ROOT / "scripts" / "compare" / f"{group}.py"), "--threads", str(threads), *benches]
            rs = [a.rust_bin, group, "--threads", str(threads), *benches]
            if a.device != "cpu":
                py += ["--device", a.device]
            if a.tilpass_device != "flex":
                rs += ["--device", a.tilpass_device]
            order = [("python", py), ("tilpass", rs)]
            candle = [b for g, b, w, n, _, _ in plan if g == group and b in CANDLE]
            if a.candle_bin and candle:
                cb = [a.candle_bin, group, "--threads", str(threads)]
                for g, b, w, n, _, _ in plan:
                    if g == group and b in CANDLE:
                        cb += ["--bench", f"{b}:{w}:{n}"]
                # Three sides: each starts first, second and last in turn.
                order.append(("candle", cb))
                k = (r + gi) % 3
                order = order[k:] + order[:k]
            elif (r + gi) % 2 == 1:
                order.reverse()
            for side, cmd in order:
                rep = run_side(cmd, env, log, a.process_timeout)
                results.append((r, side, rep))
                # Written after every process, so a run cut short keeps what it measured.
                (out_dir / "results.json").write_text(json.dumps(
                    [{"round": rr + 1, "side": s, **x} for rr, s, x in results], indent=1))
                print(f"round {r + 1}/{rounds} {group:<10} {side:<7} {rep['wall_s']:6.1f} s  "
                      + ", ".join(f"{b['name']} {fmt_time(b['median_s'])}" for b in rep["benchmarks"]),
                      file=sys.stderr, flush=True)
    elapsed = time.time() - t0
    load_end = load()
    (out_dir / "results.json").write_text(json.dumps(
        [{"round": r + 1, "side": s, **rep} for r, s, rep in results], indent=1))
    render(a, plan, groups, rounds, threads, results, elapsed, load_start, load_end, out_dir, None)


def earlier_results(path, plan, groups):
    """The complete rounds of a results.json written by an earlier run (every group of `groups`
    on both sides), and the plan restricted to the benchmarks it holds."""
    try:
        raw = json.loads(pathlib.Path(path).read_text())
        results = [(x["round"] - 1, x["side"], x) for x in raw]
        for _, _, rep in results:
            rep["group"], rep["benchmarks"]  # noqa: B018 (the fields the table reads)
    except (OSError, ValueError, TypeError, KeyError) as e:
        sys.exit(f"--from-results {path}: not a results.json of run.py ({type(e).__name__}: {e})")
    have = {(r, s, rep["group"]) for r, s, rep in results}
    rounds = 0
    while all((rounds, s, g) in have for g in groups for s in ("python", "tilpass")):
        rounds += 1
    if rounds == 0:
        sys.exit(f"{path}: no complete round of {groups} on both sides")
    results = [x for x in results if x[0] < rounds]
    # The warm-up and repetition counts the processes report, not today's PLAN.
    counts = {b["name"]: (b["warmup"], b["reps"]) for _, _, rep in results for b in rep["benchmarks"]}
    return results, rounds, [(g, b, *counts[b], t, r) for g, b, _, _, t, r in plan if b in counts]


def render(a, plan, groups, rounds, threads, results, elapsed, load_start, load_end, out_dir, source):
    """Checks that both sides did the same work and prints the side-by-side table (also written
    to `out_dir/table.md` when given); exits non-zero when the sides disagreed."""
    # Both sides must have done the same work.
    problems = []
    for r in range(rounds):
        for group in groups:
            reps = {s: rep for rr, s, rep in results if rr == r and rep["group"] == group}
            py, rs = reps["python"]["checks"], reps["tilpass"]["checks"]
            for k in sorted(set(py) & set(rs)):
                if py[k] != rs[k]:
                    problems.append(f"round {r + 1} {group}: {k} python={py[k]} tilpass={rs[k]}")
            if "candle" in reps:
                cd = reps["candle"]["checks"]
                for k in sorted(set(py) & set(cd)):
                    if py[k] != cd[k]:
                        problems.append(f"round {r + 1} {group}: {k} python={py[k]} candle={cd[k]}")
            for side in ("tilpass", "candle"):
                if side in reps and reps[side]["threads"] != threads:
                    problems.append(f"round {r + 1} {group}: {side} ran {reps[side]['threads']} threads")

    def median_time(r, side, bench):
        for rr, s, rep in results:
            if rr == r and s == side:
                for b in rep["benchmarks"]:
                    if b["name"] == bench:
                        return b["median_s"], b["work"], b["unit"], rep
        raise KeyError(bench)

    def candle_times(bench):
        """candle's median time per round for `bench`, or None unless every round has one."""
        try:
            return [median_time(r, "candle", bench)[0] for r in range(rounds)]
        except KeyError:
            return None

    with_candle = any(s == "candle" for _, s, _ in results)

    versions = {}
    py_threads = {}
    attn = set()
    gpus = {rep["gpu"] for _, s, rep in results if s == "python" and rep.get("gpu")}
    candle_versions = {v for _, s, rep in results if s == "candle" for v in rep["versions"].values()}
    for _, s, rep in results:
        if s == "python":
            versions.update(rep["versions"])
            py_threads[rep["group"]] = rep["threads"]
            if "attn_implementation" in rep:
                attn.add(rep["attn_implementation"])

    # A copy of the tree without its git history (a GPU machine) names its commit and
    # compiler through TILPASS_COMMIT and TILPASS_RUSTC.
    commit = os.environ.get("TILPASS_COMMIT")
    if not commit:
        commit = sh(["git", "rev-parse", "--short=12", "HEAD"])
        if sh(["git", "status", "--porcelain", "--untracked-files=no"]) not in ("", "?"):
            commit += " (with uncommitted changes)"
    pyver = next((rep["python"] for _, s, rep in results if s == "python" and rep.get("python")),
                 None) or ("Python version not recorded" if source else sh([a.python, "-V"]))
    rustc = os.environ.get("TILPASS_RUSTC") or sh(["rustc", "-V"])
    backend = {"flex": "Flex"}.get(a.tilpass_device, a.tilpass_device)
    devices = ("" if a.device == "cpu" and a.tilpass_device == "flex" else
               f" --device {a.device} --tilpass-device {a.tilpass_device}")
    hosts = sorted({rep["machine"] for _, _, rep in results if rep.get("machine")}) or [
        "not recorded" if source else machine()]
    only = a.only
    lines = [
        (f"Re-rendered with `--from-results` from {source}: the {rounds} complete round(s) of a run of "
         "`scripts/compare/run.sh" if source else
         f"Measured {datetime.date.today().isoformat()} with `scripts/compare/run.sh "
         + ("--quick" if a.quick else f"--rounds {rounds}"))
        + f" --threads {threads}" + (f" --only {only}" if only else "") + devices + "`"
        + (" that was cut short, as its results.json held them after each process" if source else ""),
        "",
        f"- commit {commit}; machine: {'; '.join(hosts)}" + (f", GPU: {', '.join(sorted(gpus))}" if gpus else "")
        + f"; load average {load_start} at the start, {load_end} at the end",
        f"- {rounds} round(s), both sides alternating, each side a fresh process per round; "
        f"{threads} thread(s) pinned on both sides"
        + (f"; {elapsed / 60:.1f} min" if elapsed is not None else ""),
        f"- tilpass {locked_version('tilpass')} (burn {locked_version('burn')}, {backend}, release, mimalloc), "
        f"{rustc}",
        "- reference: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))
        + (f"; attention: {', '.join(sorted(attn))}" if attn else "")
        + (f"; torch device: {a.device}" if a.device != "cpu" else "")
        + f"; {pyver}",
    ] + ([
        f"- candle {', '.join(sorted(candle_versions))} (scripts/compare/candle: candle-transformers' llama "
        "and bert on the CPU, gemm, the system allocator), the same threads, a third process per round "
        "where it has the benchmark",
    ] if with_candle else []) + [
        "",
        "| work | reference | reference (median) | tilpass (median) | ratio, median | ratio, range | runs per process |"
        + (" candle (median) | tilpass vs candle, median (range) |" if with_candle else ""),
        "| --- | --- | --- | --- | --- | --- | --- |" + (" --- | --- |" if with_candle else ""),
    ]
    for g, b, w, n, title, ref in plan:
        ratios, py_t, rs_t = [], [], []
        for r in range(rounds):
            tp, work, unit, _ = median_time(r, "python", b)
            tr, _, _, _ = median_time(r, "tilpass", b)
            py_t.append(tp)
            rs_t.append(tr)
            ratios.append(tp / tr)
        mp, mr = statistics.median(py_t), statistics.median(rs_t)
        ref_label = ref + (" (1 thread)" if py_threads.get(g) == 1 and threads != 1 else "")
        cells = ""
        if with_candle:
            ct = candle_times(b)
            if ct:
                cr = [c / t for c, t in zip(ct, rs_t)]
                mc = statistics.median(ct)
                cells = (f" {fmt_time(mc)} ({fmt_rate(work / mc)} {unit}/s) | {statistics.median(cr):.2f}× "
                         f"({min(cr):.2f}–{max(cr):.2f}×) |")
            else:
                cells = f" — | {CANDLE_WHY.get(b, 'no candle counterpart')} |"
        lines.append(
            f"| {title} | {ref_label} | {fmt_time(mp)} ({fmt_rate(work / mp)} {unit}/s) "
            f"| {fmt_time(mr)} ({fmt_rate(work / mr)} {unit}/s) | {statistics.median(ratios):.2f}× "
            f"| {min(ratios):.2f}–{max(ratios):.2f}× | {w} warm-up + {n} timed |" + cells)
    lines += [
        "",
        "Ratio = reference time / tilpass time per round (> 1: tilpass is faster); the absolute figures "
        "are the medians over the rounds of each process's median. \"(1 thread)\": the reference "
        "library runs single-threaded Python whatever the setting.",
    ] + ([
        "tilpass vs candle = candle's time / tilpass's time per round (> 1: tilpass is faster).",
    ] if with_candle else [])
    lines += roofline(plan, rounds, results, median_time)
    memory = []
    for _, b, _, _, title, _ in plan:
        if b not in MEMORY:
            continue
        peaks = {side: [e.get("peak_rss_mb") for _, s, rep in results if s == side
                        for e in rep["benchmarks"] if e["name"] == b] for side in ("python", "tilpass")}
        if all(v and None not in v for v in peaks.values()):
            memory.append(f"- {title}: reference {statistics.median(peaks['python']):,.0f} MiB, "
                          f"tilpass {statistics.median(peaks['tilpass']):,.0f} MiB")
    if memory:
        lines += ["", "Peak resident memory of each side's process (median over the rounds; the model and "
                      "inputs included; tilpass's since the benchmark's warm-up, the reference's since its "
                      "process started):", *memory]
    try:
        busy = float(load_start) > max(1.0, 0.5 * (os.cpu_count() or 1))
    except ValueError:
        busy = False
    if busy:
        lines += ["", f"**Not a valid measurement: the load average was {load_start} before the first "
                      "process started (other work on the machine, or the build just before). Rerun on a "
                      "quiet machine.**"]
    lines += rag_harness.report(results)
    if problems:
        lines += ["", "**The two sides disagreed:**", *[f"- {p}" for p in problems]]
    table = "\n".join(lines)
    print(table)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "table.md").write_text(table + "\n")
        print(f"\n(raw results, logs and this table in {out_dir})", file=sys.stderr)
    if problems:
        sys.exit(1)


if __name__ == "__main__":
    main()
