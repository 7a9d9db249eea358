#!/usr/bin/env python3
"""The Python reference for benches/benches/tokenize.rs: SFT encoding of 1,000 two-turn
conversations (the `norsk` chat template, assistant-token masks from `{% generation %}` blocks,
labels with -100), as TRL's SFTTrainer does it with transformers, on the Mistral tokenizer.

    .venv/bin/python scripts/compare/sft_encode.py      # prints conversations/s

Run on the same machine as `cargo bench -p tilpass-benches --bench tokenize`.
"""

import json
import os
import pathlib
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tokenizers import Tokenizer  # noqa: E402
from transformers import PreTrainedTokenizerFast  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
ART = pathlib.Path(os.environ.get("TILPASS_ARTEFACTS", ROOT / "artefacts"))
lines = (ROOT / ".." / "shared" / "data" / "ud-norwegian" / "nob-dev.txt").read_text().splitlines()
convs = [
    [
        {"role": "user", "content": lines[(2 * i) % len(lines)]},
        {"role": "assistant", "content": lines[(2 * i + 1) % len(lines)]},
    ]
    for i in range(1000)
]
cfg = json.loads((ART / "mistral" / "tokenizer_config.json").read_text())
tok = PreTrainedTokenizerFast(
    tokenizer_object=Tokenizer.from_file(str(ART / "mistral" / "tokenizer.json")),
    bos_token="<s>",
    eos_token="</s>",
    unk_token="<unk>",
)
template = (ROOT / "crates" / "tilpass-tokenize" / "templates" / "norsk.jinja").read_text()


def encode_all():
    out = []
    for conv in convs:
        enc = tok.apply_chat_template(
            conv, chat_template=template, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        ids = enc["input_ids"]
        labels = [i if m else -100 for i, m in zip(ids, enc["assistant_masks"])]
        out.append((ids, labels))
    return out


encode_all()  # warm-up (template compilation is cached)
times = []
for _ in range(5):
    t = time.perf_counter()
    encode_all()
    times.append(time.perf_counter() - t)
best, med = min(times), statistics.median(times)
print(json.dumps({
    "work": "SFT encode 1000 conversations (norsk template, Mistral tokenizer)",
    "median_s": med, "best_s": best, "conversations_per_s": 1000 / med,
}))
