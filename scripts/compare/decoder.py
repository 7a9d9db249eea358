#!/usr/bin/env python3
"""The PyTorch side of the decoder benchmarks of scripts/compare/run.sh (the tilpass side is
`tilpass-compare decoder`, benches/compare.rs): the standard benchmark Llama of DESIGN.md
(hidden 512, 8 layers, 8 heads, intermediate 1376, vocab 32000, random init, f32) with
transformers on the CPU, as a user gets it (default attention implementation, sdpa):

- prefill_512: one forward of 512 tokens (all logits, no cache), under torch.no_grad();
- prefill_512_last: the same with `logits_to_keep=1` (the LM head for the last position only, as
  `generate`'s prefill computes it; the candle column's prefill, whose Llama has no other);
- greedy_decode_256: `generate(do_sample=False, min_new_tokens=256, max_new_tokens=256)` after a
  32-token prompt at batch 1 (transformers' default DynamicCache);
- greedy_decode_256_b8: the same at batch 8, prompts of 32, 30, ..., 18 tokens left-padded with
  their attention mask (as a user batches prompts of different lengths: `padding_side="left"`);
- greedy_decode_256_bf16: greedy_decode_256 with the model in bf16 (`model.to(torch.bfloat16)`:
  weights and activations bf16; tilpass stores the weights in bf16, activations f32);
- decode_step_N (N = 16, 128, 512): one decode step of a 4-layer hidden-256 model from a cache
  of N positions; the cache is filled once and deep-copied before the clock starts.

With `--device cuda` the models and inputs live on the GPU (for the CUDA rows of
docs/benchmarks.md; the clock waits for the queued kernels).

    ~/.cache/tilpass-refenv/bin/python scripts/compare/decoder.py [--threads 2] [--bench prefill_512:1:5]
"""

import copy

from common import Run

BENCHES = ["prefill_512", "prefill_512_last", "greedy_decode_256", "greedy_decode_256_b8", "greedy_decode_256_bf16", "decode_step_16", "decode_step_128", "decode_step_512"]
run = Run("decoder", BENCHES, devices=("cpu", "cuda"))

import torch  # noqa: E402
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM  # noqa: E402

run.pin_torch(torch)
dev = torch.device(run.device)


def model(hidden, layers, heads, inter):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=32000, hidden_size=hidden, intermediate_size=inter,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                      max_position_embeddings=2048, tie_word_embeddings=False)
    return LlamaForCausalLM(cfg).eval().to(dev)


def prompt(n):
    return torch.tensor([[(i * 7919 + 13) % 32000 for i in range(n)]], device=dev)


def batch8():
    """Row r: `32 - 2r` tokens `(i * 7919 + 13 + 101 r) % 32000`, left-padded with 0 to 32."""
    ids, mask = [], []
    for r in range(8):
        n = 32 - 2 * r
        ids.append([0] * (32 - n) + [(i * 7919 + 13 + 101 * r) % 32000 for i in range(n)])
        mask.append([0] * (32 - n) + [1] * n)
    return torch.tensor(ids, device=dev), torch.tensor(mask, device=dev)


names = run.names()
with torch.no_grad():
    standard = (model(512, 8, 8, 1376)
                if any(not n.startswith("decode_step_") and not n.endswith("_bf16") for n in names) else None)
    half = model(512, 8, 8, 1376).to(torch.bfloat16) if "greedy_decode_256_bf16" in names else None
    small = model(256, 4, 4, 688) if any(n.startswith("decode_step_") for n in names) else None
    for name in names:
        if name == "prefill_512":
            p512 = prompt(512)
            logits = run.time(name, 512, "tokens", lambda _: standard(input_ids=p512, use_cache=False).logits)
            run.checks["prefill_logits_shape"] = list(logits.shape)
        elif name == "prefill_512_last":
            p512 = prompt(512)
            logits = run.time(name, 512, "tokens",
                              lambda _: standard(input_ids=p512, use_cache=False, logits_to_keep=1).logits)
            run.checks["prefill_last_logits_vocab"] = logits.shape[-1]
        elif name == "greedy_decode_256":
            p32 = prompt(32)
            mask = torch.ones_like(p32)
            out = run.time(name, 256, "tokens", lambda _: standard.generate(
                input_ids=p32, attention_mask=mask, max_new_tokens=256, min_new_tokens=256, do_sample=False,
                pad_token_id=0))
            run.checks["decode_new_tokens"] = out.shape[1] - p32.shape[1]
        elif name == "greedy_decode_256_bf16":
            p32 = prompt(32)
            mask = torch.ones_like(p32)
            out = run.time(name, 256, "tokens", lambda _: half.generate(
                input_ids=p32, attention_mask=mask, max_new_tokens=256, min_new_tokens=256, do_sample=False,
                pad_token_id=0))
            run.checks["decode_new_tokens_bf16"] = out.shape[1] - p32.shape[1]
        elif name == "greedy_decode_256_b8":
            ids8, mask8 = batch8()
            out = run.time(name, 8 * 256, "tokens", lambda _: standard.generate(
                input_ids=ids8, attention_mask=mask8, max_new_tokens=256, min_new_tokens=256, do_sample=False,
                pad_token_id=0))
            run.checks["decode_new_tokens_b8"] = [out.shape[1] - ids8.shape[1]] * 8
        else:
            past = int(name.removeprefix("decode_step_"))
            cache = DynamicCache(config=small.config)
            small(input_ids=prompt(past), past_key_values=cache, use_cache=True)
            step = torch.tensor([[7]], device=dev)
            pos = torch.tensor([[past]], device=dev)
            run.time(name, 1, "tokens",
                     lambda c: small(input_ids=step, past_key_values=c, use_cache=True, position_ids=pos),
                     setup=lambda: copy.deepcopy(cache))

run.extra["attn_implementation"] = (standard or half or small).config._attn_implementation
run.emit(torch.get_num_threads(), ["torch", "transformers"])
