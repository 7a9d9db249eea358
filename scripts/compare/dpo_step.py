#!/usr/bin/env python3
"""The TRL side of the DPO step of scripts/compare/run.sh (the tilpass side is
`tilpass-compare dpo_step`, benches/compare.rs): one DPO optimiser step of TRL 1.16.0's own
`DPOTrainer.compute_loss` — the reference forward with the PEFT adapter disabled (no gradient),
the policy forward through TRL's fused log-prob head with the metrics TRL logs, the sigmoid loss
(beta 0.1) — then backward, global-norm clipping at 1.0 and AdamW (lr 1e-4, no weight decay:
TRL's / transformers' defaults), on the standard benchmark Llama of DESIGN.md (hidden 512, 8
layers, 8 heads, intermediate 1376, vocab 32000, random init) with LoRA r=16 alpha 32 on q/k/v/o,
2 pairs x 256 tokens (`[chosen 0, chosen 1, rejected 0, rejected 1]`, each pair's rows sharing a
128-token prompt, the last 128 tokens the completion; the ids of `tilpass_benches::dpo_pair_ids`),
on the CPU in float32. `bf16=False` and `gradient_checkpointing=False` (TRL's defaults are True;
tilpass does neither), the attention transformers' default (sdpa). The trainer, model, adapter,
optimiser and batch are built before the clock starts; the warm-up step also creates AdamW's
state.

    ~/.cache/tilpass-fixtures-venv/bin/python scripts/compare/dpo_step.py [--threads 2] [--bench dpo_step:1:5]
"""

from common import Run

run = Run("dpo_step", ["dpo_step"])

import os  # noqa: E402
import tempfile  # noqa: E402

os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import datasets  # noqa: E402
import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from peft import LoraConfig  # noqa: E402
from tokenizers import Tokenizer, models, pre_tokenizers  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast  # noqa: E402
from trl import DPOConfig, DPOTrainer  # noqa: E402

datasets.disable_progress_bars()
run.pin_torch(torch)
torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=32000, hidden_size=512, intermediate_size=1376, num_hidden_layers=8,
                  num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=2048,
                  tie_word_embeddings=False)
model = LlamaForCausalLM(cfg)

# The trainer needs a tokenizer and a dataset to be built; the timed step feeds the batch below.
vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, 32000)}}
tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
data = Dataset.from_list([{"prompt": "w3 w4", "chosen": " w5", "rejected": " w6"}] * 2)

ROWS, SEQ, PROMPT = 4, 256, 128
ids = [(i * 7919 + 13) % 32000 for i in range(ROWS * SEQ)]
for r in (2, 3):
    ids[r * SEQ:r * SEQ + PROMPT] = ids[(r - 2) * SEQ:(r - 2) * SEQ + PROMPT]
inputs = {
    "input_ids": torch.tensor(ids).view(ROWS, SEQ),
    "attention_mask": torch.ones(ROWS, SEQ, dtype=torch.long),
    "completion_mask": torch.tensor([[int(t >= PROMPT) for t in range(SEQ)] for _ in range(ROWS)]),
}

with tempfile.TemporaryDirectory() as tmp:
    args = DPOConfig(output_dir=tmp, per_device_train_batch_size=2, learning_rate=1e-4, beta=0.1, bf16=False,
                     fp16=False, gradient_checkpointing=False, use_cpu=True, report_to="none", save_strategy="no",
                     disable_tqdm=True, dataloader_num_workers=0)
    trainer = DPOTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer,
                         peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0,
                                                target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    policy = trainer.model
    policy.train()
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)

    def step(_):
        loss = trainer.compute_loss(policy, inputs)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()
        return loss.item()

    loss = run.time("dpo_step", ROWS * SEQ, "tokens", step)
    run.checks["last_loss_finite"] = bool(torch.isfinite(torch.tensor(loss)))
    run.extra["attn_implementation"] = policy.config._attn_implementation
    run.emit(torch.get_num_threads(), ["torch", "transformers", "peft", "trl"])
