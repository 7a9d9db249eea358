#!/usr/bin/env python3
"""The PyTorch + PEFT side of the LoRA SFT step of scripts/compare/run.sh (the tilpass side is
`tilpass-compare train`, benches/compare.rs): one optimiser step — forward, causal-LM loss,
backward, global-norm clipping at 1.0, AdamW (lr 1e-4, PyTorch's defaults otherwise) — of the
standard benchmark Llama of DESIGN.md (hidden 512, 8 layers, 8 heads, intermediate 1376, vocab
32000, random init), LoRA r=16 alpha 32 on q/k/v/o, batch 4 x 256 tokens, on the CPU, as a user
gets it (transformers' default attention implementation, sdpa). The model, adapter, optimiser
and batch are built before the clock starts; the warm-up steps also create AdamW's state.

    ~/.cache/tilpass-refenv/bin/python scripts/compare/train.py [--threads 2] [--bench lora_sft_step:1:5]
"""

from common import Run

run = Run("train", ["lora_sft_step"])

import torch  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

run.pin_torch(torch)
torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=32000, hidden_size=512, intermediate_size=1376, num_hidden_layers=8,
                  num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=2048,
                  tie_word_embeddings=False)
model = get_peft_model(LlamaForCausalLM(cfg), LoraConfig(r=16, lora_alpha=32,
                       target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
model.train()
params = [p for p in model.parameters() if p.requires_grad]
opt = torch.optim.AdamW(params, lr=1e-4)
ids = torch.tensor([[(i * 7919 + 13) % 32000 for i in range(r * 256, (r + 1) * 256)] for r in range(4)])


def step(_):
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    opt.zero_grad()
    return out.loss.item()


loss = run.time("lora_sft_step", 4 * 256, "tokens", step)
run.checks["last_loss_finite"] = bool(torch.isfinite(torch.tensor(loss)))
run.extra["attn_implementation"] = model.config._attn_implementation
run.emit(torch.get_num_threads(), ["torch", "transformers", "peft"])
