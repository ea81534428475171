#!/usr/bin/env python3
"""An experiment's stages trained in PyTorch on the same synthetic data, as a reference
for `autoneural run`: does the same model, data, loss and optimizer learn to use its
images, and how fast? Prints, per stage, the validation loss with the right images and
with the images shuffled within the batch (equal losses = the model ignores its images),
then exact match per task family on the test split (greedy, `max_new_tokens` of [eval]).

    pip install torch transformers timm tokenizers
    cargo run --release -- run experiments/quickstart.toml        # data + tokenizer
    python scripts/train_reference.py --experiment experiments/quickstart.toml \
        --tokenizer runs/quickstart/tokenizer/tokenizer.json

Matches autoneural-train: the LFM2 chat template, `<image>` -> the image's tokens, loss on
assistant turns (content and `<|im_end|>`), AdamW (betas of the stage), linear warmup then
cosine to `min_lr` (default lr/10) times the stage's per-part `lr_scale`, global-norm
clipping, frozen parts excluded.
Sampling differs (Python's RNG), so figures match in distribution, not bit for bit.
"""
import argparse
import json
import math
import os
import random
import re
import time
import tomllib

import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer

from reference_vlm import build

PAPER_MIXTURE = {"vqa": 35, "document": 25, "chart": 20, "ocr": 15, "multi_turn": 5}


def normalize(s):
    """autoneural-eval accuracy.rs: lowercase, strip punctuation and articles, squeeze spaces."""
    s = re.sub(r"[^\w\s]", " ", s.lower())
    return " ".join(w for w in s.split() if w not in ("a", "an", "the"))


class Data:
    def __init__(self, exp_dir, exp, tok, image_tokens, image_id):
        self.dir = os.path.normpath(os.path.join(exp_dir, exp["data"]["dir"]))
        self.tok, self.image_tokens, self.image_id = tok, image_tokens, image_id
        self.size = exp["model"].get("image_size", exp["data"].get("synth", {}).get("image_size", 64))
        self.records = {}

    def split(self, family, split):
        key = (family, split)
        if key not in self.records:
            path = os.path.join(self.dir, family, f"{split}.jsonl")
            with open(path) as f:
                self.records[key] = [(json.loads(line), os.path.dirname(path)) for line in f if line.strip()]
        return self.records[key]

    def pixels(self, rec, base):
        img = Image.open(os.path.join(base, rec["images"][0])).convert("RGB")
        if img.size != (self.size, self.size):
            img = img.resize((self.size, self.size), Image.BILINEAR)
        return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)

    def ids(self, text):
        out = []
        for i, part in enumerate(text.split("<image>")):
            if i > 0:
                out += [self.image_id] * self.image_tokens
            if part:
                out += self.tok.encode(part, add_special_tokens=False).ids
        return out

    def encode(self, messages):
        """Token ids and loss mask of a conversation (the LFM2 chat template)."""
        ids = self.ids("<|startoftext|>")
        mask = [False] * len(ids)
        for m in messages:
            head = self.ids(f"<|im_start|>{m['role']}\n")
            body = self.ids(m["content"] + "<|im_end|>")
            tail = self.ids("\n")
            train = m["role"] == "assistant"
            ids += head + body + tail
            mask += [False] * len(head) + [train] * len(body) + [False] * len(tail)
        return ids, mask


def batch(data, items, pad=0):
    seqs = [data.encode(rec["messages"]) for rec, _ in items]
    length = max(len(ids) for ids, _ in seqs) - 1
    inputs = torch.full((len(seqs), length), pad)
    targets = torch.full((len(seqs), length), pad)
    mask = torch.zeros(len(seqs), length, dtype=torch.bool)
    for r, (ids, m) in enumerate(seqs):
        n = len(ids) - 1
        inputs[r, :n] = torch.tensor(ids[:-1])
        targets[r, :n] = torch.tensor(ids[1:])
        mask[r, :n] = torch.tensor(m[1:])
    pixels = torch.stack([data.pixels(rec, base) for rec, base in items])
    return inputs, targets, mask, pixels


class PatchEncoder(torch.nn.Module):
    """One strided convolution to the same token grid: a diagnostic stand-in encoder."""
    def __init__(self, size, tokens, dim):
        super().__init__()
        side = int(round(tokens ** 0.5))
        self.conv = torch.nn.Conv2d(3, dim, size // side, stride=size // side)

    def forward_features(self, x):
        return self.conv(x)


class PlainCnn(torch.nn.Module):
    """Stride-2 3x3 conv + BatchNorm2d + GELU down to the same token grid (a diagnostic)."""
    def __init__(self, size, tokens, dim):
        super().__init__()
        side, layers, c = int(round(tokens ** 0.5)), [], 3
        widths = [16, 32, 48, dim][-int(math.log2(size // side)):]
        for o in widths:
            layers += [torch.nn.Conv2d(c, o, 3, 2, 1), torch.nn.BatchNorm2d(o), torch.nn.GELU()]
            c = o
        self.net = torch.nn.Sequential(*layers)

    def forward_features(self, x):
        return self.net(x)


class Vlm(torch.nn.Module):
    def __init__(self, encoder, projector, lm, image_id):
        super().__init__()
        self.vision_tower, self.multi_modal_projector, self.language = encoder, projector, lm
        self.image_id = image_id

    def embeds(self, inputs, pixels):
        feats = self.vision_tower.forward_features(pixels).flatten(2).transpose(1, 2)
        feats = self.multi_modal_projector(feats)
        e = self.language.get_input_embeddings()(inputs)
        pos = (inputs == self.image_id).unsqueeze(-1)
        return e.masked_scatter(pos, feats.reshape(-1, e.shape[-1]).to(e.dtype))

    def nll(self, inputs, targets, mask, pixels):
        logits = self.language(inputs_embeds=self.embeds(inputs, pixels), use_cache=False).logits
        nll = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
        correct = (logits.argmax(-1) == targets) & mask
        return (nll * mask.flatten()).sum(), int(correct.sum())


def lr_at(step, stage, total):
    lr, warm = stage["lr"], stage.get("warmup_steps", 0)
    min_lr = stage.get("min_lr", lr / 10)
    if step < warm:
        return lr * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * min(1.0, t)))


def validate(model, data, families, n_batches, micro, rng):
    """Mean assistant-token loss with the right images and with the batch's images rotated."""
    model.eval()
    sums = [0.0, 0.0]
    tokens = 0
    with torch.no_grad():
        for b in range(n_batches):
            items = []
            for i in range(micro):
                recs = data.split(families[(b * micro + i) % len(families)], "val")
                items.append(recs[rng.randrange(10**9) % len(recs)])
            inputs, targets, mask, pixels = batch(data, items)
            tokens += int(mask.sum())
            sums[0] += float(model.nll(inputs, targets, mask, pixels)[0])
            sums[1] += float(model.nll(inputs, targets, mask, pixels.roll(1, 0))[0])
    model.train()
    return sums[0] / tokens, sums[1] / tokens


@torch.no_grad()
def exact_match(model, data, families, per_task, max_new):
    model.eval()
    im_end = data.tok.token_to_id("<|im_end|>")
    out = {}
    for fam in families:
        hits = total = 0
        for rec, base in data.split(fam, "test")[:per_task]:
            msgs = rec["messages"]
            pixels = data.pixels(rec, base).unsqueeze(0)
            history = []
            for i, m in enumerate(msgs):
                if m["role"] != "assistant":
                    history.append(m)
                    continue
                ids, _ = data.encode(history)
                ids += data.ids("<|im_start|>assistant\n")
                gen = []
                for _ in range(max_new):
                    inp = torch.tensor([ids + gen])
                    logits = model.language(inputs_embeds=model.embeds(inp, pixels), use_cache=False).logits
                    nxt = int(logits[0, -1].argmax())
                    if nxt == im_end:
                        break
                    gen.append(nxt)
                hits += normalize(data.tok.decode(gen)) == normalize(m["content"])
                total += 1
                history.append(m)  # reference answers as history, as autoneural eval
        out[fam] = 100.0 * hits / max(1, total)
    model.train()
    return out


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--experiment", default=os.path.join(here, "..", "experiments", "quickstart.toml"))
    ap.add_argument("--tokenizer", default=os.path.join(here, "..", "runs", "quickstart", "tokenizer",
                                                        "tokenizer.json"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps-scale", type=float, default=1.0, help="multiply every stage's steps")
    ap.add_argument("--eval-per-task", type=int, default=30)
    ap.add_argument("--families", default=None, help="comma-separated: train and evaluate only these")
    ap.add_argument("--encoder", default="mobilenetv5", choices=["mobilenetv5", "patch", "cnn"],
                    help="patch: a single 16x16 patch-embedding convolution instead (a diagnostic)")
    ap.add_argument("--vision-norm", default=None, choices=["rms", "batch"], help="override [model.vision] norm")
    ap.add_argument("--layer-scale", type=float, default=None, help="override [model.vision] layer_scale_init")
    ap.add_argument("--stages", default=None, help="comma-separated stage names to run")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    with open(args.experiment, "rb") as f:
        exp = tomllib.load(f)
    if args.vision_norm:
        exp["model"]["vision"]["norm"] = args.vision_norm
    if args.layer_scale is not None:
        exp["model"]["vision"]["layer_scale_init"] = args.layer_scale
    tok = Tokenizer.from_file(args.tokenizer)
    base_vocab = tok.get_vocab_size()
    image_id = tok.token_to_id("<image>")
    vocab = max(base_vocab, image_id + 1)
    encoder, projector, lm, shapes = build(exp, vocab)
    with torch.no_grad():
        image_tokens = encoder.forward_features(torch.zeros(1, 3, shapes.image_size, shapes.image_size)).flatten(2).shape[2]
    if args.encoder == "patch":
        encoder = PatchEncoder(shapes.image_size, image_tokens, shapes.num_features)
    if args.encoder == "cnn":
        encoder = PlainCnn(shapes.image_size, image_tokens, shapes.num_features)
    model = Vlm(encoder, projector, lm, image_id)
    model.train()
    data = Data(os.path.dirname(os.path.abspath(args.experiment)), exp, tok, image_tokens, image_id)
    families = sorted(os.listdir(data.dir))
    families = [f for f in families if os.path.isdir(os.path.join(data.dir, f))]
    if args.families:
        families = args.families.split(",")
    parts = {"vision": model.vision_tower, "projector": model.multi_modal_projector, "language": model.language}
    print(json.dumps({"params": sum(p.numel() for p in model.parameters()), "image_tokens": image_tokens,
                      "vocab": vocab, "families": families}), flush=True)
    for stage in exp["stage"]:
        if args.stages and stage["name"] not in args.stages.split(","):
            continue
        steps = max(1, int(stage["steps"] * args.steps_scale))
        trainable = [p for name in stage["train"] for p in parts[name].parameters()]
        for p in model.parameters():
            p.requires_grad_(False)
        for p in trainable:
            p.requires_grad_(True)
        # One parameter group per trained part, at the stage's rate times its `lr_scale`.
        scale = stage.get("lr_scale", {})
        groups = [{"params": list(parts[name].parameters()), "scale": scale.get(name, 1.0)} for name in stage["train"]]
        optim = torch.optim.AdamW(groups, lr=stage["lr"], betas=(stage.get("beta1", 0.9), stage.get("beta2", 0.95)),
                                  eps=1e-8, weight_decay=stage.get("weight_decay", 0.0))
        mixture = stage.get("mixture", PAPER_MIXTURE)
        names = [f for f in mixture if f in families] or families
        weights = [mixture[f] for f in names]
        micro = stage.get("micro_batch", 16)
        t0 = time.perf_counter()
        for step in range(steps):
            for g in optim.param_groups:
                g["lr"] = lr_at(step, stage, steps) * g["scale"]
            items = []
            for _ in range(micro):
                recs = data.split(rng.choices(names, weights)[0], "train")
                items.append(recs[rng.randrange(len(recs))])
            inputs, targets, mask, pixels = batch(data, items)
            nll, correct = model.nll(inputs, targets, mask, pixels)
            n = int(mask.sum())
            (nll / n).backward()
            torch.nn.utils.clip_grad_norm_(trainable, stage.get("grad_clip", 1.0))
            optim.step()
            optim.zero_grad(set_to_none=True)
            if (step + 1) % stage.get("log_every", 25) == 0 or step + 1 == steps:
                with torch.no_grad():
                    # How much the image tokens differ between the batch's images, relative
                    # to their size (0: the encoder gives every image the same tokens).
                    f = model.multi_modal_projector(model.vision_tower.forward_features(pixels).flatten(2).transpose(1, 2))
                    spread = float(f.std(0).mean() / (f.pow(2).mean().sqrt() + 1e-12))
                print(json.dumps({"feature_spread": spread, "stage": stage["name"], "step": step + 1, "loss": float(nll) / n,
                                  "token_acc": correct / n, "samples_per_s": (step + 1) * micro /
                                  (time.perf_counter() - t0)}), flush=True)
        right, shuffled = validate(model, data, families, 8, micro, random.Random(1))
        print(json.dumps({"stage": stage["name"], "val_loss": right, "val_loss_images_shuffled": shuffled}),
              flush=True)
    ev = exp.get("eval", {})
    print(json.dumps({"exact_match": exact_match(model, data, families, args.eval_per_task,
                                                  ev.get("max_new_tokens", 8))}), flush=True)


if __name__ == "__main__":
    main()
