#!/usr/bin/env python3
"""The PyTorch + PEFT side of the LoRA SFT steps of scripts/compare/run.sh (the tilpass side is
`tilpass-compare train`, benches/compare.rs).

lora_sft_step: one optimiser step — forward, causal-LM loss,
backward, global-norm clipping at 1.0, AdamW (lr 1e-4, PyTorch's defaults otherwise) — of the
standard benchmark Llama of DESIGN.md (hidden 512, 8 layers, 8 heads, intermediate 1376, vocab
32000, random init), LoRA r=16 alpha 32 on q/k/v/o, batch 4 x 256 tokens, on the CPU, as a user
gets it (transformers' default attention implementation, sdpa). lora_sft_step_2k: the same step
on one row of 2048 tokens (long context: attention is about a quarter of the products computed
once the masked keys are skipped); lora_sft_step_8k: one row of 8,192 tokens (the model configured
for 8,192 positions), for time and peak memory at long context. The model, adapter, optimiser and batch are built before the
clock starts; the warm-up steps also create AdamW's state.

t5_lora_sft_step: the same step for an encoder-decoder: T5-base's shape scaled like the Llama
(T5.1.1 layout: gated-GELU, untied head; d_model 512, d_kv 64, d_ff 1024, 6 + 6 layers, 8 heads,
vocab 32128), LoRA r=16 alpha 32 on q/k/v/o of every attention (task SEQ_2_SEQ_LM), 4 rows of 256
source and 64 target tokens (63 + EOS), `T5ForConditionalGeneration`'s loss from `labels`;
dropout 0 (tilpass trains without dropout).

With `--device cuda` the models, optimiser state and batches live on the GPU (the CUDA rows of
docs/benchmarks.md).

    ~/.cache/tilpass-refenv/bin/python scripts/compare/train.py [--threads 2] [--bench lora_sft_step:1:5]
"""

from common import Run

run = Run("train", ["lora_sft_step", "lora_sft_step_2k", "lora_sft_step_8k", "t5_lora_sft_step"],
          devices=("cpu", "cuda"))

import torch  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration  # noqa: E402

run.pin_torch(torch)
dev = torch.device(run.device)


def llama_step(name="lora_sft_step", rows=4, seq=256):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=32000, hidden_size=512, intermediate_size=1376, num_hidden_layers=8,
                      num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=max(2048, seq),
                      tie_word_embeddings=False)
    model = get_peft_model(LlamaForCausalLM(cfg).to(dev), LoraConfig(r=16, lora_alpha=32,
                           target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    ids = torch.tensor([[(i * 7919 + 13) % 32000 for i in range(r * seq, (r + 1) * seq)] for r in range(rows)],
                       device=dev)

    def step(_):
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()
        return out.loss.item()

    loss = run.time(name, rows * seq, "tokens", step)
    run.checks["last_loss_finite" if name == "lora_sft_step" else f"{name}_last_loss_finite"] = bool(
        torch.isfinite(torch.tensor(loss)))
    run.extra["attn_implementation"] = model.config._attn_implementation


def t5_step():
    torch.manual_seed(0)
    cfg = T5Config(vocab_size=32128, d_model=512, d_kv=64, d_ff=1024, num_layers=6, num_decoder_layers=6,
                   num_heads=8, relative_attention_num_buckets=32, relative_attention_max_distance=128,
                   feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0, pad_token_id=0,
                   eos_token_id=1, decoder_start_token_id=0)
    model = get_peft_model(T5ForConditionalGeneration(cfg).to(dev),
                           LoraConfig(r=16, lora_alpha=32, target_modules=["q", "k", "v", "o"],
                                      task_type="SEQ_2_SEQ_LM"))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    rows = [[(i * 7919 + 13) % 32000 + 2 for i in range(r * 320, (r + 1) * 320)] for r in range(4)]
    src = torch.tensor([row[:256] for row in rows], device=dev)
    labels = torch.tensor([row[256:319] + [1] for row in rows], device=dev)
    mask = torch.ones_like(src)

    def step(_):
        out = model(input_ids=src, attention_mask=mask, labels=labels)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()
        return out.loss.item()

    loss = run.time("t5_lora_sft_step", 4 * (256 + 64), "tokens", step)
    run.checks["t5_last_loss_finite"] = bool(torch.isfinite(torch.tensor(loss)))


for name in run.names():
    {"lora_sft_step": llama_step, "lora_sft_step_2k": lambda: llama_step("lora_sft_step_2k", 1, 2048),
     "lora_sft_step_8k": lambda: llama_step("lora_sft_step_8k", 1, 8192),
     "t5_lora_sft_step": t5_step}[name]()

run.emit(torch.get_num_threads(), ["torch", "transformers", "peft"])
