#!/usr/bin/env python3
"""The sacrebleu side of the metric benchmarks of scripts/compare/run.sh (the tilpass side is
`tilpass-compare metrics`, benches/compare.rs): corpus BLEU and chrF (sacrebleu's defaults: 13a,
exp smoothing; chrF2) of 10,000 Norwegian pairs — references: the shared Bokmål sentences
(../shared/data/ud-norwegian/nob-dev.txt, cycled), hypotheses: the same with every fifth word
dropped and the last two swapped. A fresh metric object per run, built before the clock starts
(no cached references). sacrebleu is single-threaded; the scores are checked against tilpass's.

    ~/.cache/tilpass-refenv/bin/python scripts/compare/metrics.py [--threads 2] [--bench corpus_bleu:1:5]
"""

import pathlib

from common import Run

run = Run("metrics", ["corpus_bleu", "corpus_chrf"])

from sacrebleu.metrics import BLEU, CHRF  # noqa: E402

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

for name in run.names():
    make = {"corpus_bleu": BLEU, "corpus_chrf": CHRF}[name]
    score = run.time(name, len(hyps), "pairs", lambda metric: metric.corpus_score(hyps, [refs]), setup=make)
    run.checks[f"{name}_score"] = f"{score.score:.6f}"
run.emit(1, ["sacrebleu"])
