#!/usr/bin/env python3
"""LFM2-VL's image processor and prompt expansion, as transformers does them, for
autoneural-model/tests/lfm2_vl_processor.rs.

Writes tests/fixtures/vision/lfm2-vl-tiles/:
  images/{large,small,wide,tall}.png  deterministic pictures (1100x900, 60x40, 1600x300,
                      300x1400; posterised so the PNGs stay small, with sharp edges that
                      the resize must smooth exactly as torchvision does)
  a tiny random LFM2-VL checkpoint whose processor (processor_config.json, transformers 5's
                      nested layout) tiles at 64 px with 8 px patches, so every picture but
                      the small one is split into tiles + a thumbnail; its tokenizer has the
                      tile markers <|img_row_R_col_C|> (R, C in 1..10) and <|img_thumbnail|>
  pixels.safetensors  the tiny processor's pixel values of every tile, unpadded, in NaFlex's
                      patch layout [patches, 8*8*3], stored losslessly as the uint8 values
                      they were normalised from (pixel = (u8 - 127.5) / 127.5, checked here)
  golden.json         transformers' default image processor config as it saves it; per
                      picture and processor: the tile grid, resized size, spatial shapes,
                      prompt ids; for the real defaults (512 px tiles, 16 px patches) per-tile
                      digests of the pixel values (sum, sum of squares, 512 sampled values);
                      prompt ids from a tokenizer without the marker tokens; the greedy ids and
                      last logits of the tiny model on a prompt with two tiled pictures; the
                      order transformers tries the tile grids in

Run on a developer machine (never in CI):
    pip install torch torchvision transformers==5.25.0 safetensors pillow
    python scripts/make_lfm2_vl_processor_fixtures.py [--full-pixels /tmp/lfm2-vl-default.safetensors]
--full-pixels also writes every default-config tile (uint8, [h, w, 3]) outside the repo, for
the test that compares all of them when AUTONEURAL_LFM2_VL_FULL_PIXELS names that file.
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "tests", "fixtures", "vision")
SCRIPT = "scripts/make_lfm2_vl_processor_fixtures.py"
sys.path.insert(0, HERE)
import fixture_dir  # noqa: E402
LFM2_FIXTURE = os.path.join(HERE, "..", "tests", "fixtures", "lfm2", "hybrid-hub-bf16")
PLAIN_TOKENIZER = os.path.join(ROOT, "lfm2-vl-tiny")

sys.path.insert(0, HERE)
from make_vision_fixtures import TINY_VIT, dump, flat, hub_style, perturb, tensors  # noqa: E402

IMAGES = {"large": (900, 1100), "small": (40, 60), "wide": (300, 1600), "tall": (1400, 300)}  # (h, w)
MARKERS = [f"<|img_row_{r}_col_{c}|>" for r in range(1, 11) for c in range(1, 11)]
TINY_PROCESSOR = dict(tile_size=64, encoder_patch_size=8, downsample_factor=2, min_image_tokens=4,
                      max_image_tokens=16, min_tiles=2, max_tiles=10, use_thumbnail=True, do_image_splitting=True)
PROMPT = "<image>What is in the picture?"
GREEDY_PROMPT = "<image>Compare this<image>with that."
GREEDY_IMAGES = ["large", "wide"]


def pattern(h, w, seed):
    """Smooth waves and a gradient, posterised to 16 levels (small PNGs), plus a checker band
    and thin stripes: sharp edges whose antialiased resize shows any difference in filter."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 128 + 90 * np.sin(x / (23 + seed) + y / 41)
    g = 128 + 90 * np.cos(np.hypot(x - w * 0.3, y - h * 0.6) / (17 + seed))
    b = (x * 255 / max(w - 1, 1)) * 0.6 + (y * 255 / max(h - 1, 1)) * 0.4
    img = np.stack([r, g, b], -1)
    img = np.floor(np.clip(img, 0, 255) / 16) * 16 + 8
    img[((x // 8 + y // 8) % 2 == 0) & (y > h * 0.2) & (y < h * 0.3)] = [250, 20, 20]
    img[((x + 2 * y) % 13 < 2) & (x > w * 0.7)] = [10, 10, 240]
    return img.astype(np.uint8)


def tokenizer(d):
    """The LFM2 fixture tokenizer plus LFM2-VL's image tokens, tile markers and thumbnail."""
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(LFM2_FIXTURE)
    tok.add_special_tokens({"additional_special_tokens": ["<image>", "<|image_start|>", "<|image_end|>",
                                                         "<|img_thumbnail|>"] + MARKERS})
    tok.save_pretrained(d)
    return tok


def text_config(vocab):
    from transformers import Lfm2Config
    return Lfm2Config(vocab_size=vocab, hidden_size=64, intermediate_size=96, block_multiple_of=32,
                     num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                     layer_types=["conv", "full_attention"], tie_word_embeddings=True, bos_token_id=1,
                     eos_token_id=7, pad_token_id=0, conv_L_cache=3)


def render(tok, prompt):
    return tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)


def unpadded_tiles(out):
    """pixel_values [tiles, max_patches, p*p*3] -> each tile's real patches."""
    pv, mask = out["pixel_values"], out["pixel_attention_mask"]
    return [pv[i, : int(mask[i].sum())] for i in range(pv.shape[0])]


def as_u8(t):
    """The uint8 values a normalised tile came from; asserts the round trip is exact."""
    u8 = torch.round(t * 127.5 + 127.5).clamp(0, 255).to(torch.uint8)
    again = (u8.float() - 127.5) / 127.5
    assert torch.equal(again, t), "pixel values are not (u8 - 127.5) / 127.5"
    return u8


def samples(n, count, seed):
    """Deterministic sample indices (an LCG the Rust test does not need: it reads them)."""
    rng = np.random.default_rng(seed)
    return sorted(set(int(i) for i in rng.integers(0, n, count)))


def digest(tile, seed):
    x = tile.double()
    idx = samples(tile.numel(), 512, seed)
    v = tile.flatten()
    return {"patches": list(tile.shape), "sum": float(x.sum()), "sum_sq": float((x * x).sum()),
            "samples": [[i, float(v[i])] for i in idx]}


def layout(ip, h, w, **kw):
    args = dict(downsample_factor=ip.downsample_factor, min_tiles=ip.min_tiles, max_tiles=ip.max_tiles,
                min_image_tokens=ip.min_image_tokens, max_image_tokens=ip.max_image_tokens,
                encoder_patch_size=ip.encoder_patch_size, tile_size=ip.tile_size,
                max_pixels_tolerance=ip.max_pixels_tolerance)
    args.update(kw)
    if not ip.do_image_splitting:
        args["min_tiles"] = args["max_tiles"] = 1
    split, rows, cols, rh, rw = ip._get_split_layout(h, w, **args)
    return {"split": bool(split), "rows": rows, "cols": cols, "resized": [rh, rw]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--full-pixels", help="also write every default-config tile to this safetensors file")
    args = ap.parse_args()

    from transformers import (AutoTokenizer, Lfm2VlConfig, Lfm2VlForConditionalGeneration, Lfm2VlImageProcessor,
                              Lfm2VlProcessor, Siglip2VisionConfig)
    torch.manual_seed(0)
    d = os.path.join(ROOT, "lfm2-vl-tiles")
    users = fixture_dir.claim(d, SCRIPT)
    os.makedirs(os.path.join(d, "images"), exist_ok=True)

    images = {}
    for seed, (name, (h, w)) in enumerate(IMAGES.items()):
        path = os.path.join(d, "images", f"{name}.png")
        Image.fromarray(pattern(h, w, seed)).save(path, optimize=True)
        images[name] = Image.open(path).convert("RGB")

    tok = tokenizer(d)
    vocab = 448
    assert len(tok) <= vocab
    tcfg = text_config(vocab)
    vcfg = Siglip2VisionConfig(**TINY_VIT, num_patches=16)
    cfg = Lfm2VlConfig(vision_config=vcfg.to_dict(), text_config=tcfg.to_dict(), projector_hidden_size=48,
                       image_token_id=tok.convert_tokens_to_ids("<image>"), downsample_factor=2,
                       projector_use_layernorm=True)
    model = Lfm2VlForConditionalGeneration(cfg).eval()
    perturb(model, 51)
    save_file(hub_style(tensors(model), "model.vision_tower."), os.path.join(d, "model.safetensors"))
    cfg.save_pretrained(d)

    tiny_ip = Lfm2VlImageProcessor(**TINY_PROCESSOR)
    tiny = Lfm2VlProcessor(image_processor=tiny_ip, tokenizer=tok, chat_template=tok.chat_template)
    tiny.save_pretrained(d)  # processor_config.json with the image processor nested
    default_ip = Lfm2VlImageProcessor()
    default = Lfm2VlProcessor(image_processor=default_ip, tokenizer=tok, chat_template=tok.chat_template)
    plain_tok = AutoTokenizer.from_pretrained(PLAIN_TOKENIZER)
    plain = Lfm2VlProcessor(image_processor=default_ip, tokenizer=plain_tok, chat_template=plain_tok.chat_template)

    golden = {"prompt": PROMPT, "default": {}, "tiny": {}, "no_markers": {},
              "default_config": json.loads(default_ip.to_json_string()),
              "target_ratios": {f"{a}-{b}": [list(r) for r in default_ip._target_ratios(a, b)]
                                for a, b in [(2, 10), (1, 4), (1, 12), (3, 7), (2, 30)]}}
    pixels = {}
    full = {}
    text = render(tok, PROMPT)
    for name, img in images.items():
        h, w = img.height, img.width
        # The real defaults: ids and pixel digests (the tiles are too large to store).
        out = default(text=text, images=[img], return_tensors="pt")
        tiles = unpadded_tiles(out)
        golden["default"][name] = {
            **layout(default_ip, h, w), "size": [h, w], "prompt_ids": out["input_ids"][0].tolist(),
            "spatial_shapes": out["spatial_shapes"].tolist(),
            "tiles": [digest(t, 1000 * k + len(name)) for k, t in enumerate(tiles)]}
        if args.full_pixels:
            for k, t in enumerate(tiles):
                full[f"{name}.{k}"] = as_u8(t).contiguous()
        # Without marker tokens in the vocabulary the markers are tokenized as text.
        out = plain(text=render(plain_tok, PROMPT), images=[img], return_tensors="pt")
        golden["no_markers"][name] = out["input_ids"][0].tolist()
        # The tiny checkpoint's processor: ids and every pixel.
        out = tiny(text=text, images=[img], return_tensors="pt")
        golden["tiny"][name] = {**layout(tiny_ip, h, w), "size": [h, w], "prompt_ids": out["input_ids"][0].tolist(),
                                "spatial_shapes": out["spatial_shapes"].tolist()}
        for k, t in enumerate(unpadded_tiles(out)):
            pixels[f"{name}.{k}"] = as_u8(t).contiguous()
    save_file(pixels, os.path.join(d, "pixels.safetensors"))
    if args.full_pixels:
        save_file(full, args.full_pixels)

    # Greedy decoding of the tiny model with two tiled pictures.
    pics = [images[n] for n in GREEDY_IMAGES]
    inputs = tiny(text=render(tok, GREEDY_PROMPT), images=pics, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
        gen = model.generate(**inputs, max_new_tokens=12, do_sample=False, eos_token_id=None)
    golden["greedy"] = {"prompt": GREEDY_PROMPT, "images": GREEDY_IMAGES,
                        "prompt_ids": inputs["input_ids"][0].tolist(), "last_logits": flat(logits[0, -1]),
                        "greedy_ids": gen[0, inputs["input_ids"].shape[1]:].tolist()}
    dump(os.path.join(d, "golden.json"), golden)
    fixture_dir.record(d, SCRIPT, users)

    total = 0
    for root, _, files in os.walk(d):
        for f in files:
            size = os.path.getsize(os.path.join(root, f))
            total += size
            assert size < 2 * 1024 * 1024, f"{f} is {size} bytes"
    print(f"fixtures written to {os.path.normpath(d)} ({total} bytes)")


if __name__ == "__main__":
    sys.exit(main())
