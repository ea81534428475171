"""The model of an experiment file in PyTorch: timm MobileNetV5 + Linear-GELU-Linear
connector + transformers Lfm2ForCausalLM, with the shapes autoneural builds for it.
Shared by `bench_reference.py --mode train` and `train_reference.py`."""
from types import SimpleNamespace

import torch

# Presets of autoneural-model (vision/arch.rs, text/config.rs).
MNV5_PRESETS = {
    # block args, stem size, num_features, image size, default msfa_output_resolution
    "mobilenetv5_tiny": ([
        ["er_r1_k3_s2_e4_c16", "er_r1_k3_s1_e2_c16"],
        ["uir_r1_a3_k5_s2_e4_c24", "uir_r1_a5_k0_s1_e2_c24"],
        ["uir_r1_a3_k3_s2_e4_c32", "mqa_r1_k3_h2_v2_s1_d8_c32", "uir_r1_a0_k0_s1_e2_c32"],
        ["uir_r1_a0_k3_p3_s2_e3_c48", "mqa_r1_k3_h4_s1_d12_c48", "uir_r1_a0_k0_s1_e2_c48"],
    ], 8, 64, 64, 2),
}
# vocab, hidden, intermediate (raw), heads, kv heads, layers, attention layers
LM_PRESETS = {
    "lfm2-tiny": (8192, 256, 1152, 4, 2, 8, 3),
    "lfm2-nano": (512, 64, 288, 4, 2, 4, 2),
}


def attention_placement(num_layers, count):
    """autoneural-model text/config.rs: evenly spaced, ending at the last layer."""
    count = min(count, num_layers)
    return [-(-((i + 1) * num_layers) // count) - 1 for i in range(count)]


def build(exp, vocab, attn_impl="sdpa"):
    """(encoder, projector, lm, shapes) for the `[model]` table of experiment `exp`;
    `vocab` is the language model's vocabulary including the image tokens."""
    import timm  # noqa: F401  (registers the MobileNetV5 blocks)
    from timm.layers import RmsNorm2d
    from timm.models._efficientnet_builder import decode_arch_def
    from timm.models.mobilenetv5 import MobileNetV5
    from transformers import Lfm2Config, Lfm2ForCausalLM

    m = exp["model"]
    blocks, stem, num_features, size, out_res = MNV5_PRESETS[m["vision"]["preset"]]
    # [model.vision] blocks / stem_size / num_features override the preset's architecture.
    blocks = m["vision"].get("blocks", blocks)
    stem = m["vision"].get("stem_size", stem)
    num_features = m["vision"].get("num_features", num_features)
    size = m.get("image_size", exp.get("data", {}).get("synth", {}).get("image_size", size))
    out_res = m["vision"].get("msfa_output_resolution", out_res)
    lang = m["language"]
    _, hidden, ff, heads, kv, layers, attn = LM_PRESETS[lang["preset"]]
    hidden = lang.get("hidden_size", hidden)
    ff = lang.get("intermediate_size", ff)
    heads = lang.get("num_attention_heads", heads)
    kv = lang.get("num_key_value_heads", kv)
    layers = lang.get("num_layers", layers)
    attn = attention_placement(layers, lang.get("attention_layers", attn))
    proj_hidden = m.get("projector_hidden_size", hidden)

    norm = {"rms": RmsNorm2d, "batch": torch.nn.BatchNorm2d}[m["vision"].get("norm", "rms")]
    encoder = MobileNetV5(decode_arch_def(blocks), num_classes=0, stem_size=stem, num_features=num_features,
                          pad_type="same", msfa_output_resolution=out_res, norm_layer=norm,
                          layer_scale_init_value=m["vision"].get("layer_scale_init", 1e-5), global_pool="")
    projector = torch.nn.Sequential(torch.nn.Linear(num_features, proj_hidden), torch.nn.GELU(),
                                    torch.nn.Linear(proj_hidden, hidden))
    # Lfm2Config::to_hf_json of the experiment's text config (block_multiple_of 32 below
    # hidden 1024, ff multiplier 1.0, auto-adjusted ff dim, no conv bias, tied embeddings).
    cfg = Lfm2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=ff, num_hidden_layers=layers,
                     num_attention_heads=heads, num_key_value_heads=kv, head_dim=hidden // heads,
                     max_position_embeddings=128000, norm_eps=1e-5, conv_L_cache=3, conv_bias=False,
                     block_multiple_of=256 if hidden >= 1024 else 32, block_ffn_dim_multiplier=1.0,
                     block_auto_adjust_ff_dim=True, tie_word_embeddings=True, bos_token_id=1, eos_token_id=7,
                     pad_token_id=0, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                     layer_types=["full_attention" if i in attn else "conv" for i in range(layers)])
    cfg._attn_implementation = attn_impl
    lm = Lfm2ForCausalLM(cfg)
    shapes = SimpleNamespace(image_size=size, num_features=num_features, hidden=hidden, layers=layers,
                             attention_layers=attn, vocab=vocab)
    return encoder, projector, lm, shapes
