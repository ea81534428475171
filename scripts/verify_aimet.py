"""Checks that AIMET reads the encodings `autoneural export` wrote as we mean them.

For every graph of a quantized export (the vision encoder, the embedding, the first prefill
call and the decode call after it) (a directory with
`<graph>.onnx`, `<graph>.encodings`, `<graph>.qdq.onnx` and reference.qdq.safetensors, as
`autoneural export` writes for a quantized checkpoint), this builds AIMET's
`QuantizationSimModel` on the float graph (with `<graph>.quantsim.json` beside it when the
export wrote one, else AIMET's default placement), loads the encodings, and reports:
- the quantizers whose placement or settings differ between AIMET and the file, by kind
  (`enabled`: a quantizer one side has and the other not; `enc_type`: per tensor against
  per channel; `bitwidth`, `is_symmetric`, ...);
- how far the model AIMET exports for deployment from that QuantSim (`to_onnx_qdq`, run
  in onnxruntime) lands from our QDQ graph's, and how far AIMET's own simulation does,
  against how far the QDQ graph lands from the float one (the quantization error itself),
  on the reference's inputs.

    pip install aimet-onnx onnx onnxruntime safetensors numpy
    python scripts/verify_aimet.py EXPORT_DIR [--strict]

With --strict it loads with `strict=True` and exits 1 unless every file loads (no mismatch)
and AIMET's QDQ export reproduces our QDQ graph within --tol (1e-3) relative. Not run in CI (AIMET pulls in torch);
the measurements are in docs/deployment.md.
"""

import argparse
import collections
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from safetensors.numpy import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from verify_onnx import Host, rel_err, session  # noqa: E402

FIELDS = ["enabled", "dtype", "bitwidth", "is_symmetric", "is_strict_symmetric", "is_unsigned_symmetric", "enc_type"]


def bits(enc, model):
    """The most common weight and activation bit-widths of an encodings file (1.0.0 or
    2.0.0): the `param_type` and `activation_type` a QuantSim for it is built with."""
    params = {i.name for i in model.graph.initializer}
    if enc["version"].startswith("2"):
        entries = [(e["name"] in params, int(e["output_dtype"].lstrip("u").removeprefix("int"))) for e in enc["encodings"]]
    else:
        entries = [(True, e["bw"]) for e in enc["param_encodings"]]
        entries += [(False, e["bw"]) for e in enc["activation_encodings"]]
    common = lambda xs: collections.Counter(xs).most_common(1)[0][0] if xs else 16  # noqa: E731
    return common([b for p, b in entries if p]), common([b for p, b in entries if not p])


def blocks(sim, model, enc):
    """Sets the QuantSim's quantizers of the weights the file gives per block as a deployment
    engineer does (a configuration file cannot say it): LPBQ for a 2.0.0 file's
    `per_block_int_scale` weights (`set_grouped_blockwise_quantization_for_weights`), plain
    blockwise for a 1.0.0 file's `PER_BLOCK` weights (`set_blockwise_quantization_for_weights`:
    1.0.0 lists LPBQ's effective block scales, the same grid)."""
    from aimet_onnx.quantsim import set_blockwise_quantization_for_weights, set_grouped_blockwise_quantization_for_weights

    if enc["version"].startswith("2"):
        blocked = {e["name"]: e for e in enc["encodings"] if "per_block_int_scale" in e}
        bitwidth = lambda e: int(e["output_dtype"].removeprefix("int"))  # noqa: E731
    else:
        blocked = {e["name"]: e for e in enc["param_encodings"] if e["enc_type"] == "PER_BLOCK"}
        bitwidth = lambda e: e["bw"]  # noqa: E731
    if not blocked:
        return
    first = next(iter(blocked.values()))
    users = [n for n in model.graph.node if any(i in blocked for i in n.input)]
    types = tuple(sorted({n.op_type for n in users}))
    exclude = [n.name for n in model.graph.node if n.op_type in types and n not in users]
    if enc["version"].startswith("2"):
        set_grouped_blockwise_quantization_for_weights(
            sim, op_types=types, bitwidth=bitwidth(first), decompressed_bw=2 * bitwidth(first),
            block_size=first["block_size"], nodes_to_exclude=exclude,
        )
    else:
        set_blockwise_quantization_for_weights(
            sim, op_types=types, bitwidth=bitwidth(first), symmetric=True,
            block_size=first["block_size"], nodes_to_exclude=exclude,
        )


def mixed(sim, enc):
    """A mixed policy's quantizers at the file's bit-widths (8-bit KV caches, an 8-bit head
    in a 4-bit model), set quantizer by quantizer before loading as a deployment engineer sets
    mixed precision (as AIMET's `flip_layers_to_higher_precision` does), then AIMET's
    hardware exception rules applied again. A QuantSim is built at one weight type and one
    activation type; a configuration file cannot say this either."""
    from aimet_onnx import qtype

    if enc["version"].startswith("2"):
        entries = {e["name"]: (int(e["output_dtype"].lstrip("u").removeprefix("int")), e["output_dtype"].startswith("int")) for e in enc["encodings"]}
    else:
        entries = {e["name"]: (e["bw"], e["is_sym"]) for e in enc["activation_encodings"] + enc["param_encodings"]}
    changed = 0
    for name, (bw, sym) in entries.items():
        q = sim.qc_quantize_op_dict.get(name)
        if q is None or not q.enabled or q.bitwidth == bw:
            continue
        q.set_precision(qtype.as_qtype(f"int{bw}"))
        q.use_symmetric_encodings = bool(sym)
        changed += 1
    if changed:
        sim._apply_exception_rules()  # pylint: disable=protected-access
    return changed


def simulate(root, name, entry, strict=False):
    """AIMET's QuantSim of graph `name` with our encodings loaded: (sim, mismatches). With
    `strict`, AIMET's `load_encodings_to_sim(strict=True)` (which raises on any mismatch)."""
    from aimet_onnx.quantsim import QuantizationSimModel, load_encodings_to_sim

    config = os.path.join(root, entry.get("quantsim_config") or f"{name}.quantsim.json")
    model = onnx.load(os.path.join(root, entry["file"]))
    path = os.path.join(root, entry["encodings"])
    enc = json.load(open(path))
    param_bits, act_bits = bits(enc, model)
    sim = QuantizationSimModel(
        model,
        param_type=f"int{param_bits}",
        activation_type=f"int{act_bits}",
        config_file=config if os.path.exists(config) else None,
    )
    blocks(sim, model, enc)
    mixed(sim, enc)
    mismatches = load_encodings_to_sim(sim, path, strict=strict)
    return sim, mismatches or []


def plain_options():
    """onnxruntime with graph optimisations off (the graph as written), as `session` runs."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return opts


def kinds(mismatches):
    counts = collections.Counter()
    for m in mismatches:
        for f in FIELDS:
            v = getattr(m, f"{f}_mismatch", None)
            if v is not None:
                counts[f"{f} {v[0]} (AIMET) vs {v[1]} (file)"] += 1
    return counts


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--strict", action="store_true")
    args = ap.parse_args()
    root = args.dir
    manifest = json.load(open(os.path.join(root, "manifest.json")))
    ref = load_file(os.path.join(root, "reference.qdq.safetensors"))
    graphs = manifest["graphs"]
    embed = session(os.path.join(root, graphs["embed_tokens"]["file"]))
    inputs = {}
    if "vision_encoder" in graphs and "pixels" in ref:
        inputs["vision_encoder"] = {"pixels": ref["pixels"]}
    # The first prefill call of the reference prompt, the image's features in place.
    host = Host(manifest, {"embed_tokens": embed, "prefill": session(os.path.join(root, graphs["prefill"]["file"]))})
    n = manifest["prefill_len"]
    embeds = host.embed(ref["prompt_ids"][:n])
    if "image_features" in ref:
        at = np.nonzero(ref["prompt_ids"][:n] == int(ref["image_token_id"][0]))[0]
        embeds[0, at] = ref["image_features"][0][: len(at)]
    inputs["prefill"] = host.feeds(embeds)
    # The embedding of the prompt's first tokens, and the decode call after the first prefill.
    inputs["embed_tokens"] = {"input_ids": np.array([[int(ref["prompt_ids"][0])]], np.int64)}
    host.step("prefill", embeds)
    inputs["decode"] = host.feeds(host.embed(ref["prompt_ids"][n : n + 1]))
    failed = False
    for name, feeds in inputs.items():
        entry = graphs[name]
        if not entry.get("encodings"):
            raise SystemExit(f"{name}: no encodings (export a quantized checkpoint)")
        try:
            sim, mismatches = simulate(root, name, entry, strict=args.strict)
        except RuntimeError as e:
            print(f"{name}: AIMET does not load the encodings: {str(e).strip().splitlines()[0]}")
            failed = True
            continue
        float_graph = session(os.path.join(root, entry["file"]))
        outs = [o.name for o in float_graph.get_outputs()]
        first = outs.index("logits") if "logits" in outs else 0
        qdq = session(os.path.join(root, entry["qdq"])).run(None, feeds)[first]
        float_ = float_graph.run(None, feeds)[first]
        # The model AIMET hands on for deployment: its QDQ export of the QuantSim with our
        # encodings loaded, in onnxruntime as our QDQ graph runs.
        exported = ort.InferenceSession(sim.to_onnx_qdq().SerializeToString(), plain_options())
        deployed = exported.run(None, feeds)[first]
        # AIMET's own simulation kernels round ties away from zero and compute near-ties
        # differently from ONNX's QuantizeLinear (one step on some values): measured, not gated.
        simulated = sim.session.run(None, feeds)[first]
        err, sim_err, quant = rel_err(deployed, qdq), rel_err(simulated, qdq), rel_err(qdq, float_)
        summary = ", ".join(f"{c} {k}" for k, c in kinds(mismatches).most_common())
        print(
            f"{name}: {len(mismatches)} quantizers differ ({summary or 'none'}); AIMET's QDQ export is {err:.2e} "
            f"relative from our QDQ graph's (its simulation {sim_err:.2e}), whose quantization error is {quant:.2e}"
        )
        if mismatches or err > args.tol:
            failed = True
    if args.strict and failed:
        raise SystemExit(f"AIMET does not read the encodings as the QDQ graphs apply them (tolerance {args.tol:g})")


if __name__ == "__main__":
    sys.exit(main())
