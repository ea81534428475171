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

Train (the model of an experiment file, shapes and optimizer of `autoneural bench train`):
timm MobileNetV5 + Linear-GELU-Linear connector + transformers Lfm2ForCausalLM, one fixed
synthetic batch, masked next-token CE, AdamW, clip_grad_norm_, fp32; samples/s and the
forward / backward / clip / optimizer split. Parameter counts print next to ours.
    pip install torch transformers timm
    python scripts/bench_reference.py --mode train --experiment experiments/quickstart.toml \
        --batch 16 --steps 10 --warmup 2 --threads 2
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


def train(args):
    """`autoneural bench train` in PyTorch: same model, batch shapes, loss and optimizer."""
    import tomllib
    import timm
    from reference_vlm import build
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with open(args.experiment, "rb") as f:
        exp = tomllib.load(f)
    stages = exp["stage"]
    stage = next(s for s in stages if s["name"] == args.stage) if args.stage else next((s for s in stages if len(set(s["train"])) == 3 and s.get("lm_weight", 1.0) > 0), stages[0])
    vocab = exp["data"].get("vocab_size", 512)
    encoder, projector, lm, shapes = build(exp, vocab, args.attn)
    size, hidden, layers, attn = shapes.image_size, shapes.hidden, shapes.layers, shapes.attention_layers
    num_features = shapes.num_features
    model = torch.nn.ModuleDict({"vision_tower": encoder, "multi_modal_projector": projector, "language": lm})
    model.train()
    count = lambda mod: sum(p.numel() for p in mod.parameters())
    mlp_width = lm.model.layers[0].feed_forward.w1.out_features

    # The batch: 3 leading tokens, the image's tokens, text; loss on the last positions.
    with torch.no_grad():
        image_tokens = encoder.forward_features(torch.zeros(1, 3, size, size)).flatten(2).shape[2]
    image_id = vocab - 1
    length = image_tokens + args.text_tokens
    g = torch.Generator().manual_seed(0)
    seq = torch.randint(0, vocab - 1, (args.batch, length + 1), generator=g)
    seq[:, 3:3 + image_tokens] = image_id
    inputs, targets = seq[:, :-1], seq[:, 1:].clone()
    mask = torch.zeros(args.batch, length, dtype=torch.bool)
    mask[:, length - min(args.loss_tokens, args.text_tokens - 3):] = True
    image_pos = inputs == image_id
    pixels = torch.rand(args.batch, 3, size, size, generator=g)
    n_loss = int(mask.sum())

    wd = stage.get("weight_decay", 0.0)
    optim = torch.optim.AdamW(model.parameters(), lr=stage["lr"], betas=(stage.get("beta1", 0.9),
                              stage.get("beta2", 0.95)), eps=1e-8, weight_decay=wd)
    clip = stage.get("grad_clip", 1.0)
    emb = lm.get_input_embeddings()

    def forward():
        feats = encoder.forward_features(pixels).flatten(2).transpose(1, 2)  # [n, tokens, C], row-major grid
        feats = projector(feats)
        e = emb(inputs)
        e = e.masked_scatter(image_pos.unsqueeze(-1), feats.reshape(-1, hidden).to(e.dtype))
        logits = lm(inputs_embeds=e, use_cache=False).logits
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1), reduction="none")
        return (nll * mask.reshape(-1)).sum()

    times, phases, last = [], [0.0, 0.0, 0.0, 0.0], float("nan")
    for step in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        nll = forward()
        last = float(nll.detach()) / n_loss
        t1 = time.perf_counter()
        (nll / n_loss).backward()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        t3 = time.perf_counter()
        optim.step()
        optim.zero_grad(set_to_none=True)
        t4 = time.perf_counter()
        if step >= args.warmup:
            times.append((t4 - t0) * 1e3)
            for i, (a, b) in enumerate([(t0, t1), (t1, t2), (t2, t3), (t3, t4)]):
                phases[i] += (b - a) * 1e3
    n = len(times)
    mean = sum(times) / n
    split = None
    if args.breakdown:
        # The halves as separate graphs (as `bench train --breakdown`): vision = encoder +
        # connector, backward from the features' sum; language = merge with detached
        # features, LM, loss. No optimizer step.
        with torch.no_grad():
            fixed = projector(encoder.forward_features(pixels).flatten(2).transpose(1, 2)).reshape(-1, hidden)
        acc = [0.0, 0.0, 0.0, 0.0]
        for run in range(args.steps + 1):
            t0 = time.perf_counter()
            f = projector(encoder.forward_features(pixels).flatten(2).transpose(1, 2))
            t1 = time.perf_counter()
            f.sum().backward()
            t2 = time.perf_counter()
            e = emb(inputs).masked_scatter(image_pos.unsqueeze(-1), fixed)
            logits = lm(inputs_embeds=e, use_cache=False).logits
            nll = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1), reduction="none")
            loss = (nll * mask.reshape(-1)).sum() / n_loss
            float(loss.detach())
            t3 = time.perf_counter()
            loss.backward()
            t4 = time.perf_counter()
            optim.zero_grad(set_to_none=True)
            if run > 0:
                for i, (a, b) in enumerate([(t0, t1), (t1, t2), (t2, t3), (t3, t4)]):
                    acc[i] += (b - a) * 1e3
        split = dict(zip(["vision_forward", "vision_backward", "language_forward", "language_backward"],
                         [a / args.steps for a in acc]))
    out = {
        "implementation": f"torch {torch.__version__}, timm {timm.__version__}, transformers "
                          f"{__import__('transformers').__version__} ({args.attn} attention)",
        "experiment": exp["name"], "stage": stage["name"],
        "params_vision": count(encoder), "params_projector": count(projector), "params_language": count(lm),
        "params_total": count(model), "image_size": size, "image_tokens": image_tokens,
        "vision_dim": num_features, "text_hidden": hidden, "text_mlp_width": mlp_width, "text_layers": layers,
        "attention_layers": attn, "vocab_size": vocab, "batch": args.batch, "seq_len": length,
        "loss_tokens_per_row": n_loss // args.batch, "warmup": args.warmup, "steps": n,
        "ms_per_step": mean, "median_ms": sorted(times)[n // 2], "min_ms": min(times),
        "samples_per_s": args.batch * 1e3 / mean,
        "phases_ms": dict(zip(["forward", "backward", "clip", "optimizer"], [p / n for p in phases])),
        "breakdown_ms": split,
        "step_ms": [round(t, 1) for t in times], "last_loss": last, "threads": args.threads,
    }
    print(json.dumps(out), flush=True)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", default="lm", choices=["lm", "vision", "vision-one", "train"])
    ap.add_argument("--experiment", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                                         "experiments", "quickstart.toml"))
    ap.add_argument("--stage", default=None, help="train: stage by name (default: the first that trains every part)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--text-tokens", type=int, default=40)
    ap.add_argument("--loss-tokens", type=int, default=8)
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    ap.add_argument("--breakdown", action="store_true", help="train: also time the vision and language halves")
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
    if args.mode == "train":
        return train(args)
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
