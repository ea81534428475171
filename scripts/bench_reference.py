#!/usr/bin/env python3
"""The reference implementations on the shapes of `autoneural bench`, for the ratios in
docs/benchmarks.md. Random weights, fp32, CPU.

LM (transformers' eager LFM2, shapes of `autoneural bench lm`):
    pip install torch transformers
    python scripts/bench_reference.py --preset lfm2-350m --threads 2 --prompt-len 128 --new-tokens 64

Vision (timm's MobileNetV5 and transformers' SigLIP2 eager, shapes of `autoneural bench
vision`): median latency and peak memory per resolution; each (encoder, resolution) runs
in its own process so its peak RSS is its own.
    pip install torch transformers timm
    python scripts/bench_reference.py --mode vision --encoders mobilenetv5_300m_enc,vit_300m_p14 \
        --resolutions 256,512,768 --threads 2
"""
import argparse
import json
import os
import time

import torch
from transformers import Lfm2Config, Lfm2ForCausalLM

PRESETS = {
    # hidden, intermediate (raw), heads, kv heads, layers, attention indices
    "lfm2-350m": (1024, 6656, 16, 8, 16, [2, 5, 8, 10, 12, 14]),
    "lfm2-1.2b": (2048, 12288, 32, 8, 16, [2, 5, 8, 10, 12, 14]),
}


# ViT shapes of `autoneural bench vision`: hidden, intermediate, layers, heads, patch, position table
VITS = {
    "siglip2_base_p16": (768, 3072, 12, 12, 16, 256),
    "siglip2_large_p16": (1024, 4096, 24, 16, 16, 256),
    "vit_300m_p14": (1024, 4096, 24, 16, 14, 1024),
}


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def vision_one(encoder, res, runs, threads):
    """One (encoder, resolution) measurement in this process; prints a JSON line."""
    import resource
    torch.set_num_threads(threads)
    if encoder.startswith("mobilenetv5"):
        import timm
        model = timm.create_model(encoder).eval()
        x = torch.rand(1, 3, res, res)
        call = lambda: model(x)
    else:
        from transformers import Siglip2VisionConfig, Siglip2VisionModel
        hidden, inter, layers, heads, patch, npos = VITS[encoder]
        cfg = Siglip2VisionConfig(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                                  num_attention_heads=heads, patch_size=patch, num_patches=npos,
                                  vision_use_head=False)
        cfg._attn_implementation = "eager"
        model = Siglip2VisionModel(cfg).eval()
        g = res // patch
        pixels = torch.rand(1, g * g, 3 * patch * patch)
        mask = torch.ones(1, g * g, dtype=torch.long)
        shapes = torch.tensor([[g, g]])
        call = lambda: model(pixel_values=pixels, pixel_attention_mask=mask, spatial_shapes=shapes)
    params = sum(p.numel() for p in model.parameters())
    with torch.inference_mode():
        before = rss_bytes()
        call()  # warm-up; its peak is the activation peak
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            call()
            times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    print(json.dumps({"encoder": encoder, "resolution": res, "params": params, "latency_ms": times[len(times) // 2],
                      "min_ms": times[0], "peak_activation_mib": max(peak, 0) / 1048576, "threads": threads,
                      "impl": "timm" if encoder.startswith("mobilenetv5") else "transformers-eager"}), flush=True)


def vision(args):
    import subprocess
    import sys
    rows = []
    for enc in args.encoders.split(","):
        for res in [int(r) for r in args.resolutions.split(",")]:
            out = subprocess.run([sys.executable, __file__, "--mode", "vision-one", "--encoders", enc,
                                  "--resolutions", str(res), "--runs", str(args.runs), "--threads", str(args.threads)],
                                 check=True, capture_output=True, text=True).stdout
            row = json.loads(out.strip().splitlines()[-1])
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", default="lm", choices=["lm", "vision", "vision-one"])
    ap.add_argument("--encoders", default="mobilenetv5_300m_enc,vit_300m_p14")
    ap.add_argument("--resolutions", default="256,512,768")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--preset", default="lfm2-350m", choices=sorted(PRESETS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=64)
    args = ap.parse_args()
    if args.mode == "vision":
        return vision(args)
    if args.mode == "vision-one":
        return vision_one(args.encoders, int(args.resolutions), args.runs, args.threads)
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
