#!/usr/bin/env python3
"""The sentence-transformers reference for benches/benches/encoder.rs: embed the first 1,000
non-empty lines of ../shared/data/ud-norwegian/nob-dev.txt with all-MiniLM-L6-v2
(artefacts/minilm), batch 32, on the CPU; prints the median of 5 runs and sentences/s.

    .venv-models/bin/python scripts/compare/encoder.py
"""

import json
import os
import pathlib
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import sentence_transformers  # noqa: E402
import torch  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

root = pathlib.Path(__file__).resolve().parents[2]
lines = (root / ".." / "shared" / "data" / "ud-norwegian" / "nob-dev.txt").read_text().splitlines()
sentences = [l for l in lines if l.strip()][:1000]
model = SentenceTransformer(str(root / "artefacts" / "minilm"), device="cpu")
model.encode(sentences[:64], batch_size=32)
times = []
for _ in range(5):
    t = time.perf_counter()
    model.encode(sentences, batch_size=32)
    times.append(time.perf_counter() - t)
med = statistics.median(times)
print(json.dumps({"sentence_transformers": sentence_transformers.__version__, "torch": torch.__version__,
                  "threads": torch.get_num_threads(), "sentences": len(sentences),
                  "median_s": med, "sentences_per_s": len(sentences) / med}, indent=1))
