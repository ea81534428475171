"""Checks the ONNX graphs `autoneural export` wrote against the Burn model.

For every graph in manifest.json: onnx.checker (full check) and strict shape inference,
and its inputs and outputs as the manifest lists them. Then the reference generation of
`autoneural export --reference-tokens N` (reference.safetensors, produced by the Burn
model) is replayed through onnxruntime, driving the graphs as the manifest says
(vision_encoder, embed_tokens per token, prefill on full chunks, decode on the rest, state
carried by the host): the image features and the logits of every generated token within
--tol relative (1e-4 for fp32 graphs) and the same greedy tokens.

A quantized checkpoint's export also has QDQ graphs and AIMET encodings: the QDQ graphs
get the same checks and replay reference.qdq.safetensors (the Burn model with op inputs
and KV caches fake-quantized) within --qdq-tol (1e-2; the vision features within 5% of the
quantization error where that is larger): the QDQ graphs also quantize, at 16 bits, every
tensor Qualcomm's tools quantize and the Burn model does not; every encodings file must name
only tensors of its float graph, and give an encoding to every weight the QDQ graph
quantizes.

    pip install onnx onnxruntime safetensors numpy
    python scripts/verify_onnx.py EXPORT_DIR [--tol 1e-4]

Exits 1 on any failure.
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

DTYPES = {"float32": onnx.TensorProto.FLOAT, "int64": onnx.TensorProto.INT64}
# Two tokens whose logits differ by less than this fraction of the largest are a near tie.
TIE = 1e-3


def check_graph(path, entry):
    # By path, so graphs with external data (weights over 2 GiB) are checked too.
    onnx.checker.check_model(path, full_check=True)
    model = onnx.load(path, load_external_data=False)
    onnx.shape_inference.infer_shapes(model, strict_mode=True, check_type=True)
    for kind, listed, actual in [("input", entry["inputs"], model.graph.input), ("output", entry["outputs"], model.graph.output)]:
        got = {v.name: ([d.dim_value for d in v.type.tensor_type.shape.dim], v.type.tensor_type.elem_type) for v in actual}
        want = {p["name"]: (p["shape"], DTYPES[p["dtype"]]) for p in listed}
        if got != want:
            raise SystemExit(f"{path}: {kind}s differ from manifest.json:\n  graph    {got}\n  manifest {want}")


def check_encodings(graph_path, enc_path, qdq_path):
    """Names in the AIMET file exist in the float graph; every quantized weight has one."""
    model = onnx.load(graph_path, load_external_data=False)
    g = model.graph
    names = {t.name for t in g.initializer} | {v.name for v in g.input}
    for n in g.node:
        names.update(n.input)
        names.update(n.output)
    enc = json.load(open(enc_path))
    inits_f = {t.name for t in g.initializer}
    if enc.get("version") == "1.0.0":
        param_list, act_list = enc["param_encodings"], enc["activation_encodings"]
    elif enc.get("version") == "2.0.0":
        # One list; a weight is an encoding named by an initializer a weighted op reads as its
        # weight (other constants an op reads, a norm's weight or an epsilon, are activations
        # to AIMET and QNN).
        for e in enc["encodings"]:
            if "bw" in e or "output_dtype" not in e:
                raise SystemExit(f"{enc_path}: {e.get('name')}: not a 2.0.0 entry")
        weights = {n.input[1] for n in g.node if n.op_type in ("Conv", "Gemm", "MatMul") and len(n.input) > 1}
        param_list = [e for e in enc["encodings"] if e["name"] in inits_f and e["name"] in weights]
        act_list = [e for e in enc["encodings"] if not (e["name"] in inits_f and e["name"] in weights)]
    else:
        raise SystemExit(f"{enc_path}: version {enc.get('version')!r}, expected '1.0.0' or '2.0.0'")
    listed = [e["name"] for e in param_list] + [e["name"] for e in act_list]
    missing = [n for n in listed if n not in names]
    if missing:
        raise SystemExit(f"{enc_path}: names not in {graph_path}: {missing[:5]}")
    if qdq_path is None:
        return len(param_list), len(act_list), 0
    qdq = onnx.load(qdq_path, load_external_data=False)
    inits = {t.name for t in qdq.graph.initializer}
    quantized = {n.input[0][: -len(".quantized")] for n in qdq.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits}
    params = {e["name"] for e in param_list}
    if quantized != params:
        raise SystemExit(f"{enc_path}: weights quantized in {qdq_path} without an encoding: {sorted(quantized - params)[:5]}; encodings without a quantized weight: {sorted(params - quantized)[:5]}")
    acts = sum(1 for n in qdq.graph.node if n.op_type == "QuantizeLinear")
    return len(params), len(act_list), acts


def session(path):
    """An onnxruntime CPU session of `path` with graph optimisations off (the graph as written)."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def rel_err(a, b):
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def sliding_mask(manifest, ring, p, t):
    """`sliding_attention_mask` `[1, 1, t, w + t]` of a call at position `p`: query `i` sees
    ring slot `j` when it holds a position `q > p + i - w`, and this call's key `k` when
    `k <= i` and `i - k < w`."""
    w = len(ring)
    hidden, visible = manifest["attention_mask"]["hidden"], manifest["attention_mask"]["visible"]
    mask = np.full((1, 1, t, w + t), hidden, np.float32)
    for i in range(t):
        for j, q in enumerate(ring):
            if q >= 0 and q > p + i - w:
                mask[0, 0, i, j] = visible
        for k in range(i + 1):
            if i - k < w:
                mask[0, 0, i, w + k] = visible
    return mask


class Host:
    """The host side of the loop: state, cache slots, position and masks."""

    def __init__(self, manifest, sessions):
        self.m = manifest
        self.s = sessions
        self.position = 0
        self.state = {}
        for st in manifest["state"]:
            for name in st["inputs"]:
                self.state[name] = np.zeros(st["shape"], np.float32)
        # LFM3's sliding layers: rings of `window` slots, and which position each slot holds.
        self.window = manifest.get("sliding_window")
        self.ring = [-1] * self.window if self.window else None

    def embed(self, ids):
        rows = [self.s["embed_tokens"].run(None, {"input_ids": np.array([[i]], np.int64)})[0] for i in ids]
        return np.concatenate(rows, axis=1)

    def step(self, graph, embeds):
        t, p = embeds.shape[1], self.position
        feeds = self.feeds(embeds)
        names = [o.name for o in self.s[graph].get_outputs()]
        outs = dict(zip(names, self.s[graph].run(None, feeds)))
        self.advance(outs, t)
        return outs["logits"]

    def feeds(self, embeds):
        """The inputs of a prefill or decode call on `embeds` at the current position."""
        t = embeds.shape[1]
        c = self.m["context"]
        p = self.position
        if p + t > c:
            raise SystemExit(f"position {p} + {t} is over the context {c}")
        mask = np.full((1, 1, t, c + t), self.m["attention_mask"]["hidden"], np.float32)
        mask[0, 0, :, :p] = self.m["attention_mask"]["visible"]
        for i in range(t):
            mask[0, 0, i, c : c + i + 1] = self.m["attention_mask"]["visible"]
        feeds = {"inputs_embeds": embeds.astype(np.float32), "position_ids": np.arange(p, p + t, dtype=np.int64)[None], "attention_mask": mask}
        if self.window:
            feeds["sliding_attention_mask"] = sliding_mask(self.m, self.ring, p, t)
        feeds.update(self.state)
        return feeds

    def advance(self, outs, t):
        """The host's side of a call's outputs: new conv states, cache writes, position."""
        p = self.position
        for st in self.m["state"]:
            if st["kind"] == "conv":
                self.state[st["inputs"][0]] = outs[st["outputs"][0]]
            elif st["kind"] == "sliding_attention":
                for cache, present in zip(st["inputs"], st["outputs"]):
                    for k in range(max(0, t - self.window), t):
                        self.state[cache][:, :, (p + k) % self.window, :] = outs[present][:, :, k, :]
            else:
                for cache, present in zip(st["inputs"], st["outputs"]):
                    self.state[cache][:, :, p : p + t, :] = outs[present]
        if self.window:
            for k in range(max(0, t - self.window), t):
                self.ring[(p + k) % self.window] = p + k
        self.position += t


class GenieHost:
    """The host of the Genie layout: parts chained per call, the key cache transposed, each
    AR graph fed the past `context - T` positions, cos/sin rows and a `[1, 1, T, context]`
    mask; only the step's new KV comes back and is written at the position."""

    def __init__(self, root, manifest):
        self.m, gi = manifest, manifest["genie"]
        self.ctx, self.ar, self.parts = manifest["context"], gi["ar"], gi["parts"]
        self.sessions = {
            (part["index"], t): session(os.path.join(root, part["graphs"][f"ar{t}"]["file"]))
            for part in self.parts
            for t in self.ar
        }
        self.rope = load_file(os.path.join(root, gi["rope"]))
        self.keys, self.values, self.conv, self.rings = {}, {}, {}, set()
        for st in manifest["state"]:
            if st["kind"] == "conv":
                self.conv[st["inputs"][0]] = np.zeros(st["shape"], np.float32)
            else:
                self.keys[st["layer"]] = np.zeros(st["key_shape"], np.float32)
                self.values[st["layer"]] = np.zeros(st["shape"], np.float32)
                if st["kind"] == "sliding_attention":
                    self.rings.add(st["layer"])
        # LFM3's sliding layers: rings of `window` slots, and which position each slot holds.
        self.window = manifest.get("sliding_window")
        self.ring = [-1] * self.window if self.window else None
        self.position = 0
        self.calls = collections.Counter()

    def embed(self, ids):
        s = self.sessions[(0, 1)]
        return np.concatenate([s.run(None, {"input_ids": np.array([[i]], np.int64)})[0] for i in ids], axis=1)

    def step(self, graph, hidden):
        """A call of the AR graphs as long as `hidden` (`graph`, prefill or decode, is the
        default layout's name for it)."""
        t, p, c = hidden.shape[1], self.position, self.ctx
        if t not in self.ar or p + t > c:
            raise SystemExit(f"no AR-{t} graph, or position {p} + {t} over the context {c}")
        past = c - t
        hid, vis = self.m["attention_mask"]["hidden"], self.m["attention_mask"]["visible"]
        mask = np.full((1, 1, t, c), hid, np.float32)
        mask[0, 0, :, :p] = vis
        for i in range(t):
            mask[0, 0, i, past : past + i + 1] = vis
        common = {"hidden_states_in": None, "attention_mask": mask}
        for name in self.rope:
            kind, suffix = name.split("_", 1) if "_" in name else (name, "")
            common[f"position_ids_{kind}" + (f"_{suffix}" if suffix else "")] = self.rope[name][p : p + t][None, None]
        if self.window:
            common["sliding_attention_mask"] = sliding_mask(self.m, self.ring, p, t)
        h = hidden.astype(np.float32)
        for part in self.parts[1:]:
            sess = self.sessions[(part["index"], t)]
            feeds = {}
            for i in sess.get_inputs():
                n = i.name
                if n == "hidden_states_in":
                    feeds[n] = h
                elif n in common:
                    feeds[n] = common[n]
                elif n.startswith("past_key_"):
                    layer = int(n.rsplit("_", 1)[1])
                    keys = self.keys[layer]
                    feeds[n] = keys if layer in self.rings else np.ascontiguousarray(keys[..., :past])
                elif n.startswith("past_value_"):
                    layer = int(n.rsplit("_", 1)[1])
                    values = self.values[layer]
                    feeds[n] = values if layer in self.rings else np.ascontiguousarray(values[:, :, :past])
                else:
                    feeds[n] = self.conv[n]
            names = [o.name for o in sess.get_outputs()]
            outs = dict(zip(names, sess.run(None, feeds)))
            for n, v in outs.items():
                layer = int(n.rsplit("_", 1)[1]) if n.startswith("present_") else None
                if layer in self.rings:
                    # The last min(T, window) entries, each into its slot of the ring.
                    for k in range(max(0, t - self.window), t):
                        if n.startswith("present_key_"):
                            self.keys[layer][..., (p + k) % self.window] = v[..., k]
                        else:
                            self.values[layer][:, :, (p + k) % self.window] = v[:, :, k]
                elif n.startswith("present_key_"):
                    self.keys[layer][..., p : p + t] = v
                elif n.startswith("present_value_"):
                    self.values[layer][:, :, p : p + t] = v
                elif n.startswith("new_conv_state_"):
                    self.conv[n.removeprefix("new_")] = v
            h = outs.get("hidden_states_out", outs.get("logits"))
        if self.window:
            for k in range(max(0, t - self.window), t):
                self.ring[(p + k) % self.window] = p + k
        self.calls[f"AR-{t}"] += 1
        self.position += t
        return h


def genie(root, manifest, tol):
    gi = manifest["genie"]
    limit = gi["part_max_bytes"]
    for part in gi["parts"]:
        for key, entry in part["graphs"].items():
            path = os.path.join(root, entry["file"])
            check_graph(path, entry)
            if entry.get("encodings"):
                check_encodings(path, os.path.join(root, entry["encodings"]), None)
        size = os.path.getsize(os.path.join(root, part["data"])) + max(
            os.path.getsize(os.path.join(root, e["file"])) for e in part["graphs"].values())
        if size > limit:
            raise SystemExit(f"part {part['index']}: {size} bytes, over the limit of {limit}")
    sizes = ", ".join(f"{p['kind']} {p['bytes'] / 2**20:.1f}" for p in gi["parts"])
    print(f"Genie layout: {len(gi['parts'])} parts x AR {gi['ar']} pass the checker and shape inference; MiB: {sizes} (limit {limit / 2**20:.1f})")
    ref_path = os.path.join(root, "reference.safetensors")
    if not os.path.exists(ref_path):
        print("no reference.safetensors (export with --reference-tokens N to compare against the Burn model)")
        return
    ref = load_file(ref_path)
    host = GenieHost(root, manifest)
    embeds = host.embed(ref["prompt_ids"])
    if "image_features" in ref:
        at = np.nonzero(ref["prompt_ids"] == int(ref["image_token_id"][0]))[0]
        embeds[0, at] = ref["image_features"][0]
    worst, n, _ = generate(host, manifest, ref, embeds, "Genie layout", tol, True)
    calls = ", ".join(f"{v} {k}" for k, v in sorted(host.calls.items()))
    print(f"Genie layout chained in onnxruntime: {n} greedy tokens equal the Burn model's ({calls} calls through {len(gi['parts'])} parts); worst logits relative error {worst:.2e} (tolerance {tol:g})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--qdq-tol", type=float, default=1e-2)
    args = ap.parse_args()
    manifest = json.load(open(os.path.join(args.dir, "manifest.json")))
    for name, entry in manifest["graphs"].items():
        check_graph(os.path.join(args.dir, entry["file"]), entry)
        forms = ["float"]
        if entry.get("qdq"):
            check_graph(os.path.join(args.dir, entry["qdq"]), entry)
            forms.append("QDQ")
        print(f"{name}: checker and strict shape inference pass ({', '.join(forms)}); inputs and outputs match manifest.json")
        if entry.get("encodings"):
            p, a, q = check_encodings(*(os.path.join(args.dir, entry[k]) for k in ("file", "encodings", "qdq")))
            print(f"{name}: AIMET encodings name graph tensors: {p} weights (each quantized weight has one), {a} activations; QDQ graph: {q} QuantizeLinear")
    if manifest.get("genie"):
        genie(args.dir, manifest, args.tol)
        return
    replay(args.dir, manifest, "file", "reference.safetensors", args.tol)
    if any(e.get("qdq") for e in manifest["graphs"].values()):
        replay(args.dir, manifest, "qdq", "reference.qdq.safetensors", args.qdq_tol)


# The share of the quantization error (Burn's quantized model against its float one) that
# the QDQ graphs may add with the 16-bit quantizers Qualcomm's tools place beyond ours: the
# vision features, and the logits (where those quantizers measure about half of it, through
# the attention scores, norms and residual sums the Burn model keeps in float).
QUANT_SHARE = 0.05
LOGITS_QUANT_SHARE = 1.0


def generate(host, manifest, ref, embeds, label, tol, gate_logits):
    """Prompt through prefill/decode, then the greedy loop; tokens must match the Burn model's,
    and with `gate_logits` every step's logits within `tol`. Returns the worst error."""
    prompt, expected, step_logits = ref["prompt_ids"], ref["generated_ids"], ref["step_logits"]
    n, pl = len(prompt), manifest["prefill_len"]
    pos, logits = 0, None
    calls = {"prefill": 0, "decode": 0}
    while pos < n:
        graph, t = ("prefill", pl) if n - pos >= pl else ("decode", 1)
        logits = host.step(graph, embeds[:, pos : pos + t])
        calls[graph] += 1
        pos += t
    worst = 0.0
    for i, want in enumerate(expected):
        last = logits[0, -1]
        err = rel_err(last, step_logits[i])
        worst = max(worst, err)
        token = int(np.argmax(last))
        if gate_logits and err > tol:
            raise SystemExit(f"{label} step {i}: logits differ from the Burn model by {err:.2e} relative (tolerance {tol:g})")
        if token != int(want):
            # The whole pipeline (logits not gated) on onnxruntime's own image features may
            # break a near tie the other way: the Burn model's two tokens within TIE of its
            # largest logit. That ends the comparison (the sequences part), it is not a fault.
            ref_row = step_logits[i]
            margin = float(ref_row[int(want)] - ref_row[token]) / max(float(np.abs(ref_row).max()), 1e-30)
            if not gate_logits and margin < TIE:
                print(f"{label} step {i}: a near tie in the Burn model's logits ({margin:.1e} of the largest); "
                      f"onnxruntime chose token {token}, the Burn model {int(want)}; compared up to here")
                return worst, i, calls
            raise SystemExit(f"{label} step {i}: onnxruntime chose token {token}, the Burn model {int(want)}")
        logits = host.step("decode", host.embed([token]))
        calls["decode"] += 1
    return worst, len(expected), calls


def replay(root, manifest, form, reference, tol):
    """Every graph against the Burn model on the same inputs (the language graphs get the
    reference's image features), then the whole pipeline on onnxruntime's own features."""
    ref_path = os.path.join(root, reference)
    if not os.path.exists(ref_path):
        print(f"no {reference} (export with --reference-tokens N to compare against the Burn model)")
        return
    label = "QDQ" if form == "qdq" else "float"
    sessions = {name: session(os.path.join(root, entry[form])) for name, entry in manifest["graphs"].items()}
    ref = load_file(ref_path)
    float_ref = os.path.join(root, "reference.safetensors")
    vision_tol = tol
    if form == "qdq" and os.path.exists(float_ref):
        # The QDQ graphs also quantize, at 16 bits, the tensors Qualcomm's tools add (calibrated
        # at export), which the Burn model does not: their distance from the Burn model is held
        # small against the quantization error itself (the first step's logits).
        quant = rel_err(ref["step_logits"][0], load_file(float_ref)["step_logits"][0])
        tol = max(tol, LOGITS_QUANT_SHARE * quant)
        print(f"{label}: the Burn model's quantization error is {quant:.2e} (first logits); tolerance {tol:.2e}")
    prompt = ref["prompt_ids"]
    embeds = Host(manifest, sessions).embed(prompt)
    if "pixels" not in ref:
        worst, n, calls = generate(Host(manifest, sessions), manifest, ref, embeds, label, tol, True)
        print(
            f"{label} generation: {n} greedy tokens equal the Burn model's ({calls['prefill']} prefill and "
            f"{calls['decode']} decode calls); worst logits relative error {worst:.2e} (tolerance {tol:g})"
        )
        return
    features = sessions["vision_encoder"].run(None, {"pixels": ref["pixels"]})[0]
    err = rel_err(features, ref["image_features"])
    print(f"{label} vision_encoder: image features within {err:.2e} relative of the Burn model's")
    if form == "qdq" and os.path.exists(float_ref):
        quant = rel_err(ref["image_features"], load_file(float_ref)["image_features"])
        vision_tol = max(vision_tol, QUANT_SHARE * quant)
        print(f"{label} vision_encoder: the quantization error is {quant:.2e}; tolerance {vision_tol:.2e}")
    if err > vision_tol:
        raise SystemExit(f"{label} vision_encoder: features differ by {err:.2e} relative (tolerance {vision_tol:g})")
    at = np.nonzero(prompt == int(ref["image_token_id"][0]))[0]
    if len(at) != features.shape[1]:
        raise SystemExit(f"{len(at)} image tokens in the prompt for {features.shape[1]} feature rows")
    # The language graphs on the Burn model's image features: their own error, step by step.
    same = embeds.copy()
    same[0, at] = ref["image_features"][0]
    worst, n, calls = generate(Host(manifest, sessions), manifest, ref, same, label, tol, True)
    print(
        f"{label} language graphs: {n} greedy tokens equal the Burn model's ({calls['prefill']} prefill and "
        f"{calls['decode']} decode calls); worst logits relative error {worst:.2e} (tolerance {tol:g})"
    )
    # The whole pipeline on onnxruntime alone: vision -> prefill -> decode loop.
    embeds[0, at] = features[0]
    worst, n, _ = generate(Host(manifest, sessions), manifest, ref, embeds, label, tol, False)
    print(f"{label} generation with the image (vision -> prefill -> decode): {n} greedy tokens equal the Burn model's; worst logits relative error {worst:.2e}")


if __name__ == "__main__":
    sys.exit(main())
