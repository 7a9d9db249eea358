#!/usr/bin/env python3
"""The PyTorch + PEFT reference for benches/benches/train.rs: one LoRA SFT optimiser step
(forward, backward, clip, AdamW) of the standard benchmark Llama (hidden 512, 8 layers, vocab
32000, random init), LoRA r=16 alpha 32 on q/k/v/o, batch 4 x 256 tokens, CPU, eager attention.

    .venv-models/bin/python scripts/compare/train.py
"""

import json
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import peft  # noqa: E402
import torch  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=32000, hidden_size=512, intermediate_size=1376, num_hidden_layers=8,
                  num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=2048,
                  tie_word_embeddings=False, attn_implementation="eager")
model = get_peft_model(LlamaForCausalLM(cfg), LoraConfig(r=16, lora_alpha=32,
                       target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
model.train()
params = [p for p in model.parameters() if p.requires_grad]
opt = torch.optim.AdamW(params, lr=1e-4)
ids = torch.tensor([[(i * 7919 + 13) % 32000 for i in range(r * 256, (r + 1) * 256)] for r in range(4)])


def step():
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    opt.zero_grad()


step()
times = []
for _ in range(5):
    t = time.perf_counter()
    step()
    times.append(time.perf_counter() - t)
med = statistics.median(times)
print(json.dumps({"torch": torch.__version__, "peft": peft.__version__, "threads": torch.get_num_threads(),
                  "step_s": med, "tokens_per_s": 4 * 256 / med}, indent=1))
