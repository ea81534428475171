#!/usr/bin/env python3
"""Golden fixtures for the vision encoders, connectors and VLMs, from timm and transformers.

Writes under tests/fixtures/vision/:
  mnv5-tiny-same/     timm MobileNetV5 with every block kind, TF-"same" padding, an odd
                      70x58 input (fusion adapter resizes bilinearly)
  mnv5-tiny-sym/      the same blocks with symmetric padding, 64x64 (adapter avg-pools)
  mnv5-300m-keys.json timm mobilenetv5_300m_enc: every key and shape, parameter count
  siglip2-tiny/       transformers Siglip2VisionModel; inputs whose patch grids upsample
                      and downsample the position table
  siglip-tiny/        transformers SiglipVisionModel (conv patch embedding), native size
  lfm2-vl-tiny/       a transformers LFM2-VL checkpoint + processor outputs + greedy ids
  autoneural-tiny/    an AutoNeural checkpoint assembled from timm + an MLP + transformers
                      LFM2, with its greedy continuation for an image prompt

Weights are random, with norms and layer scales drawn away from their init so that every
parameter matters. Run on a developer machine (never in CI):
    pip install torch transformers timm safetensors pillow
    python scripts/make_vision_fixtures.py
"""
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from safetensors.torch import save_file

import timm
from timm.models._efficientnet_builder import decode_arch_def
from timm.models.mobilenetv5 import MobileNetV5
from timm.layers import RmsNorm2d

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "tests", "fixtures", "vision")
SCRIPT = "scripts/make_vision_fixtures.py"
sys.path.insert(0, HERE)
import fixture_dir  # noqa: E402
LFM2_FIXTURE = os.path.join(HERE, "..", "tests", "fixtures", "lfm2", "hybrid-hub-bf16")

TINY_BLOCKS = [
    ["er_r1_k3_s2_e4_c16", "er_r1_k3_s1_e2_c16"],
    ["uir_r1_a3_k5_s2_e4_c24", "uir_r1_a5_k0_s1_e2_c24"],
    ["uir_r1_a3_k3_s2_e4_c32", "mqa_r1_k3_h2_v2_s1_d8_c32", "uir_r1_a0_k0_s1_e2_c32"],
    ["uir_r1_a0_k3_p3_s2_e3_c48", "mqa_r1_k3_h4_s1_d12_c48", "uir_r1_a0_k0_s1_e2_c48"],
]


def perturb(model, seed):
    """Norm weights ~1 +- 0.3, layer scales ~0.5, biases small: every parameter shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.copy_(0.5 + 0.2 * torch.randn(p.shape, generator=g))
            elif p.ndim == 1 and ("norm" in name or "bn" in name or "layernorm" in name or "layer_norm" in name) \
                    and name.endswith("weight"):
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))
            elif p.ndim == 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))


def tensors(model, prefix=""):
    return {prefix + k: v.detach().contiguous().clone() for k, v in model.state_dict().items()
            if not k.endswith("position_ids")}


def hub_style(sd, tower):
    """transformers 5 saves SigLIP towers flat (`embeddings.*`); hub checkpoints nest them
    under `vision_model.` (and transformers loads both)."""
    return {(k.replace(tower, tower + "vision_model.", 1) if k.startswith(tower) else k): v for k, v in sd.items()}


# Fixture directories claimed so far, and the files a user had in each (recorded at the end).
CLAIMED = {}


def fresh(name):
    """Fixture directory `name`, emptied of what this script wrote there before (a user's
    files stay; a directory this script did not write is refused)."""
    d = os.path.join(ROOT, name)
    CLAIMED[d] = fixture_dir.claim(d, SCRIPT)
    return d


def dump(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f)


def flat(t):
    return [round(float(x), 7) for x in t.detach().flatten().tolist()]


def tiny_mnv5(pad_type, out_res, num_features=64, norm="rms"):
    norm_layer = {"rms": RmsNorm2d, "batch": torch.nn.BatchNorm2d}[norm]
    return MobileNetV5(decode_arch_def(TINY_BLOCKS), num_classes=0, stem_size=8, num_features=num_features,
                       pad_type=pad_type, msfa_output_resolution=out_res, norm_layer=norm_layer,
                       layer_scale_init_value=1e-5, global_pool="").eval()


def perturb_running_stats(model, seed):
    """BatchNorm running statistics away from (0, 1), so inference normalisation shows."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))


def mnv5_fixture(name, pad_type, hw, seed, norm="rms"):
    d = fresh(name)
    model = tiny_mnv5(pad_type, 2, norm=norm)
    perturb(model, seed)
    perturb_running_stats(model, seed + 7)
    save_file(tensors(model), os.path.join(d, "model.safetensors"))
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.rand((1, 3, *hw), generator=g)
    with torch.no_grad():
        y = model.forward_features(x)
    arch = {"block_args": TINY_BLOCKS, "stem_size": 8, "pad_type": pad_type, "msfa_output_resolution": 2,
            "num_features": 64, "image_size": hw[0], "layer_scale_init_value": 1e-5, "norm": norm}
    dump(os.path.join(d, "arch.json"), arch)
    dump(os.path.join(d, "golden.json"), {"input_shape": list(x.shape), "input": flat(x),
                                          "output_shape": list(y.shape), "output": flat(y)})


def mnv5_300m_keys():
    m = timm.create_model("mobilenetv5_300m_enc")
    sd = m.state_dict()
    dump(os.path.join(ROOT, "mnv5-300m-keys.json"), {
        "num_params": sum(p.numel() for p in m.parameters()),
        "keys": {k: list(v.shape) for k, v in sd.items()},
        "output_shape_768": [1, 2048, 16, 16],
    })


def patchify(img, p):
    c, h, w = img.shape
    return img.reshape(c, h // p, p, w // p, p).permute(1, 3, 2, 4, 0).reshape((h // p) * (w // p), p * p * c)


TINY_VIT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, patch_size=8,
                vision_use_head=False)


def vit_checkpoint(name, config_cls, model_cls, model_type, seed, weights_of, **extra):
    """A random tiny SigLIP-family tower saved as `name` (weights laid out by `weights_of`)."""
    d = fresh(name)
    cfg = config_cls(**TINY_VIT, **extra)
    model = model_cls(cfg).eval()
    perturb(model, seed)
    save_file(weights_of(tensors(model)), os.path.join(d, "model.safetensors"))
    cfg_d = cfg.to_dict()
    cfg_d["model_type"] = model_type
    dump(os.path.join(d, "config.json"), cfg_d)
    return d, model


def siglip2_fixture():
    from transformers import Siglip2VisionConfig, Siglip2VisionModel
    # transformers 5's own flat layout
    d, model = vit_checkpoint("siglip2-tiny", Siglip2VisionConfig, Siglip2VisionModel, "siglip2_vision_model", 11,
                              lambda sd: sd, num_patches=16)
    cases = []
    g = torch.Generator().manual_seed(12)
    for hw in [(40, 56), (24, 16), (32, 32)]:
        img = torch.rand((3, *hw), generator=g) * 2 - 1
        n = (hw[0] // 8) * (hw[1] // 8)
        with torch.no_grad():
            out = model(pixel_values=patchify(img, 8)[None], pixel_attention_mask=torch.ones(1, n, dtype=torch.long),
                        spatial_shapes=torch.tensor([[hw[0] // 8, hw[1] // 8]])).last_hidden_state
        cases.append({"input_shape": [1, 3, *hw], "input": flat(img), "output_shape": list(out.shape),
                      "output": flat(out)})
    dump(os.path.join(d, "golden.json"), {"cases": cases})


def siglip_fixture():
    from transformers import SiglipVisionConfig, SiglipVisionModel
    # the hub's nested layout
    d, model = vit_checkpoint("siglip-tiny", SiglipVisionConfig, SiglipVisionModel, "siglip_vision_model", 21,
                              lambda sd: hub_style(sd, ""), image_size=32)
    g = torch.Generator().manual_seed(22)
    img = torch.rand((1, 3, 32, 32), generator=g) * 2 - 1
    with torch.no_grad():
        out = model(pixel_values=img).last_hidden_state
    dump(os.path.join(d, "golden.json"), {"cases": [{"input_shape": [1, 3, 32, 32], "input": flat(img),
                                                     "output_shape": list(out.shape), "output": flat(out)}]})


def vlm_tokenizer(d):
    """The LFM2 fixture tokenizer plus LFM2-VL's image tokens (ids 320, 321, 322)."""
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(LFM2_FIXTURE)
    tok.add_special_tokens({"additional_special_tokens": ["<image>", "<|image_start|>", "<|image_end|>"]})
    tok.save_pretrained(d)
    return tok


def text_model(vocab, seed):
    from transformers import Lfm2Config, Lfm2ForCausalLM
    cfg = Lfm2Config(vocab_size=vocab, hidden_size=64, intermediate_size=192, num_hidden_layers=4,
                     num_attention_heads=4, num_key_value_heads=2, layer_types=["conv", "full_attention", "conv",
                                                                                "full_attention"],
                     tie_word_embeddings=True, bos_token_id=1, eos_token_id=7, pad_token_id=0, conv_L_cache=3)
    model = Lfm2ForCausalLM(cfg).eval()
    perturb(model, seed)
    return cfg, model


def greedy(step, embeds, n):
    """Greedy ids from a function mapping input embeddings to logits (no cache)."""
    out = []
    for _ in range(n):
        logits = step(embeds)
        nxt = int(logits[0, -1].argmax())
        out.append(nxt)
        embeds = torch.cat([embeds, step.embed(torch.tensor([[nxt]]))], dim=1)
    return out


def save_image(path, hw, seed):
    rng = np.random.default_rng(seed)
    # A smooth picture (gradients + blobs), so bilinear resizes are well conditioned.
    y, x = np.mgrid[0:hw[0], 0:hw[1]]
    img = np.stack([128 + 100 * np.sin(x / 5 + k) * np.cos(y / 7 - k) for k in range(3)], -1)
    img += rng.normal(0, 8, img.shape)
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path)


def lfm2_vl_fixture():
    from transformers import (Lfm2VlConfig, Lfm2VlForConditionalGeneration, Lfm2VlImageProcessorFast,
                              Lfm2VlProcessor, Siglip2VisionConfig)
    d = fresh("lfm2-vl-tiny")
    tok = vlm_tokenizer(d)
    tcfg, _ = text_model(336, 0)
    vcfg = Siglip2VisionConfig(**TINY_VIT, num_patches=16)
    cfg = Lfm2VlConfig(vision_config=vcfg.to_dict(), text_config=tcfg.to_dict(), projector_hidden_size=48,
                       image_token_id=tok.convert_tokens_to_ids("<image>"), downsample_factor=2,
                       projector_use_layernorm=True)
    model = Lfm2VlForConditionalGeneration(cfg).eval()
    perturb(model, 31)
    save_file(hub_style(tensors(model), "model.vision_tower."), os.path.join(d, "model.safetensors"))
    cfg.save_pretrained(d)
    # transformers reads the hub layout back to the same weights.
    again = Lfm2VlForConditionalGeneration.from_pretrained(d).eval()
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k
    ip = Lfm2VlImageProcessorFast(encoder_patch_size=8, downsample_factor=2, min_image_tokens=4, max_image_tokens=16,
                                  do_image_splitting=False, use_thumbnail=False)
    proc = Lfm2VlProcessor(image_processor=ip, tokenizer=tok, chat_template=tok.chat_template)
    ip.save_pretrained(d)
    save_image(os.path.join(d, "image.png"), (48, 64), 32)
    img = Image.open(os.path.join(d, "image.png")).convert("RGB")
    prompt = "<image>What is in the picture?"
    text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    inputs = proc(text=text, images=[img], return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs)
        gen = model.generate(**inputs, max_new_tokens=10, do_sample=False, eos_token_id=None)
    new = gen[0, inputs["input_ids"].shape[1]:].tolist()
    dump(os.path.join(d, "golden.json"), {
        "prompt": prompt, "prompt_ids": inputs["input_ids"][0].tolist(),
        "last_logits": flat(out.logits[0, -1]), "greedy_ids": new})


def autoneural_fixture():
    d = fresh("autoneural-tiny")
    tok = vlm_tokenizer(d)
    image_token_id = tok.convert_tokens_to_ids("<image>")
    tcfg, lm = text_model(336, 1)
    enc = tiny_mnv5("same", 4)
    perturb(enc, 41)
    proj = nn.ModuleDict({"linear_1": nn.Linear(64, 96), "linear_2": nn.Linear(96, 64)})
    perturb(proj, 42)
    sd = {}
    sd.update(tensors(enc, "model.vision_tower.timm_model."))
    sd.update(tensors(proj, "model.multi_modal_projector."))
    sd.update({("model.language_model." + k[len("model."):]): v for k, v in tensors(lm).items()
               if k.startswith("model.")})
    save_file(sd, os.path.join(d, "model.safetensors"))
    text_cfg = tcfg.to_dict()
    config = {
        "architectures": ["AutoNeuralForConditionalGeneration"], "model_type": "autoneural",
        "vision_config": {"block_args": TINY_BLOCKS, "stem_size": 8, "pad_type": "same",
                          "msfa_output_resolution": 4, "num_features": 64, "image_size": 64},
        "text_config": text_cfg, "projector_hidden_size": 96, "projector_bias": True,
        "image_token_id": image_token_id, "tie_word_embeddings": True,
    }
    dump(os.path.join(d, "config.json"), config)
    save_image(os.path.join(d, "image.png"), (64, 64), 43)
    pixels = torch.from_numpy(np.asarray(Image.open(os.path.join(d, "image.png")).convert("RGB"))).float()
    pixels = (pixels / 255.0).permute(2, 0, 1)[None]
    prompt = "<image>Describe the image."
    text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    segments = text.split("<image>")
    with torch.no_grad():
        feats = enc.forward_features(pixels)  # [1, 64, 4, 4]
        feats = feats.flatten(2).transpose(1, 2)[0]  # [16, 64] row-major over the grid
        feats = proj["linear_2"](nn.functional.gelu(proj["linear_1"](feats)))
    ids = tok(segments[0], add_special_tokens=False)["input_ids"]
    for seg in segments[1:]:
        ids += [image_token_id] * feats.shape[0] + tok(seg, add_special_tokens=False)["input_ids"]
    emb = lm.get_input_embeddings()

    class Step:
        def embed(self, t):
            return emb(t)

        def __call__(self, e):
            return lm(inputs_embeds=e).logits

    with torch.no_grad():
        e = emb(torch.tensor([ids]))
        mask = torch.tensor(ids) == image_token_id
        e[0, mask] = feats
        logits = lm(inputs_embeds=e).logits
        new = greedy(Step(), e, 10)
    dump(os.path.join(d, "golden.json"), {"prompt": prompt, "prompt_ids": ids, "last_logits": flat(logits[0, -1]),
                                          "greedy_ids": new, "image_features": flat(feats)})


def image_fixtures():
    """Decoding and resizing references from PIL: EXIF orientation, and a bilinear resize
    as the AutoNeural preprocessing does it."""
    d = fresh("images")
    # A 6x4 picture whose EXIF says "rotate 90 degrees clockwise to view" (orientation 6).
    rng = np.random.default_rng(5)
    raw = rng.integers(0, 255, (4, 6, 3), dtype=np.uint8)
    img = Image.fromarray(raw)
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(os.path.join(d, "exif-rotate90.jpg"), exif=exif, quality=100, subsampling=0)
    from PIL import ImageOps
    upright = np.asarray(ImageOps.exif_transpose(Image.open(os.path.join(d, "exif-rotate90.jpg"))).convert("RGB"))
    # A 40x30 picture resized to 64x64 (upscale) and 16x16 (downscale, antialiased).
    save_image(os.path.join(d, "small.png"), (30, 40), 6)
    src = Image.open(os.path.join(d, "small.png")).convert("RGB")
    resized = {str(s): np.asarray(src.resize((s, s), Image.BILINEAR)).flatten().tolist() for s in (64, 16)}
    dump(os.path.join(d, "golden.json"), {"exif_upright_shape": list(upright.shape),
                                          "exif_upright": upright.flatten().tolist(), "resized": resized})


def main():
    torch.manual_seed(0)
    os.makedirs(ROOT, exist_ok=True)
    mnv5_fixture("mnv5-tiny-same", "same", (70, 58), 1)
    mnv5_fixture("mnv5-tiny-sym", "", (64, 64), 2)
    mnv5_fixture("mnv5-tiny-bn", "same", (64, 64), 3, norm="batch")
    mnv5_300m_keys()
    siglip2_fixture()
    siglip_fixture()
    lfm2_vl_fixture()
    autoneural_fixture()
    image_fixtures()
    for d, users in CLAIMED.items():
        fixture_dir.record(d, SCRIPT, users)
    for root, _, files in os.walk(ROOT):
        for f in files:
            size = os.path.getsize(os.path.join(root, f))
            assert size < 2 * 1024 * 1024, f"{f} is {size} bytes"
    print("fixtures written to", os.path.normpath(ROOT))


if __name__ == "__main__":
    sys.exit(main())
