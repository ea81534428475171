#!/usr/bin/env python3
"""Can an encoder learn from scratch on the synthetic images? A diagnostic behind
docs/training.md ("Why the quickstart's encoder uses batch norm"): the encoder's features,
mean-pooled, feed one linear layer trained to name the word of each OCR image (40
classes, chance loss ln 40 = 3.69). AdamW, batches of 16, fp32 on CPU. Prints the training
loss and the accuracy on held-out test images and on as many training images every 100
steps: the gap between the two is memorisation (docs/training.md, "What the quickstart
gives").

    python scripts/encoder_probe.py --encoder mobilenetv5 --norm rms --layer-scale 1e-5 --steps 400
    python scripts/encoder_probe.py --encoder mobilenetv5 --norm batch --layer-scale 1.0 --steps 800
    python scripts/encoder_probe.py --encoder cnn --norm batch --steps 400
    python scripts/encoder_probe.py --norm batch --layer-scale 1.0 --lr 5e-3 --steps 1000 --data DIR
    python scripts/encoder_probe.py --norm batch --layer-scale 1.0 --lr 5e-3 --steps 600 --size 96 --data DIR96
"""
import argparse
import os
import random

import torch
from timm.layers import LayerNorm2d, RmsNorm2d

from reference_vlm import MNV5_PRESETS
from train_reference import Data

NORMS = {"rms": RmsNorm2d, "layer": LayerNorm2d, "batch": torch.nn.BatchNorm2d}
TINY = MNV5_PRESETS["mobilenetv5_tiny"][0]


class Cnn(torch.nn.Module):
    """Four stride-2 3x3 convs, each with the norm and GELU: 64 px -> a 4x4 grid of 64."""
    def __init__(self, norm):
        super().__init__()
        layers, c = [], 3
        for o in [16, 32, 48, 64]:
            layers += [torch.nn.Conv2d(c, o, 3, 2, 1), NORMS[norm](o), torch.nn.GELU()]
            c = o
        self.net = torch.nn.Sequential(*layers)

    def forward_features(self, x):
        return self.net(x)


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--data", default=os.path.join(here, "..", "data", "synthetic-64"))
    ap.add_argument("--encoder", default="mobilenetv5", choices=["mobilenetv5", "cnn"])
    ap.add_argument("--norm", default="rms", choices=sorted(NORMS))
    ap.add_argument("--layer-scale", type=float, default=1e-5)
    ap.add_argument("--no-attention", action="store_true", help="MobileNetV5 without its attention blocks")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--size", type=int, default=64, help="side the images are resized to (the encoder input)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.encoder == "cnn":
        enc, dim = Cnn(args.norm), 64
    else:
        from timm.models._efficientnet_builder import decode_arch_def
        from timm.models.mobilenetv5 import MobileNetV5
        blocks = [[b for b in stage if not (args.no_attention and b.startswith("mqa"))] for stage in TINY]
        enc = MobileNetV5(decode_arch_def(blocks), num_classes=0, stem_size=8, num_features=64, pad_type="same",
                          msfa_output_resolution=4, norm_layer=NORMS[args.norm],
                          layer_scale_init_value=args.layer_scale, global_pool="")
        dim = 64
    data = Data.__new__(Data)
    data.dir, data.size, data.records = os.path.normpath(args.data), args.size, {}
    records = data.split("ocr", "train")
    words = sorted({r["messages"][1]["content"] for r, _ in records})
    head = torch.nn.Linear(dim, len(words))
    opt = torch.optim.AdamW(list(enc.parameters()) + list(head.parameters()), lr=args.lr, betas=(0.9, 0.95))
    test = data.split("ocr", "test")[:300]

    def accuracy(items):
        """Top-1 accuracy on `items` with the encoder in eval mode (running statistics)."""
        enc.eval()
        with torch.no_grad():
            x = torch.stack([data.pixels(r, b) for r, b in items])
            y = torch.tensor([words.index(r["messages"][1]["content"]) for r, _ in items])
            acc = float((head(enc.forward_features(x).flatten(2).mean(2)).argmax(1) == y).float().mean())
        enc.train()
        return acc

    rng = random.Random(0)
    for step in range(args.steps):
        items = [records[rng.randrange(len(records))] for _ in range(16)]
        x = torch.stack([data.pixels(r, b) for r, b in items])
        y = torch.tensor([words.index(r["messages"][1]["content"]) for r, _ in items])
        logits = head(enc.forward_features(x).flatten(2).mean(2))
        loss = torch.nn.functional.cross_entropy(logits, y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        if (step + 1) % 100 == 0:
            print(f"step {step + 1}: loss {float(loss.detach()):.3f}, held-out accuracy {accuracy(test):.3f}, "
                  f"training-set accuracy {accuracy(records[:len(test)]):.3f}", flush=True)


if __name__ == "__main__":
    main()
