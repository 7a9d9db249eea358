#!/usr/bin/env python3
"""The TRL side of the GRPO step of scripts/compare/run.sh (the tilpass side is
`tilpass-compare grpo_step`, benches/compare.rs): one GRPO step of TRL 1.16.0's own
`GRPOTrainer` with its defaults (beta 0, loss_type dapo, num_iterations 1, temperature 1), split
as tilpass's trainer reports it:

- `grpo_generate`: `GRPOTrainer._generate_and_score_completions` on one generation batch —
  G = 8 completions sampled with transformers' `generate` (KV cache) for one 64-token prompt,
  exactly 64 new tokens each (`min_new_tokens` 64: the random model may not stop early; the
  tilpass side's checkpoint has no EOS id), decoded, scored by a length reward, advantages;
- `grpo_train`: `GRPOTrainer.compute_loss` on that batch, backward, global-norm clipping at 1.0
  and AdamW (lr 1e-4, no weight decay).

The model is the standard benchmark Llama of DESIGN.md (hidden 512, 8 layers, 8 heads,
intermediate 1376, vocab 32000, random init) with LoRA r=16 alpha 32 on q/k/v/o, on the CPU in
float32, `bf16=False`, `gradient_checkpointing=False` (TRL's defaults are True; tilpass does
neither). The trainer, model, adapter, optimiser and the prompt are built before the clock
starts. `TILPASS_COMPARE_SCALE=tiny` (both sides): a tiny model, to check the benchmark runs.

    ~/.cache/tilpass-fixtures-venv/bin/python scripts/compare/grpo_step.py [--threads 2] [--bench grpo_generate:1:3]
"""

from common import Run

run = Run("grpo_step", ["grpo_generate", "grpo_train"])

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
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

datasets.disable_progress_bars()
run.pin_torch(torch)
torch.manual_seed(0)
G, PROMPT, COMPLETION, VOCAB = 8, 64, 64, 32000
tiny = os.environ.get("TILPASS_COMPARE_SCALE") == "tiny"
if tiny:
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=2048,
                      tie_word_embeddings=False)
else:
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=512, intermediate_size=1376, num_hidden_layers=8,
                      num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=2048,
                      tie_word_embeddings=False)
model = LlamaForCausalLM(cfg)

vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, VOCAB)}}
tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
# The prompt ids of the tilpass side: 3 + (i * 7919 + 13) % (VOCAB - 3).
prompt = " ".join(f"w{3 + (i * 7919 + 13) % (VOCAB - 3)}" for i in range(PROMPT))
data = Dataset.from_list([{"prompt": prompt}] * G)


def length_reward(completions, **kwargs):
    return [float(len(c)) for c in completions]


with tempfile.TemporaryDirectory() as tmp:
    args = GRPOConfig(output_dir=tmp, per_device_train_batch_size=G, num_generations=G,
                      max_completion_length=COMPLETION, generation_kwargs={"min_new_tokens": COMPLETION},
                      learning_rate=1e-4, bf16=False, fp16=False, gradient_checkpointing=False, use_cpu=True,
                      report_to="none", save_strategy="no", disable_tqdm=True, dataloader_num_workers=0,
                      log_completions=False)
    trainer = GRPOTrainer(model=model, reward_funcs=[length_reward], args=args, train_dataset=data,
                          processing_class=tokenizer,
                          peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0,
                                                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    policy = trainer.model
    policy.train()
    # Set by transformers' training loop, read by the dapo normaliser.
    trainer.current_gradient_accumulation_steps = args.gradient_accumulation_steps
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    rows = [{"prompt": prompt} for _ in range(G)]
    batches = []

    def generate(_):
        batch = trainer._generate_and_score_completions(rows)
        batches.append(batch)
        return batch

    def train(batch):
        loss = trainer.compute_loss(policy, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()
        return loss.item()

    names = run.names()
    if "grpo_generate" in names:
        batch = run.time("grpo_generate", G * COMPLETION, "tokens", generate)
    else:
        batch = generate(None)
    if "grpo_train" in names:
        # Each repetition trains on a freshly generated batch (generated outside the clock).
        loss = run.time("grpo_train", G * (PROMPT + COMPLETION), "tokens", train,
                        setup=lambda: generate(None))
        run.checks["last_loss_finite"] = bool(torch.isfinite(torch.tensor(loss)))
    lengths = trainer._metrics["train"]["completions/mean_length"]
    run.checks["completions_all_full_length"] = all(x == COMPLETION for x in lengths)
    run.extra["attn_implementation"] = policy.config._attn_implementation
    run.emit(torch.get_num_threads(), ["torch", "transformers", "peft", "trl"])
