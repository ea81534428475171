#!/usr/bin/env python3
"""Write a small random LFM3-VL (transformers' `Lfm3VlForConditionalGeneration`: its vision
tower, projector and an LFM3 language model) with transformers' outputs, as a golden fixture
in tests/fixtures/vision/lfm3-vl-tiny/.

The tower has every LFM3-VL layer kind (gated 2-D convolutions over the patch grid, and
bidirectional GQA attention with axial 2-D RoPE); the image is non-square (so rows and
columns of the grid differ), prepared by Qwen2-VL's image processor as LFM3-VL's processor
does (smart resize to multiples of patch x merge, CLIP mean/std, the frame repeated over the
temporal patch, patches flattened in spatial-merge order). Stored: the weights with the
published key names (`patchifier`, `q_layernorm`, `k_layernorm`; transformers renames them
when it loads), `config.json`, `preprocessor_config.json`, the image, and `golden.safetensors`
with the processor's `pixel_values`, `image_grid_thw`, the tower's output and the
projector's; and `golden.json` with a chat prompt about the image as `Lfm3VlProcessor`
expands it (`<|vision_start|>`, one `<|image_pad|>` per merged token, `<|vision_end|>`), the
last position's logits and 10 greedy tokens. The tokenizer is the LFM2 fixtures' with those
three tokens added (ids 320-322); the language model has conv, sliding (window 16) and full
attention layers, so the 50-token prompt crosses the window.

Run on a developer machine (never in CI), with transformers >= 5.25:
    python scripts/make_lfm3_vl_fixture.py
"""
import json
import os
import sys

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fixture_dir  # noqa: E402
from transformers import (AutoTokenizer, Lfm3VlConfig, Lfm3VlForConditionalGeneration, Lfm3VlProcessor,
                          Qwen2VLImageProcessor, Qwen3VLVideoProcessor)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "vision")
RENAME = [(".patch_embed.", ".patchifier."), (".q_norm.", ".q_layernorm."), (".k_norm.", ".k_layernorm.")]
LFM2_FIXTURE = os.path.join(ROOT, "..", "lfm2", "hybrid-hub-bf16")


SCRIPT = "scripts/make_lfm3_vl_fixture.py"


def published_key(key):
    """A transformers state-dict key as the hub stores it."""
    key = "model." + key if not key.startswith(("model.", "lm_head.")) else key
    if key.startswith("model.vision_tower."):
        for a, b in RENAME:
            key = key.replace(a, b)
    return key.replace(".self_attn.g_proj.", ".self_attn.gate_proj.")


def main():
    out = os.path.join(ROOT, "lfm3-vl-tiny")
    users = fixture_dir.claim(out, SCRIPT)
    tok = AutoTokenizer.from_pretrained(LFM2_FIXTURE)
    tok.add_special_tokens({"additional_special_tokens": ["<|image_pad|>", "<|vision_start|>", "<|vision_end|>"]})
    tok.save_pretrained(out)
    pad, start, end = (tok.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|vision_start|>", "<|vision_end|>"))
    torch.manual_seed(21)
    vision = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, patch_size=4, temporal_patch_size=2, spatial_merge_size=2,
                  conv_kernel_size=3, norm_eps=1e-5, rope_parameters={"rope_type": "axial", "rope_theta": 10000.0})
    text = dict(model_type="lfm3", vocab_size=336, pad_token_id=0, bos_token_id=1, eos_token_id=7, hidden_size=48,
                intermediate_size=64, num_hidden_layers=4, sliding_window=16,
                layer_types=["conv", "sliding_attention", "full_attention", "conv"], num_attention_heads=4,
                num_key_value_heads=2, head_dim=12)
    cfg = Lfm3VlConfig(vision_config=vision, text_config=text, projector_hidden_size=80, image_token_id=pad,
                       vision_start_token_id=start, vision_end_token_id=end, video_token_id=330)
    full = Lfm3VlForConditionalGeneration(cfg).eval()
    model = full.model
    with torch.no_grad():
        for n, p in full.named_parameters():
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
    sd = {published_key(k): v.detach().float().contiguous() for k, v in full.state_dict().items()
          if k != "lm_head.weight"}
    save_file(sd, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    conf = cfg.to_dict()
    conf["architectures"] = ["Lfm3VlForConditionalGeneration"]
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(conf, f, indent=2)
    proc.save_pretrained(out)
    # transformers reads the published names back to the same weights.
    again = Lfm3VlForConditionalGeneration.from_pretrained(out, dtype=torch.float32).eval()
    for k, v in full.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k
    videos = Qwen3VLVideoProcessor(patch_size=4, temporal_patch_size=2, merge_size=2)
    processor = Lfm3VlProcessor(image_processor=proc, tokenizer=tok, video_processor=videos,
                                chat_template=tok.chat_template)
    user = "<|vision_start|><|image_pad|><|vision_end|>What is in the picture?"
    text_prompt = tok.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                          add_generation_prompt=True)
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
    # As `processor.apply_chat_template(..., tokenize=True)` tokenizes: the template already
    # holds the BOS, so no special tokens are added again.
    inputs = processor(text=text_prompt, images=[image], return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        logits = again(**inputs).logits[0, -1]
        gen = again.generate(**inputs, max_new_tokens=10, do_sample=False)
    new = gen[0, inputs["input_ids"].shape[1]:].tolist()
    with open(os.path.join(out, "golden.json"), "w") as f:
        json.dump({"prompt": "<image>What is in the picture?", "prompt_ids": inputs["input_ids"][0].tolist(),
                   "last_logits": [round(float(x), 6) for x in logits], "greedy_ids": new}, f)
    fixture_dir.record(out, SCRIPT, users)
    print(f"lfm3-vl-tiny: {inputs['input_ids'].shape[1]} prompt tokens, greedy {new}")
    print(f"lfm3-vl-tiny: image 70x45 -> grid {grid.tolist()}, pixel_values {list(pixel_values.shape)}, "
          f"features {list(features.shape)}")


if __name__ == "__main__":
    sys.exit(main())
