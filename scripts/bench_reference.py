#!/usr/bin/env python3
"""transformers' eager LFM2 on the shapes of `autoneural bench lm`, for the ratios in
docs/benchmarks.md. Random weights, fp32, CPU.

    pip install torch transformers
    python scripts/bench_reference.py --preset lfm2-350m --threads 2 --prompt-len 128 --new-tokens 64
"""
import argparse
import json
import time

import torch
from transformers import Lfm2Config, Lfm2ForCausalLM

PRESETS = {
    # hidden, intermediate (raw), heads, kv heads, layers, attention indices
    "lfm2-350m": (1024, 6656, 16, 8, 16, [2, 5, 8, 10, 12, 14]),
    "lfm2-1.2b": (2048, 12288, 32, 8, 16, [2, 5, 8, 10, 12, 14]),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="lfm2-350m", choices=sorted(PRESETS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    hidden, ff, heads, kv, layers, attn = PRESETS[args.preset]
    cfg = Lfm2Config(vocab_size=65536, hidden_size=hidden, intermediate_size=ff, num_hidden_layers=layers,
                     num_attention_heads=heads, num_key_value_heads=kv, tie_word_embeddings=True,
                     layer_types=["full_attention" if i in attn else "conv" for i in range(layers)])
    cfg._attn_implementation = "eager"
    model = Lfm2ForCausalLM(cfg).eval().float()
    prompt = torch.randint(0, 65536, (1, args.prompt_len))
    with torch.inference_mode():
        model(prompt[:, :8], use_cache=True)  # warm-up
        t = time.perf_counter()
        out = model(prompt, use_cache=True, logits_to_keep=1)
        prefill = time.perf_counter() - t
        past = out.past_key_values
        nxt = out.logits[:, -1:].argmax(-1)
        t = time.perf_counter()
        for _ in range(args.new_tokens):
            out = model(nxt, past_key_values=past, use_cache=True)
            past = out.past_key_values
            nxt = out.logits[:, -1:].argmax(-1)
        decode = time.perf_counter() - t
    print(json.dumps({
        "implementation": f"transformers {__import__('transformers').__version__} eager, torch {torch.__version__}",
        "preset": args.preset, "threads": args.threads, "prompt_len": args.prompt_len, "new_tokens": args.new_tokens,
        "prefill_tok_s": args.prompt_len / prefill, "decode_tok_s": args.new_tokens / decode,
    }))


if __name__ == "__main__":
    main()
