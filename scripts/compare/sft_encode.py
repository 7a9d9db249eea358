#!/usr/bin/env python3
"""The transformers side of the SFT-encoding benchmark of scripts/compare/run.sh (the tilpass
side is `tilpass-compare sft_encode`, benches/compare.rs): 1,000 two-turn conversations of the
shared Bokmål sentences, each rendered with the `norsk` chat template and tokenized with
`apply_chat_template(..., return_assistant_tokens_mask=True)`, then labelled (-100 outside the
assistant tokens), as TRL's SFTTrainer does, with the Mistral tokenizer loaded as a user loads
it (`AutoTokenizer.from_pretrained($TILPASS_ARTEFACTS/mistral)`, default artefacts/mistral).
Loading the tokenizer and reading the template are untimed; the loop is single-threaded Python
(tokenizers encodes one string at a time).

    ~/.cache/tilpass-refenv/bin/python scripts/compare/sft_encode.py [--threads 2] [--bench sft_encode_1000:1:5]
"""

import os
import pathlib

from common import Run

run = Run("sft_encode", ["sft_encode_1000"])

from transformers import AutoTokenizer  # noqa: E402

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
tok = AutoTokenizer.from_pretrained(str(ART / "mistral"))
template = (ROOT / "crates" / "tilpass-tokenize" / "templates" / "norsk.jinja").read_text()


def encode_all(_):
    out = []
    for conv in convs:
        enc = tok.apply_chat_template(
            conv, chat_template=template, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        ids = enc["input_ids"]
        labels = [i if m else -100 for i, m in zip(ids, enc["assistant_masks"])]
        out.append((ids, labels))
    return out


examples = run.time("sft_encode_1000", len(convs), "conversations", encode_all)
run.checks["tokens"] = sum(len(ids) for ids, _ in examples)
run.checks["supervised_tokens"] = sum(sum(1 for x in labels if x != -100) for _, labels in examples)
run.emit(1, ["transformers", "tokenizers"])
