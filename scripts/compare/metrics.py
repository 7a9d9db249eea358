#!/usr/bin/env python3
"""The Python reference for benches/benches/metrics.rs: sacrebleu 2.6.0 corpus BLEU and chrF on
the same 10,000 Norwegian sentence pairs (median of 5 runs each; scores printed to check that
both sides agree).

    ~/.cache/tilpass-refenv/bin/python scripts/compare/metrics.py

Run on the same machine as `cargo bench -p tilpass-benches --bench metrics`.
"""

import pathlib
import statistics
import time

from sacrebleu.metrics import BLEU, CHRF

ROOT = pathlib.Path(__file__).resolve().parents[2]
lines = (ROOT / ".." / "shared" / "data" / "ud-norwegian" / "nob-dev.txt").read_text().splitlines()
hyps, refs = [], []
for i in range(10_000):
    r = lines[i % len(lines)]
    words = [w for j, w in enumerate(r.split(" ")) if (i + j) % 5 != 0]
    if len(words) > 3:
        words[-1], words[-2] = words[-2], words[-1]
    hyps.append(" ".join(words))
    refs.append(r)


def timed(make):
    times = []
    for _ in range(5):
        metric = make()  # a fresh metric: no cached references or tokenizations
        t = time.perf_counter()
        score = metric.corpus_score(hyps, [refs])
        times.append(time.perf_counter() - t)
    return statistics.median(times), score


for name, make in [("corpus_bleu", BLEU), ("corpus_chrf", CHRF)]:
    t, s = timed(make)
    print(f"{name}: {t * 1000:.1f} ms (median of 5), score {s.score:.6f}")
