#!/usr/bin/env python3
"""Write a small random LFM2-MoE checkpoint (model_type `lfm2_moe`, LFM2-8B-A1B's layout)
with transformers' outputs, as a golden fixture in tests/fixtures/lfm2/moe-f32/.

The weights are stored as the published checkpoints store them: one `w1`/`w3`/`w2` per
expert (`model.layers.N.feed_forward.experts.E.w1.weight`), the router
`feed_forward.gate.weight` and `feed_forward.expert_bias`; transformers fuses the experts
into `gate_up_proj`/`down_proj` when it loads them. A dense first layer
(`num_dense_layers`), conv and attention layers, a nonzero expert bias (so that routing by
`sigmoid + bias` and weighting by `sigmoid` alone differ) and a routed scaling factor
other than 1 are all present.

Run on a developer machine (never in CI), with transformers >= 5.25:
    python scripts/make_lfm2_moe_fixture.py
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import Lfm2MoeConfig, Lfm2MoeForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fixture_dir  # noqa: E402
from make_lfm2_fixtures import ROOT, randomize, write_golden, write_tokenizer  # noqa: E402


SCRIPT = "scripts/make_lfm2_moe_fixture.py"


def main():
    out = os.path.join(ROOT, "moe-f32")
    users = fixture_dir.claim(out, SCRIPT)
    vocab = write_tokenizer(out, 320)
    torch.manual_seed(11)
    layer_types = ["conv", "conv", "full_attention", "conv", "full_attention"]
    cfg = Lfm2MoeConfig(vocab_size=vocab, hidden_size=64, intermediate_size=160, moe_intermediate_size=32,
                        num_hidden_layers=len(layer_types), layer_types=layer_types, num_attention_heads=4,
                        num_key_value_heads=2, max_position_embeddings=4096, norm_eps=1e-5, conv_L_cache=3,
                        num_dense_layers=1, num_experts=8, num_experts_per_tok=3, use_expert_bias=True,
                        routed_scaling_factor=1.5, norm_topk_prob=True, tie_word_embeddings=True,
                        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                        bos_token_id=1, eos_token_id=7, pad_token_id=0)
    model = Lfm2MoeForCausalLM(cfg).eval()
    randomize(model)
    with torch.no_grad():
        for layer in model.model.layers:
            ff = layer.feed_forward
            if hasattr(ff, "expert_bias"):
                ff.expert_bias.copy_(torch.randn_like(ff.expert_bias) * 0.3)

    # The published layout: per-expert w1/w3/w2, router and bias as they are.
    sd = {}
    for k, v in model.state_dict().items():
        if k == "lm_head.weight":
            continue
        if k.endswith("experts.gate_up_proj"):
            base = k[: -len("gate_up_proj")]
            inter = v.shape[1] // 2
            for e in range(v.shape[0]):
                sd[f"{base}{e}.w1.weight"] = v[e, :inter].contiguous()
                sd[f"{base}{e}.w3.weight"] = v[e, inter:].contiguous()
        elif k.endswith("experts.down_proj"):
            base = k[: -len("down_proj")]
            for e in range(v.shape[0]):
                sd[f"{base}{e}.w2.weight"] = v[e].contiguous()
        else:
            sd[k] = v.detach().float().contiguous()
    save_file(sd, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    conf = cfg.to_dict()
    conf["architectures"] = ["Lfm2MoeForCausalLM"]
    conf["dtype"] = "float32"
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(conf, f, indent=2)

    # Reload through transformers (which fuses the experts) to prove the files load.
    ref = Lfm2MoeForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    messages = [{"role": "user", "content": "Which parking level is the car on?"}]
    ids, new_ids = write_golden(out, ref, messages, None, 12)
    fixture_dir.record(out, SCRIPT, users)
    print(f"moe-f32: {len(ids)} prompt tokens, new {new_ids}")


if __name__ == "__main__":
    sys.exit(main())
