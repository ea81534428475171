//! Where Qualcomm's tools quantize activations, so our encodings cover exactly those
//! tensors. AIMET's QuantSim (aimet-onnx 2.42, the placement QNN's converter follows for an
//! A16 graph) puts one quantizer on every float tensor that is a model input, an op input
//! other than a weighted op's parameters (constants such as a norm's weight or an epsilon
//! included), or an op output, except the outputs of data-movement ops (their values are
//! already on their input's grid), and ties some quantizers together:
//! - a `Concat` shares its output's quantizer with each input that feeds nothing else (and,
//!   through grid-preserving producers such as `Slice`, further up);
//! - `AveragePool`, `Relu` and `Resize` outputs share their input's quantizer.
//!
//! Its configuration cannot narrow this (it refuses `is_output_quantized: False` as a
//! default and `is_input_quantized: False` anywhere), so the exporter follows it: the
//! tensors our quantization does not cover get encodings calibrated on the export's inputs
//! ([`crate::calibrate`]), and the QDQ graphs quantize every one of them.

use std::collections::{BTreeMap, HashMap, HashSet};

use onnx_protobuf::NodeProto;
use onnx_protobuf::tensor_proto::DataType;

use crate::graph::{DType, Graph};

/// Ops whose outputs AIMET leaves unquantized: its `op_outputs_to_ignore`, and every
/// grid-preserving op (`_is_grid_preserving_op`: their outputs are on their input's grid
/// whatever it is; the ones the exporter writes), which it also looks through to find the
/// quantizer a tensor's values are on.
pub const UNQUANTIZED_OUTPUTS: [&str; 10] =
    ["Flatten", "Gather", "Identity", "Reshape", "Shape", "Slice", "Split", "Squeeze", "Transpose", "Unsqueeze"];

/// Ops whose output shares its input's quantizer.
const TIED_FORWARD: [&str; 3] = ["AveragePool", "Relu", "Resize"];

/// The inputs of `n` AIMET takes as parameters (weights it quantizes as such, or not at
/// all), by input index.
fn parameter_inputs(n: &NodeProto) -> &'static [usize] {
    match n.op_type.as_str() {
        "Conv" | "Gemm" | "LayerNormalization" => &[1, 2],
        "BatchNormalization" => &[1, 2, 3, 4],
        "MatMul" => &[1],
        _ => &[],
    }
}

/// The tensors the supergroup passes of our QuantSim configuration (and of Qualcomm's HTP
/// configurations: `supergroup_pass_list` `RMSNormalization`, `MatmulAdd`) leave
/// unquantized, because QNN fuses the ops that write them into one:
/// - an RMS norm written out (`Mul(x, x)`, `ReduceMean`, `Add(eps)`, `Sqrt`, `Div(x, .)`,
///   then `Mul` by the weight, and a `Mul` after that if there is one): every output but
///   the last, and the epsilon;
/// - a `MatMul` by a weight followed by `Add` of a constant bias: the product, and the bias
///   (which becomes the op's parameter).
fn fused_away<'g>(
    nodes: &'g [NodeProto],
    consumers: &HashMap<&str, Vec<&'g NodeProto>>,
    initializers: &HashMap<&str, bool>,
) -> HashSet<&'g str> {
    let only = |t: &str| match consumers.get(t).map(Vec::as_slice) {
        Some([c]) => Some(*c),
        _ => None,
    };
    let constant = |t: &str| initializers.contains_key(t);
    let mut out = HashSet::new();
    for n in nodes {
        if n.op_type == "Mul" && n.input.len() == 2 && n.input[0] == n.input[1] {
            let x = n.input[0].as_str();
            let chain = (|| {
                let mean = only(&n.output[0]).filter(|m| m.op_type == "ReduceMean")?;
                let add = only(&mean.output[0]).filter(|a| a.op_type == "Add")?;
                let sqrt = only(&add.output[0]).filter(|q| q.op_type == "Sqrt")?;
                let div = only(&sqrt.output[0]).filter(|d| d.op_type == "Div" && d.input[0] == x)?;
                let eps = add.input.iter().find(|i| constant(i))?;
                let mut hidden = vec![&n.output[0], &mean.output[0], &add.output[0], &sqrt.output[0], eps];
                // With the weight, the Div's output is internal too; and a Mul right after the
                // weight's (a layer scale) is taken into the norm as well (measured on
                // aimet-onnx 2.42: the weight Mul's output then has no quantizer).
                if let Some(weight) = only(&div.output[0]).filter(|m| m.op_type == "Mul") {
                    hidden.push(&div.output[0]);
                    if only(&weight.output[0]).is_some_and(|m| m.op_type == "Mul") {
                        hidden.push(&weight.output[0]);
                    }
                }
                Some(hidden)
            })();
            out.extend(chain.into_iter().flatten().map(String::as_str));
        }
        if n.op_type == "MatMul" && n.input.get(1).is_some_and(|w| constant(w)) {
            if let Some(add) = only(&n.output[0]).filter(|a| a.op_type == "Add") {
                let bias = add.input.iter().find(|i| **i != n.output[0] && constant(i));
                if let Some(bias) = bias {
                    out.insert(n.output[0].as_str());
                    out.insert(bias.as_str());
                }
            }
        }
    }
    out
}

/// AIMET's activation quantizers of a graph.
#[derive(Debug, Default)]
pub struct Placement {
    /// The quantized tensors, in graph order.
    pub tensors: Vec<String>,
    /// Each quantized tensor's group: tensors sharing one quantizer share a representative.
    pub group: HashMap<String, String>,
    /// Per group, tensors whose existing encoding the group takes first: its members, then
    /// the other inputs of its `Concat`s (a KV cache's `Concat` takes the cache's encoding,
    /// whose bits the policy set, for the past entries it is tied to).
    pub candidates: HashMap<String, Vec<String>>,
    /// Groups read as the second input of a MatMul of two activations: Qualcomm's HTP
    /// (V73 on) takes that input symmetric when it is 16 bits wide (AIMET's exception rule).
    pub symmetric: HashSet<String>,
}

impl Placement {
    /// The placement on float graph `g`.
    pub fn of<'g>(g: &'g Graph) -> Self {
        let nodes = g.nodes();
        let initializers: HashMap<&str, bool> =
            g.initializers().iter().map(|t| (t.name.as_str(), t.data_type == DataType::FLOAT as i32)).collect();
        let mut float: HashSet<&str> = initializers.iter().filter(|(_, f)| **f).map(|(n, _)| *n).collect();
        float.extend(g.input_ports.iter().filter(|p| p.dtype == DType::Float32).map(|p| p.name.as_str()));
        let producer: HashMap<&str, &NodeProto> =
            nodes.iter().flat_map(|n| n.output.iter().map(move |o| (o.as_str(), n))).collect();
        let mut consumers: HashMap<&str, Vec<&NodeProto>> = HashMap::new();
        let mut params = HashSet::new();
        for n in nodes {
            for (i, name) in n.input.iter().enumerate() {
                consumers.entry(name.as_str()).or_default().push(n);
                if parameter_inputs(n).contains(&i) && initializers.contains_key(name.as_str()) {
                    params.insert(name.as_str());
                }
            }
            // A node's outputs are float when its first input is (the exporter writes no op
            // that turns one type into the other).
            if n.input.first().is_some_and(|i| float.contains(i.as_str())) {
                float.extend(n.output.iter().map(String::as_str));
            }
        }
        let unfused = fused_away(nodes, &consumers, &initializers);
        let quantizable = |name: &str| {
            !name.is_empty()
                && !unfused.contains(name)
                && float.contains(name)
                && !params.contains(name)
                && !producer.get(name).is_some_and(|p| UNQUANTIZED_OUTPUTS.contains(&p.op_type.as_str()))
                && !consumers.get(name).is_some_and(|cs| cs.iter().any(|c| c.op_type == "Resize" && c.input[0] != name))
        };
        let mut tensors = Vec::new();
        let mut seen = HashSet::new();
        let ordered = g
            .input_ports
            .iter()
            .map(|p| p.name.as_str())
            .chain(nodes.iter().flat_map(|n| n.input.iter().chain(&n.output).map(String::as_str)));
        for name in ordered {
            if quantizable(name) && seen.insert(name) {
                tensors.push(name.to_string());
            }
        }
        // The quantizer a tensor's values are on: its own, or through data-movement
        // producers, theirs (with the tensors on the way).
        let effective = |name: &'g str| -> Option<(String, Vec<&'g str>)> {
            let mut at = name;
            let mut path = Vec::new();
            loop {
                if seen.contains(at) {
                    return Some((at.to_string(), path));
                }
                let p = producer.get(at).filter(|p| UNQUANTIZED_OUTPUTS.contains(&p.op_type.as_str()))?;
                path.push(at);
                at = p.input.first()?.as_str();
            }
        };
        let mut parent: HashMap<String, String> = tensors.iter().map(|t| (t.clone(), t.clone())).collect();
        fn root(parent: &HashMap<String, String>, mut t: String) -> String {
            while parent[&t] != t {
                t = parent[&t].clone();
            }
            t
        }
        let union = |parent: &mut HashMap<String, String>, a: &str, b: &str| {
            let (ra, rb) = (root(parent, a.to_string()), root(parent, b.to_string()));
            if ra != rb {
                parent.insert(ra, rb);
            }
        };
        let mut extra_candidates: HashMap<String, Vec<String>> = HashMap::new();
        // Concat: backward, from the last one, as AIMET's `_propagate_output_encodings`.
        let mut visited: HashSet<&str> = HashSet::new();
        for concat in nodes.iter().rev().filter(|n| n.op_type == "Concat") {
            let out = concat.output[0].as_str();
            if !seen.contains(out) {
                continue;
            }
            let mut stack = vec![concat];
            while let Some(op) = stack.pop() {
                if !visited.insert(op.name.as_str()) {
                    continue;
                }
                for inp in op.input.iter().filter(|i| float.contains(i.as_str())) {
                    let Some((src, path)) = effective(inp) else { continue };
                    extra_candidates.entry(out.to_string()).or_default().push(src.clone());
                    let on_path: HashSet<&str> =
                        path.iter().filter_map(|t| producer.get(t).map(|p| p.name.as_str())).collect();
                    let mut users: HashSet<&str> = HashSet::new();
                    for t in std::iter::once(src.as_str()).chain(path.iter().copied()) {
                        for c in consumers.get(t).into_iter().flatten() {
                            if !on_path.contains(c.name.as_str()) {
                                users.insert(c.name.as_str());
                            }
                        }
                    }
                    if users.len() > 1 {
                        continue;
                    }
                    union(&mut parent, &src, out);
                    if let Some(p) = producer.get(inp.as_str())
                        && (p.op_type == "Concat" || UNQUANTIZED_OUTPUTS.contains(&p.op_type.as_str()))
                    {
                        stack.push(p);
                    }
                }
            }
        }
        // AveragePool, Relu, Resize: forward.
        for n in nodes.iter().filter(|n| TIED_FORWARD.contains(&n.op_type.as_str())) {
            let Some((src, _)) = n.input.first().and_then(|i| effective(i)) else { continue };
            for out in n.output.iter().filter(|o| seen.contains(o.as_str())) {
                union(&mut parent, out, &src);
            }
        }
        let group: HashMap<String, String> = tensors.iter().map(|t| (t.clone(), root(&parent, t.clone()))).collect();
        let symmetric = nodes
            .iter()
            .filter(|n| n.op_type == "MatMul" && n.input.get(1).is_some_and(|b| !params.contains(b.as_str())))
            .filter_map(|n| effective(&n.input[1]))
            .map(|(src, _)| group[&src].clone())
            .collect();
        let mut candidates: HashMap<String, Vec<String>> = HashMap::new();
        for t in &tensors {
            candidates.entry(group[t].clone()).or_default().push(t.clone());
        }
        for (out, extra) in extra_candidates {
            candidates.entry(group[&out].clone()).or_default().extend(extra);
        }
        Self { tensors, group, candidates, symmetric }
    }

    /// The groups, each with its members in graph order.
    pub fn groups(&self) -> BTreeMap<&str, Vec<&str>> {
        let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for t in &self.tensors {
            groups.entry(self.group[t].as_str()).or_default().push(t);
        }
        groups
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{Attr, DType};

    /// A norm, a Slice, a Concat with a past input, and a MatMul of two activations: AIMET's
    /// placement (checked against aimet-onnx 2.42 on the exported graphs: no mismatch).
    #[test]
    fn quantizers_where_aimet_puts_them() {
        let mut g = Graph::new("t");
        let x = g.input("x", DType::Float32, &[1, 4, 8]);
        let past = g.input("past", DType::Float32, &[1, 2, 8]);
        let w = g.weight("norm.weight", &[8], &[1.0; 8]);
        let h = g.rms_norm(&x, &w, 1e-6);
        let proj = g.weight("proj.weight", &[8, 8], &[0.5; 64]);
        let y = g.matmul(&h, &proj);
        let bias = g.weight("proj.bias", &[8], &[0.0; 8]);
        let y = g.add(&y, &bias);
        let head = g.slice(&y, &[0], &[2], &[1]);
        let keys = g.concat(&[&past, &head], 1);
        let kt = g.transpose(&keys, &[0, 2, 1]);
        let scores = g.matmul(&y, &kt);
        let p = g.op("Softmax", &[&scores], vec![("axis", Attr::Int(-1))]);
        g.output(&p, "probs", DType::Float32, &[1, 4, 4]);
        let placement = Placement::of(&g);
        let q: HashSet<&str> = placement.tensors.iter().map(String::as_str).collect();
        // The norm's inside, the MatMul before its bias, the bias, the Slice and Transpose
        // outputs: none; its input, weight and output, and the rest: one each.
        let n = g.nodes();
        let out = |i: usize| n[i].output[0].as_str();
        for t in [out(0), out(1), out(2), out(3), out(4), out(6), out(8), out(10), "proj.bias", "proj.weight"] {
            assert!(!q.contains(t), "{t} is not quantized");
        }
        for t in ["x", "past", "norm.weight", out(5), out(7), out(9), out(11), out(12)] {
            assert!(q.contains(t), "{t} is quantized");
        }
        // The past entries share the keys' quantizer (the sliced rows feed nothing else, and
        // the Slice preserves y's grid: y feeds two ops, so it is not tied); and that group,
        // read as the second input of a MatMul of activations, is symmetric.
        assert_eq!(placement.group["past"], placement.group[out(9)]);
        assert_ne!(placement.group[out(7)], placement.group[out(9)]);
        assert!(placement.symmetric.contains(&placement.group[out(9)]));
        assert!(!placement.symmetric.contains(&placement.group[out(7)]));
    }

    /// A norm followed by a layer scale (MobileNetV5's RMS-normed blocks): AIMET takes the
    /// scale into the norm, so the weight's product has no quantizer; both constants do.
    #[test]
    fn a_layer_scale_after_a_norm_is_inside_it() {
        let mut g = Graph::new("t");
        let x = g.input("x", DType::Float32, &[1, 4, 8]);
        let w = g.weight("norm.weight", &[8], &[1.0; 8]);
        let h = g.rms_norm(&x, &w, 1e-6);
        let gamma = g.weight("layer_scale.gamma", &[8], &[0.1; 8]);
        let y = g.mul(&h, &gamma);
        g.output(&y, "y", DType::Float32, &[1, 4, 8]);
        let placement = Placement::of(&g);
        let q: HashSet<&str> = placement.tensors.iter().map(String::as_str).collect();
        assert!(!q.contains(h.as_str()) && q.contains(y.as_str()));
        assert!(q.contains("norm.weight") && q.contains("layer_scale.gamma") && q.contains("x"));
    }
}
