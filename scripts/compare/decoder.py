#!/usr/bin/env python3
"""The PyTorch reference for benches/benches/decoder.rs: the standard benchmark Llama
(hidden 512, 8 layers, 8 heads, intermediate 1376, vocab 32000, random init) on the CPU with
transformers: prefill of 512 tokens, greedy decode of 256 tokens after a 32-token prompt, and
one decode step at cache lengths 16/128/512 of a 4-layer hidden-256 model.

    .venv-models/bin/python scripts/compare/decoder.py
"""

import json
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM  # noqa: E402


def model(hidden, layers, heads, inter):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=32000, hidden_size=hidden, intermediate_size=inter,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                      max_position_embeddings=2048, tie_word_embeddings=False)
    return LlamaForCausalLM(cfg).eval()


def timeit(f, n):
    f()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def prompt(n):
    return torch.tensor([[(i * 7919 + 13) % 32000 for i in range(n)]])


results = {"torch": torch.__version__, "threads": torch.get_num_threads()}
with torch.no_grad():
    m = model(512, 8, 8, 1376)
    p512 = prompt(512)
    t = timeit(lambda: m(input_ids=p512), 5)
    results["prefill_512_tokens_s"] = t
    results["prefill_tokens_per_s"] = 512 / t
    p32 = prompt(32)
    t = timeit(lambda: m.generate(input_ids=p32, attention_mask=torch.ones_like(p32), max_new_tokens=256,
                                  min_new_tokens=256, do_sample=False, pad_token_id=0), 3)
    results["decode_256_tokens_s"] = t
    results["decode_tokens_per_s"] = 256 / t
    small = model(256, 4, 4, 688)
    for past in (16, 128, 512):
        cache = DynamicCache()
        small(input_ids=prompt(past), past_key_values=cache, use_cache=True)
        step = torch.tensor([[7]])

        def one():
            import copy
            c = copy.deepcopy(cache)
            small(input_ids=step, past_key_values=c, use_cache=True,
                  position_ids=torch.tensor([[past]]))
        results[f"decode_step_at_{past}_s"] = timeit(one, 20)
print(json.dumps(results, indent=1))
