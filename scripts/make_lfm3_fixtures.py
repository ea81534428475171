#!/usr/bin/env python3
"""Write small random LFM3 checkpoints (model_type `lfm3`) with transformers' outputs, as
golden fixtures in tests/fixtures/lfm2/lfm3-*/.

Every LFM3 layer kind is present (`conv` with a 7-tap kernel, `sliding_attention`,
`full_attention` with proportional RoPE rotating half of each head), and the window is
small (8 positions) so that the prompt and the greedy continuation run well past it.
`lfm3-f32` has LFM3's defaults (sandwich norms, the sigmoid attention gate, a tied head);
`lfm3-plain-f32` turns both off and unties the head. The weights are written with the
published key names: transformers renames the hub's `self_attn.gate_proj` to `g_proj` when
it loads, so the files here use `gate_proj` as the hub does.

Run on a developer machine (never in CI), with transformers >= 5.25:
    python scripts/make_lfm3_fixtures.py
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import Lfm3Config, Lfm3ForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fixture_dir  # noqa: E402
from make_lfm2_fixtures import ROOT, randomize, write_golden, write_tokenizer  # noqa: E402

LAYERS = ["conv", "sliding_attention", "full_attention", "conv", "sliding_attention", "conv"]


SCRIPT = "scripts/make_lfm3_fixtures.py"


def make(name, *, seed, sandwich, gate, tied):
    out = os.path.join(ROOT, name)
    users = fixture_dir.claim(out, SCRIPT)
    vocab = write_tokenizer(out, 320)
    torch.manual_seed(seed)
    cfg = Lfm3Config(vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=len(LAYERS),
                     layer_types=LAYERS, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                     max_position_embeddings=4096, norm_eps=1e-5, conv_L_cache=7, sliding_window=8,
                     use_sandwich_norm=sandwich, use_attention_gate=gate, tie_word_embeddings=tied,
                     rope_parameters={
                         "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                         "full_attention": {"rope_type": "proportional", "rope_theta": 1000000.0,
                                            "partial_rotary_factor": 0.5},
                     },
                     bos_token_id=1, eos_token_id=7, pad_token_id=0)
    model = Lfm3ForCausalLM(cfg).eval()
    randomize(model)
    sd = {}
    for k, v in model.state_dict().items():
        if tied and k == "lm_head.weight":
            continue
        sd[k.replace(".self_attn.g_proj.", ".self_attn.gate_proj.")] = v.detach().float().contiguous()
    save_file(sd, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    conf = cfg.to_dict()
    conf["architectures"] = ["Lfm3ForCausalLM"]
    conf["dtype"] = "float32"
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(conf, f, indent=2)
    # Reload through transformers (which renames gate_proj) to prove the files load as published.
    ref = Lfm3ForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    for (k, a), b in zip(model.state_dict().items(), ref.state_dict().values()):
        assert torch.equal(a, b), k
    messages = [{"role": "user", "content": "Which parking level is the car on, and which row is it in?"}]
    ids, new_ids = write_golden(out, ref, messages, None, 16)
    fixture_dir.record(out, SCRIPT, users)
    print(f"{name}: {len(ids)} prompt tokens, new {new_ids}")


def main():
    make("lfm3-f32", seed=13, sandwich=True, gate=True, tied=True)
    make("lfm3-plain-f32", seed=17, sandwich=False, gate=False, tied=False)


if __name__ == "__main__":
    sys.exit(main())
