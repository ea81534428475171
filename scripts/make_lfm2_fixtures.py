#!/usr/bin/env python3
"""Write small random LFM2 checkpoints with transformers' outputs, as golden fixtures.

Each fixture directory under tests/fixtures/lfm2/<name>/ is a Hugging Face LFM2
checkpoint that `autoneural` must load unchanged (config.json, safetensors, tokenizer
files) plus `golden.json`: the prompt ids, transformers' logits for the full prompt
(float32 compute over the stored weights) and transformers' greedy continuation.

Run on a developer machine (never in CI):
    pip install torch transformers safetensors tokenizers
    python scripts/make_lfm2_fixtures.py
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, Lfm2Config, Lfm2ForCausalLM

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "lfm2")
SCRIPT = "scripts/make_lfm2_fixtures.py"

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fixture_dir  # noqa: E402

# The special tokens sit at LFM2's ids: pad 0, bos 1, <|im_start|> 6, eos (<|im_end|>) 7.
SPECIALS = ["<|pad|>", "<|startoftext|>", "<|endoftext|>", "<|fim_pre|>", "<|fim_mid|>", "<|fim_suf|>",
            "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "A vision-language model reads an image and answers a question about it.",
    "Hybrid backbones mix gated short convolutions with a few attention layers.",
    "Quantization maps floating point weights to small integers with a scale.",
    "Which parking level is the car on? It is on level three, slot twelve.",
    "Hello! How are you today? I am fine, thank you.",
] * 20


def make_tokenizer(vocab_size):
    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A", pair="<|startoftext|> $A <|startoftext|> $B",
        special_tokens=[("<|startoftext|>", 1)])
    return tok


def write_tokenizer(out, vocab_size):
    tok = make_tokenizer(vocab_size)
    assert tok.token_to_id("<|im_end|>") == 7 and tok.token_to_id("<|startoftext|>") == 1
    tok.save(os.path.join(out, "tokenizer.json"))
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": "<|startoftext|>", "eos_token": "<|im_end|>", "pad_token": "<|pad|>",
            "add_bos_token": False, "add_eos_token": False,
            "model_max_length": 1000000, "chat_template": CHAT_TEMPLATE,
        }, f, indent=2)
    with open(os.path.join(out, "special_tokens_map.json"), "w") as f:
        json.dump({"bos_token": "<|startoftext|>", "eos_token": "<|im_end|>", "pad_token": "<|pad|>"}, f, indent=2)
    return tok.get_vocab_size()


def save_weights(model, out, dtype, shards, tied):
    sd = {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}
    if tied:
        sd.pop("lm_head.weight", None)
    keys = sorted(sd)
    if shards == 1:
        save_file(sd, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
        return
    per = (len(keys) + shards - 1) // shards
    weight_map, total = {}, 0
    for i in range(shards):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: sd[k] for k in keys[i * per:(i + 1) * per]}
        save_file(part, os.path.join(out, name), metadata={"format": "pt"})
        for k, v in part.items():
            weight_map[k] = name
            total += v.numel() * v.element_size()
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


def randomize(model):
    """Weights away from their init, so a missed or transposed weight shows: norm weights
    around 1, 1-D parameters and conv taps at 0.4, matrices at 1.2 / sqrt(fan_in)."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif "conv.conv" in n or p.dim() == 1:
                p.copy_(torch.randn_like(p) * 0.4)
            else:
                p.copy_(torch.randn_like(p) * (1.2 / p.shape[-1] ** 0.5))


def write_golden(out, ref, prompt_messages, raw_prompt, new_tokens):
    """`golden.json` for the checkpoint in `out`: the prompt (a chat or raw text) as its
    tokenizer encodes it, `ref`'s logits over it and its greedy continuation. Returns the
    prompt ids and the new ids."""
    tok = AutoTokenizer.from_pretrained(out)
    if raw_prompt is not None:
        ids = tok(raw_prompt)["input_ids"]
        rendered = raw_prompt
    else:
        rendered = tok.apply_chat_template(prompt_messages, tokenize=False, add_generation_prompt=True)
        ids = tok.apply_chat_template(prompt_messages, tokenize=True, add_generation_prompt=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
    input_ids = torch.tensor([ids])
    with torch.no_grad():
        logits = ref(input_ids, use_cache=False).logits[0].float()
        # Greedy continuation by repeated full forwards (no cache): transformers' own cache
        # refuses conv-only models, and an uncached argmax loop is the definition of greedy.
        seq = list(ids)
        for _ in range(new_tokens):
            seq.append(int(ref(torch.tensor([seq]), use_cache=False).logits[0, -1].argmax()))
    new_ids = seq[len(ids):]
    golden = {
        "prompt_messages": prompt_messages, "raw_prompt": raw_prompt, "rendered_prompt": rendered,
        "prompt_ids": ids, "logits_shape": list(logits.shape),
        "logits": [round(float(x), 6) for x in logits.flatten().tolist()],
        "greedy_new_ids": new_ids, "greedy_text": tok.decode(new_ids, skip_special_tokens=True),
        "transformers_version": __import__("transformers").__version__,
    }
    with open(os.path.join(out, "golden.json"), "w") as f:
        json.dump(golden, f)
    return ids, new_ids


def make_fixture(name, *, layers, attn, style, dtype, tied, shards=1, hidden=64, heads=4, kv_heads=2,
                 ff=192, vocab=320, seed=0, prompt_messages=None, raw_prompt=None, new_tokens=12):
    out = os.path.join(ROOT, name)
    users = fixture_dir.claim(out, SCRIPT)
    vocab = write_tokenizer(out, vocab)
    torch.manual_seed(seed)
    layer_types = ["full_attention" if i in attn else "conv" for i in range(layers)]
    cfg = Lfm2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=ff, num_hidden_layers=layers,
                     num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=4096, block_multiple_of=64,
                     layer_types=layer_types, tie_word_embeddings=tied, norm_eps=1e-5, conv_L_cache=3,
                     rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                     bos_token_id=1, eos_token_id=7, pad_token_id=0)
    model = Lfm2ForCausalLM(cfg).eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("layernorm.weight") or n.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))  # norms away from 1 so a missed weight shows
            else:
                p.copy_(torch.randn_like(p) * (1.2 / p.shape[-1] ** 0.5 if p.dim() > 1 and "conv.conv" not in n
                                               else 0.4))
        # the reference computes in f32 over exactly the stored (rounded) weights
        for p in model.parameters():
            p.copy_(p.to(dtype).float())
    save_weights(model, out, dtype, shards, tied)

    if style == "hub":
        conf = {
            "architectures": ["Lfm2ForCausalLM"], "model_type": "lfm2", "vocab_size": vocab,
            "hidden_size": hidden, "block_ff_dim": ff, "num_hidden_layers": layers,
            "num_attention_heads": heads, "num_key_value_heads": kv_heads, "max_position_embeddings": 4096,
            "full_attn_idxs": list(attn), "tie_embedding": tied, "rope_theta": 1000000.0, "norm_eps": 1e-5,
            "conv_L_cache": 3, "conv_bias": False, "block_multiple_of": 64, "block_ffn_dim_multiplier": 1.0,
            "block_auto_adjust_ff_dim": True, "bos_token_id": 1, "eos_token_id": 7, "pad_token_id": 0,
            # fields real hub configs carry that a loader must ignore
            "block_dim": hidden, "block_ff_dim_note": "ignored", "block_mlp_init_scale": 1.0,
            "block_norm_eps": 1e-5, "block_out_init_scale": 1.0, "block_use_swiglu": True,
            "block_use_xavier_init": True, "conv_dim": hidden, "conv_dim_out": hidden, "conv_use_xavier_init": True,
            "initializer_range": 0.02, "torch_dtype": str(dtype).replace("torch.", ""), "use_cache": True,
            "use_pos_enc": True, "transformers_version": "4.54.0.dev0",
        }
    else:
        conf = cfg.to_dict()
        conf["dtype"] = str(dtype).replace("torch.", "")
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(conf, f, indent=2)

    # Reload through transformers itself to prove the files are a valid checkpoint.
    ref = Lfm2ForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ids, new_ids = write_golden(out, ref, prompt_messages, raw_prompt, new_tokens)
    fixture_dir.record(out, SCRIPT, users)
    print(f"{name}: {len(ids)} prompt tokens, new {new_ids}")


def main():
    chat = [{"role": "user", "content": "Which parking level is the car on?"}]
    make_fixture("hybrid-hub-bf16", layers=6, attn=[2, 4], style="hub", dtype=torch.bfloat16, tied=True,
                 prompt_messages=chat, seed=1)
    make_fixture("hybrid-t5-f32-sharded", layers=5, attn=[1, 3], style="t5", dtype=torch.float32, tied=False,
                 shards=3, prompt_messages=chat, seed=2)
    make_fixture("attention-only-f16", layers=3, attn=[0, 1, 2], style="t5", dtype=torch.float16, tied=True,
                 heads=4, kv_heads=1, raw_prompt="Hello! How are you today?", seed=3)
    make_fixture("conv-only-hub-f32", layers=3, attn=[], style="hub", dtype=torch.float32, tied=False,
                 raw_prompt="The quick brown fox", seed=4)
    # a one-token prompt (just BOS) exercises prompts shorter than the conv kernel
    make_fixture("hybrid-short-prompt", layers=4, attn=[1], style="t5", dtype=torch.float32, tied=True,
                 raw_prompt="", seed=5)


if __name__ == "__main__":
    sys.exit(main())
