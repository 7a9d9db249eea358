#!/usr/bin/env python3
"""The transformers side of the predict benchmark of scripts/compare/run.sh (the tilpass side is
`tilpass-compare predict`, benches/compare.rs, which calls `tilpass predict`'s library path,
`Predictor::run` after an untimed `Predictor::load`): label JSONL texts with a sequence classifier
through `pipeline("text-classification")`, batch size 32, truncation to 128 tokens, every label's
score (`top_k=None`), on the CPU. Timed: reading the JSONL, the pipeline, writing the labelled
JSONL; not timed: building the pipeline (loading the model), on either side.

`--prepare` (run.py calls it once before the rounds) writes the two random-init
`BertForSequenceClassification` models (seed 0, labels `negativ` and `positiv`) in HF format with the
all-MiniLM-L6-v2 WordPiece tokenizer ($TILPASS_ARTEFACTS/minilm), and their inputs, to
$TILPASS_COMPARE_PREDICT (default target/compare/predict):

- `minilm`: hidden 384, 6 layers, 12 heads, intermediate 1536 (MiniLM-L6 size), 500 texts;
- `base`: hidden 768, 12 layers, 12 heads, intermediate 3072 (BERT-base size), 100 texts;

the texts are the first non-empty lines of ../shared/data/ud-norwegian/nob-dev.txt.

    python scripts/compare/predict.py --prepare
    python scripts/compare/predict.py [--threads 2] [--bench predict_minilm:1:3]
"""

import json
import os
import pathlib
import shutil
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = pathlib.Path(os.environ.get("TILPASS_COMPARE_PREDICT", ROOT / "target" / "compare" / "predict"))
SIZES = {
    "minilm": (dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536), 500),
    "base": (dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072), 100),
}


def prepare():
    import torch
    import transformers
    from transformers import BertConfig, BertForSequenceClassification

    art = pathlib.Path(os.environ.get("TILPASS_ARTEFACTS", ROOT / "artefacts")) / "minilm"
    lines = (ROOT / ".." / "shared" / "data" / "ud-norwegian" / "nob-dev.txt").read_text().splitlines()
    texts = [line for line in lines if line.strip()]
    for name, (shape, n) in SIZES.items():
        d = OUT / name
        stamp = d / "prepared.json"
        want = {"shape": shape, "texts": n, "transformers": transformers.__version__, "seed": 0}
        if stamp.exists() and json.loads(stamp.read_text()) == want:
            continue
        d.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        cfg = BertConfig(vocab_size=30522, max_position_embeddings=512, num_labels=2,
                         id2label={0: "negativ", 1: "positiv"}, label2id={"negativ": 0, "positiv": 1}, **shape)
        BertForSequenceClassification(cfg).eval().save_pretrained(d, safe_serialization=True)
        for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
            if (art / f).exists():
                shutil.copy(art / f, d / f)
        with open(OUT / f"texts_{name}.jsonl", "w") as f:
            for i, t in enumerate(texts[:n]):
                f.write(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n")
        stamp.write_text(json.dumps(want))


if "--prepare" in sys.argv:
    prepare()
    sys.exit(0)

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from common import Run  # noqa: E402

run = Run("predict", ["predict_minilm", "predict_base"])

import torch  # noqa: E402
from transformers import pipeline  # noqa: E402

run.pin_torch(torch)
attn = set()
for bench in run.names():
    size = bench.removeprefix("predict_")
    data = OUT / f"texts_{size}.jsonl"
    pipe = pipeline("text-classification", model=str(OUT / size), device="cpu", top_k=None)
    attn.add(pipe.model.config._attn_implementation)
    out = OUT / f"python_{size}.jsonl"

    def label(_):
        rows = [json.loads(line) for line in open(data) if line.strip()]
        scores = pipe([r["text"] for r in rows], batch_size=32, truncation=True, max_length=128)
        with open(out, "w") as f:
            for r, s in zip(rows, scores):
                r["label"] = max(s, key=lambda x: x["score"])["label"]
                r["probabilities"] = {x["label"]: x["score"] for x in sorted(s, key=lambda x: x["label"])}
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        return rows

    n = sum(1 for line in open(data) if line.strip())
    rows = run.time(bench, n, "texts", label)
    run.checks[f"{bench}_rows"] = len(rows)
    run.checks[f"{bench}_label_names"] = len({r["label"] for r in rows}) <= 2
run.extra["attn_implementation"] = ",".join(sorted(attn))
run.emit(torch.get_num_threads(), ["torch", "transformers", "tokenizers"])
