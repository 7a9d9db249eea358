#!/usr/bin/env python3
"""Groups a flat `perf report --no-children --sort symbol --stdio -g none` by kind of work and
prints a markdown table (scripts/compare/profile.sh runs it). With the benchmark's JSON (the
`tilpass-compare` output of the profiled run), the matmul row also gives the achieved rate:
the model FLOPs of a run (all matmul work) over the median time times the matmul share.

Standard library only.
"""

import json
import re
import sys

# (kind, pattern over "[.] symbol" / "[k] symbol"), first match wins.
KINDS = [
    ("matmul (gemm microkernels and packing)", r"gemm"),
    ("page faults: kernel zeroing fresh pages", r"\[k\] (clear_page|do_huge_pmd|.*fault|.*pmd|.*pte|.*folio|.*lru)"),
    ("other kernel (scheduler, syscalls)", r"\[k\] "),
    ("attention (score masks and softmax; its products are in matmul)",
     r"attention|softmax|mask_max"),
    ("cross-entropy over the vocabulary (the fused head loss's row passes)",
     r"head_loss|row_loss|fused_ce"),
    ("norms (RMS norm, layer norm)", r"rms_|residual_norm|layer_norm|norm_rows"),
    ("activations (SiLU, GELU)", r"silu|gelu|tanh"),
    ("rotary position embeddings", r"rope"),
    ("exp (library calls)", r"expf|\bexp\b|exp_"),
    ("copies (memmove, strided/tiled copies, transposes)", r"memmove|memcpy|copy|transpos|permute|contiguous"),
    ("zero fills (memset, zeros)", r"memset|extend_with|zeros|fill"),
    ("allocator (mimalloc / malloc)", r"\bmi_|_mi_|malloc|\bfree\b|realloc|alloc::alloc"),
    ("autodiff bookkeeping (burn-autodiff)", r"burn_autodiff"),
    ("thread pool (rayon: waiting, stealing)", r"rayon|crossbeam|sched_yield|futex"),
    ("elementwise and reduction kernels (burn-flex, closures)",
     r"burn_flex|macerator|zip_apply|unary|binary|scalar_op|reduce|sum|fold|call_mut|::call\b|Fn<A>"),
]


def main():
    shares = {k: 0.0 for k, _ in KINDS}
    top = []
    other = 0.0
    total = 0.0
    for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
        m = re.match(r"\s*([\d.]+)%\s+(\[[.k]\]\s+.*)", line)
        if not m:
            continue
        pct, sym = float(m.group(1)), m.group(2).strip()
        total += pct
        top.append((pct, sym))
        for kind, pat in KINDS:
            if re.search(pat, sym):
                shares[kind] += pct
                break
        else:
            other += pct
    bench = None
    if len(sys.argv) > 2:
        rep = json.load(open(sys.argv[2]))
        bench = rep["benchmarks"][-1]
        print(f"{bench['name']}: median {bench['median_s']:.3f} s over {bench['reps']} runs, "
              f"{bench['work'] / bench['median_s']:.1f} {bench['unit']}/s"
              + (f", MFU {100 * bench['mfu']:.1f}% of {rep['peak_gflops']:.1f} GFLOP/s"
                 if "mfu" in bench else ""))
    print()
    print("| where | share of samples | note |")
    print("| --- | --- | --- |")
    for kind, _ in KINDS:
        note = ""
        if kind.startswith("matmul") and bench and "model_gflop" in bench and shares[kind] > 0:
            rate = bench["model_gflop"] / (bench["median_s"] * shares[kind] / 100)
            note = f"{rate:.0f} GFLOP/s while in matmul"
        print(f"| {kind} | {shares[kind]:.1f}% | {note} |")
    print(f"| other | {other:.1f}% | |")
    print(f"| (sum) | {total:.1f}% | |")
    print()
    print("Top symbols:")
    print()
    for pct, sym in sorted(top, reverse=True)[:15]:
        print(f"- {pct:.1f}% `{sym[:110]}`")


if __name__ == "__main__":
    main()
