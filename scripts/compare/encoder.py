#!/usr/bin/env python3
"""The sentence-transformers side of the encoder benchmark of scripts/compare/run.sh (the
tilpass side is `tilpass-compare encoder`, benches/compare.rs): embed the first 1,000 non-empty
lines of ../shared/data/ud-norwegian/nob-dev.txt with all-MiniLM-L6-v2 ($TILPASS_ARTEFACTS/minilm,
default artefacts/minilm), `SentenceTransformer.encode(sentences, batch_size=32)` on the CPU:
tokenization, length sorting, the forward, mean pooling and normalisation are timed; loading the
model is not.

    ~/.cache/tilpass-refenv/bin/python scripts/compare/encoder.py [--threads 2] [--bench embed_1000:1:3]
"""

import os
import pathlib

from common import Run

run = Run("encoder", ["embed_1000"])

import torch  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

run.pin_torch(torch)
root = pathlib.Path(__file__).resolve().parents[2]
art = pathlib.Path(os.environ.get("TILPASS_ARTEFACTS", root / "artefacts"))
lines = (root / ".." / "shared" / "data" / "ud-norwegian" / "nob-dev.txt").read_text().splitlines()
sentences = [line for line in lines if line.strip()][:1000]
model = SentenceTransformer(str(art / "minilm"), device="cpu")
vectors = run.time("embed_1000", len(sentences), "sentences", lambda _: model.encode(sentences, batch_size=32))
run.checks["embeddings"] = list(vectors.shape)
run.extra["attn_implementation"] = model[0].auto_model.config._attn_implementation
run.emit(torch.get_num_threads(), ["torch", "transformers", "sentence-transformers", "tokenizers"])
