#!/usr/bin/env python3
"""Write a small random LFM3-VL vision tower and projector (transformers' `Lfm3VlModel`
parts) with transformers' outputs, as a golden fixture in tests/fixtures/vision/lfm3-vl-tiny/.

The tower has every LFM3-VL layer kind (gated 2-D convolutions over the patch grid, and
bidirectional GQA attention with axial 2-D RoPE); the image is non-square (so rows and
columns of the grid differ), prepared by Qwen2-VL's image processor as LFM3-VL's processor
does (smart resize to multiples of patch x merge, CLIP mean/std, the frame repeated over the
temporal patch, patches flattened in spatial-merge order). Stored: the weights with the
published key names (`patchifier`, `q_layernorm`, `k_layernorm`; transformers renames them
when it loads), `config.json`, `preprocessor_config.json`, the image, and `golden.safetensors`
with the processor's `pixel_values`, `image_grid_thw`, the tower's output and the
projector's.

Run on a developer machine (never in CI), with transformers >= 5.25:
    python scripts/make_lfm3_vl_fixture.py
"""
import json
import os
import shutil
import sys

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from transformers import Lfm3VlConfig, Lfm3VlModel, Qwen2VLImageProcessor

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "vision")
RENAME = [(".patch_embed.", ".patchifier."), (".q_norm.", ".q_layernorm."), (".k_norm.", ".k_layernorm.")]


def main():
    out = os.path.join(ROOT, "lfm3-vl-tiny")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    torch.manual_seed(21)
    vision = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, patch_size=4, temporal_patch_size=2, spatial_merge_size=2,
                  conv_kernel_size=3, norm_eps=1e-5, rope_parameters={"rope_type": "axial", "rope_theta": 10000.0})
    text = dict(model_type="lfm3", vocab_size=320, pad_token_id=0, bos_token_id=1, eos_token_id=7, hidden_size=48, intermediate_size=64, num_hidden_layers=2,
                layer_types=["conv", "full_attention"], num_attention_heads=4, num_key_value_heads=2, head_dim=12)
    cfg = Lfm3VlConfig(vision_config=vision, text_config=text, projector_hidden_size=80, image_token_id=300,
                       vision_start_token_id=301, vision_end_token_id=302, video_token_id=303)
    model = Lfm3VlModel(cfg).eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif p.dim() == 1:
                p.copy_(torch.randn_like(p) * 0.1)
            elif "spatial_conv" in n:
                p.copy_(torch.randn_like(p) * 0.3)
            else:
                p.copy_(torch.randn_like(p) * (1.2 / p.shape[-1] ** 0.5))
    proc = Qwen2VLImageProcessor(patch_size=4, temporal_patch_size=2, merge_size=2,
                                 size={"shortest_edge": 8 * 8 * 4, "longest_edge": 8 * 8 * 40})
    rng = np.random.default_rng(3)
    image = Image.fromarray(rng.integers(0, 256, (45, 70, 3), dtype=np.uint8))
    image.save(os.path.join(out, "image.png"))
    inputs = proc(images=[image], return_tensors="pt")
    pixel_values, grid = inputs["pixel_values"], inputs["image_grid_thw"]
    with torch.no_grad():
        tower = model.vision_tower(pixel_values, grid_thw=grid).last_hidden_state
        features = model.multi_modal_projector(tower)
    sd = {}
    for k, v in model.state_dict().items():
        if not k.startswith(("vision_tower.", "multi_modal_projector.")):
            continue
        key = "model." + k
        for a, b in RENAME:
            key = key.replace(a, b)
        sd[key] = v.detach().float().contiguous()
    save_file(sd, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    conf = cfg.to_dict()
    conf["architectures"] = ["Lfm3VlForConditionalGeneration"]
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(conf, f, indent=2)
    proc.save_pretrained(out)
    golden = {"pixel_values": pixel_values.float().contiguous(), "image_grid_thw": grid.to(torch.int64).contiguous(),
              "tower": tower.float().contiguous(), "features": features.float().contiguous()}
    # More shapes for the processor alone: tall (downscaled more on one side) and tiny
    # (upscaled to the minimum pixel count).
    for name, (h, w) in [("tall", (90, 23)), ("tiny", (7, 5))]:
        other = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        other.save(os.path.join(out, f"image_{name}.png"))
        o = proc(images=[other], return_tensors="pt")
        golden[f"pixel_values_{name}"] = o["pixel_values"].float().contiguous()
        golden[f"image_grid_thw_{name}"] = o["image_grid_thw"].to(torch.int64).contiguous()
    save_file(golden, os.path.join(out, "golden.safetensors"))
    print(f"lfm3-vl-tiny: image 70x45 -> grid {grid.tolist()}, pixel_values {list(pixel_values.shape)}, "
          f"features {list(features.shape)}")


if __name__ == "__main__":
    sys.exit(main())
