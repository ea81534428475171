"""Checks the ONNX graphs `autoneural export` wrote against the Burn model.

For every graph in manifest.json: onnx.checker (full check) and strict shape inference,
and its inputs and outputs as the manifest lists them. Then the reference generation of
`autoneural export --reference-tokens N` (reference.safetensors, produced by the Burn
model) is replayed through onnxruntime, driving the graphs as the manifest says
(embed_tokens per token, prefill on full chunks, decode on the rest, state carried by the
host): the logits of every generated token within --tol relative (1e-4 for fp32 graphs)
and the same greedy tokens.

    pip install onnx onnxruntime safetensors numpy
    python scripts/verify_onnx.py EXPORT_DIR [--tol 1e-4]

Exits 1 on any failure.
"""

import argparse
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from safetensors.numpy import load_file

DTYPES = {"float32": onnx.TensorProto.FLOAT, "int64": onnx.TensorProto.INT64}


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


def rel_err(a, b):
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


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

    def embed(self, ids):
        rows = [self.s["embed_tokens"].run(None, {"input_ids": np.array([[i]], np.int64)})[0] for i in ids]
        return np.concatenate(rows, axis=1)

    def step(self, graph, embeds):
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
        feeds.update(self.state)
        names = [o.name for o in self.s[graph].get_outputs()]
        outs = dict(zip(names, self.s[graph].run(None, feeds)))
        for st in self.m["state"]:
            if st["kind"] == "conv":
                self.state[st["inputs"][0]] = outs[st["outputs"][0]]
            else:
                for cache, present in zip(st["inputs"], st["outputs"]):
                    self.state[cache][:, :, p : p + t, :] = outs[present]
        self.position += t
        return outs["logits"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()
    manifest = json.load(open(os.path.join(args.dir, "manifest.json")))
    for name, entry in manifest["graphs"].items():
        check_graph(os.path.join(args.dir, entry["file"]), entry)
        print(f"{name}: checker and strict shape inference pass; inputs and outputs match manifest.json")
    ref_path = os.path.join(args.dir, "reference.safetensors")
    if not os.path.exists(ref_path):
        print("no reference.safetensors (export with --reference-tokens N to compare against the Burn model)")
        return
    sessions = {}
    for name, entry in manifest["graphs"].items():
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        sessions[name] = ort.InferenceSession(os.path.join(args.dir, entry["file"]), opts, providers=["CPUExecutionProvider"])
    ref = load_file(ref_path)
    prompt, expected, step_logits = ref["prompt_ids"], ref["generated_ids"], ref["step_logits"]
    host = Host(manifest, sessions)
    embeds = host.embed(prompt)
    if "pixels" in ref:
        # vision -> features, spliced in at the image-token positions, in order.
        features = sessions["vision_encoder"].run(None, {"pixels": ref["pixels"]})[0]
        err = rel_err(features, ref["image_features"])
        print(f"vision_encoder: image features within {err:.2e} relative of the Burn model's")
        if err > args.tol:
            raise SystemExit(f"vision_encoder: features differ by {err:.2e} relative (tolerance {args.tol:g})")
        at = np.nonzero(prompt == int(ref["image_token_id"][0]))[0]
        if len(at) != features.shape[1]:
            raise SystemExit(f"{len(at)} image tokens in the prompt for {features.shape[1]} feature rows")
        embeds[0, at] = features[0]
    n, pl = len(prompt), manifest["prefill_len"]
    pos, logits = 0, None
    calls = {"prefill": 0, "decode": 0}
    while pos < n:
        graph, t = ("prefill", pl) if n - pos >= pl else ("decode", 1)
        logits = host.step(graph, embeds[:, pos : pos + t])
        calls[graph] += 1
        pos += t
    worst, tokens = 0.0, []
    for i, want in enumerate(expected):
        last = logits[0, -1]
        err = rel_err(last, step_logits[i])
        worst = max(worst, err)
        token = int(np.argmax(last))
        tokens.append(token)
        if err > args.tol:
            raise SystemExit(f"step {i}: logits differ from the Burn model by {err:.2e} relative (tolerance {args.tol:g})")
        if token != int(want):
            raise SystemExit(f"step {i}: onnxruntime chose token {token}, the Burn model {int(want)}")
        logits = host.step("decode", host.embed([token]))
        calls["decode"] += 1
    print(
        f"generation: {len(tokens)} greedy tokens equal the Burn model's ({calls['prefill']} prefill and "
        f"{calls['decode']} decode calls); worst logits relative error {worst:.2e} (tolerance {args.tol:g})"
    )


if __name__ == "__main__":
    sys.exit(main())
