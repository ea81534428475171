//! Op lists from exported ONNX graphs (`autoneural export`): loads a `.onnx` (initializer
//! dims and types only; external data files are never read), propagates static shapes
//! through the op set the exporter emits, and produces the same [`OpCost`]s as the analytic
//! producers. QDQ graphs: a `DequantizeLinear` of an integer initializer is a weight at its
//! stored bit-width (its scales and zero points are metadata and not counted), and the
//! `QuantizeLinear`/`DequantizeLinear` pairs on activations are encodings, not ops.
//! Graph inputs named `past_key_*`, `past_value_*`, `conv_state_*` are decode state.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use autoneural_export::onnx::tensor_proto::DataType;
use autoneural_export::onnx::type_proto::Value as TypeValue;
use autoneural_export::onnx::{Message, ModelProto, NodeProto, TensorProto};

use super::ops::{Bits, OpCost, OpKind};

/// What a value in the graph is.
#[derive(Debug, Clone)]
enum Src {
    Act,
    State,
    /// A parameter, `bits` per stored element.
    Weight {
        bits: u32,
    },
    /// An int64 constant (shapes, axes, indices) or a one-element float: costs nothing.
    Const(Vec<i64>),
}

#[derive(Debug, Clone)]
struct Val {
    shape: Vec<usize>,
    src: Src,
}

impl Val {
    fn elems(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }
}

/// Bits per element of an ONNX element type.
fn dtype_bits(t: i32) -> Option<u32> {
    let t = <DataType as autoneural_export::protobuf::Enum>::from_i32(t)?;
    Some(match t {
        DataType::INT4 | DataType::UINT4 => 4,
        DataType::INT8 | DataType::UINT8 | DataType::BOOL => 8,
        DataType::INT16 | DataType::UINT16 | DataType::FLOAT16 | DataType::BFLOAT16 => 16,
        DataType::INT32 | DataType::UINT32 | DataType::FLOAT => 32,
        DataType::INT64 | DataType::UINT64 | DataType::DOUBLE => 64,
        _ => return None,
    })
}

fn int64_values(t: &TensorProto) -> Vec<i64> {
    if !t.int64_data.is_empty() {
        return t.int64_data.clone();
    }
    t.raw_data.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes"))).collect()
}

/// Reads `path` and returns its op list with activations at `bits.activation` and state
/// at `bits.kv`.
pub fn read_onnx(path: &Path, bits: Bits) -> Result<Vec<OpCost>> {
    // A graph with its weights inline can be large (protobuf caps it at 2 GiB).
    let bytes = autoneural_io::read::read(path, autoneural_io::read::Kind { what: "an ONNX graph", limit: 2 << 30 })?;
    let model =
        ModelProto::parse_from_bytes(&bytes).with_context(|| format!("{}: not an ONNX model", path.display()))?;
    model_ops(&model, bits).with_context(|| path.display().to_string())
}

/// The op list of a parsed model.
pub fn model_ops(model: &ModelProto, bits: Bits) -> Result<Vec<OpCost>> {
    let graph = model.graph.as_ref().ok_or_else(|| anyhow!("the model has no graph"))?;
    let mut vals: HashMap<String, Val> = HashMap::new();
    for t in &graph.initializer {
        let shape: Vec<usize> = t.dims.iter().map(|&d| d.max(0) as usize).collect();
        let n: usize = shape.iter().product();
        let src = if t.data_type == DataType::INT64 as i32 {
            Src::Const(int64_values(t))
        } else if n <= 1 {
            Src::Const(Vec::new())
        } else {
            let bits = dtype_bits(t.data_type)
                .ok_or_else(|| anyhow!("initializer {:?}: unsupported element type {}", t.name, t.data_type))?;
            Src::Weight { bits }
        };
        vals.insert(t.name.clone(), Val { shape, src });
    }
    for input in &graph.input {
        if vals.contains_key(&input.name) {
            continue;
        }
        let Some(TypeValue::TensorType(tt)) = input.type_.as_ref().and_then(|t| t.value.clone()) else {
            bail!("input {:?} is not a tensor", input.name);
        };
        let shape = tt
            .shape
            .dim
            .iter()
            .map(|d| match d.value {
                Some(autoneural_export::onnx::tensor_shape_proto::dimension::Value::DimValue(v)) if v >= 0 => {
                    Ok(v as usize)
                }
                _ => Err(anyhow!("input {:?} has a dynamic shape (the cost model needs static shapes)", input.name)),
            })
            .collect::<Result<Vec<_>>>()?;
        let state = ["past_key_", "past_value_", "conv_state_"].iter().any(|p| input.name.starts_with(p));
        vals.insert(input.name.clone(), Val { shape, src: if state { Src::State } else { Src::Act } });
    }
    let mut ops = Vec::new();
    for node in &graph.node {
        let what = || format!("node {:?} ({})", node.name, node.op_type);
        let op = node_cost(node, &mut vals, bits).with_context(what)?;
        ops.extend(op);
    }
    Ok(ops)
}

fn attr_i(n: &NodeProto, name: &str) -> Option<i64> {
    n.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

fn attr_ints(n: &NodeProto, name: &str) -> Option<Vec<i64>> {
    n.attribute.iter().find(|a| a.name == name).map(|a| a.ints.clone())
}

fn axis(a: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    if a < -r || a >= r.max(1) {
        bail!("axis {a} out of range for rank {rank}");
    }
    Ok(if a < 0 { (a + r) as usize } else { a as usize })
}

fn broadcast(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let n = a.len().max(b.len());
    (0..n)
        .map(|i| {
            let x = if i + a.len() >= n { a[i + a.len() - n] } else { 1 };
            let y = if i + b.len() >= n { b[i + b.len() - n] } else { 1 };
            match (x, y) {
                _ if x == y => Ok(x),
                (1, _) => Ok(y),
                (_, 1) => Ok(x),
                _ => bail!("shapes {a:?} and {b:?} do not broadcast"),
            }
        })
        .collect()
}

/// Propagates shapes through one node and returns its cost (`None` for views and encodings).
/// The values a node reads, by input position.
struct NodeInputs<'a> {
    node: &'a NodeProto,
    vals: Vec<Option<Val>>,
}

impl<'a> NodeInputs<'a> {
    fn of(node: &'a NodeProto, vals: &HashMap<String, Val>) -> Self {
        Self { node, vals: node.input.iter().map(|name| vals.get(name).cloned()).collect() }
    }

    fn get(&self, i: usize) -> Result<Val> {
        let name = self.node.input.get(i).filter(|s| !s.is_empty()).ok_or_else(|| anyhow!("missing input {i}"))?;
        self.vals[i].clone().ok_or_else(|| anyhow!("input {name:?} is not defined before use"))
    }

    fn consts(&self, i: usize) -> Result<Vec<i64>> {
        match self.get(i)?.src {
            Src::Const(v) => Ok(v),
            _ => bail!("input {i} must be a constant initializer"),
        }
    }

    fn len(&self) -> usize {
        self.node.input.len()
    }
}

/// One node of the graph: its outputs' shapes into `vals`, and its cost (`None` for the
/// ops that only rename or reshape a value, and for QDQ pairs, which are encodings).
fn node_cost(n: &NodeProto, vals: &mut HashMap<String, Val>, bits: Bits) -> Result<Option<OpCost>> {
    let inputs = NodeInputs::of(n, vals);
    let x = inputs.get(0)?;
    if let Some(shape) = view_shape(n, &inputs, &x)? {
        vals.insert(n.output[0].clone(), Val { shape, src: x.src });
        return Ok(None);
    }
    let (outs, kind) = output_shapes(n, &inputs, &x)?;
    let op = op_cost(n, &inputs, &x, &outs, kind, bits)?;
    for (name, s) in n.output.iter().zip(outs) {
        vals.insert(name.clone(), Val { shape: s, src: Src::Act });
    }
    Ok(Some(op))
}

/// The shape of an op that only renames or reshapes its input (no cost): Identity, the QDQ
/// ops (a weight stays a weight at its stored width; an activation's encoding is free),
/// Reshape, Squeeze, Unsqueeze. `None` for every other op.
fn view_shape(n: &NodeProto, inputs: &NodeInputs, x: &Val) -> Result<Option<Vec<usize>>> {
    Ok(Some(match n.op_type.as_str() {
        "Identity" | "QuantizeLinear" | "DequantizeLinear" => x.shape.clone(),
        "Reshape" => {
            let target = inputs.consts(1)?;
            let total = x.elems();
            let mut s: Vec<i64> =
                target.iter().enumerate().map(|(i, &d)| if d == 0 { x.shape[i] as i64 } else { d }).collect();
            if let Some(p) = s.iter().position(|&d| d == -1) {
                let known: i64 = s.iter().filter(|&&d| d != -1).product();
                s[p] = total as i64 / known.max(1);
            }
            let s: Vec<usize> = s.iter().map(|&d| d as usize).collect();
            if s.iter().map(|&d| d as u64).product::<u64>() != total {
                bail!("Reshape of {:?} to {target:?}", x.shape);
            }
            s
        }
        "Squeeze" => {
            let ax: Vec<usize> = inputs.consts(1)?.iter().map(|&a| axis(a, x.shape.len())).collect::<Result<_>>()?;
            x.shape.iter().enumerate().filter(|(i, _)| !ax.contains(i)).map(|(_, &d)| d).collect()
        }
        "Unsqueeze" => {
            let axes = inputs.consts(1)?;
            let r = x.shape.len() + axes.len();
            let ax: Vec<usize> = axes.iter().map(|&a| axis(a, r)).collect::<Result<_>>()?;
            let mut it = x.shape.iter();
            (0..r).map(|i| if ax.contains(&i) { 1 } else { *it.next().unwrap_or(&1) }).collect()
        }
        _ => return Ok(None),
    }))
}

/// The output shapes and the kind of a costed op.
fn output_shapes(n: &NodeProto, inputs: &NodeInputs, x: &Val) -> Result<(Vec<Vec<usize>>, OpKind)> {
    let one = |s: Vec<usize>, kind| Ok((vec![s], kind));
    match n.op_type.as_str() {
        "Add" | "Mul" | "Div" | "Sub" => one(broadcast(&x.shape, &inputs.get(1)?.shape)?, OpKind::Elementwise),
        "Sigmoid" | "Sqrt" | "Neg" | "Gelu" => one(x.shape.clone(), OpKind::Elementwise),
        "Softmax" => one(x.shape.clone(), OpKind::Softmax),
        "BatchNormalization" | "LayerNormalization" => one(x.shape.clone(), OpKind::Norm),
        "ReduceMean" => one(reduce_shape(n, inputs, x)?, OpKind::Norm),
        "MatMul" | "Gemm" => product_shape(n, inputs, x),
        "Conv" => conv_shape(n, inputs, x),
        "Transpose" => {
            let r = x.shape.len();
            let perm = attr_ints(n, "perm").unwrap_or_else(|| (0..r as i64).rev().collect());
            one(perm.iter().map(|&p| axis(p, r).map(|p| x.shape[p])).collect::<Result<_>>()?, OpKind::DataMovement)
        }
        "Slice" => one(slice_shape(inputs, x)?, OpKind::DataMovement),
        "Concat" => {
            let a = axis(attr_i(n, "axis").ok_or_else(|| anyhow!("Concat needs an axis"))?, x.shape.len())?;
            let mut s = x.shape.clone();
            s[a] = (0..inputs.len()).map(|i| inputs.get(i).map(|v| v.shape[a])).sum::<Result<usize>>()?;
            one(s, OpKind::DataMovement)
        }
        "Split" => {
            let a = axis(attr_i(n, "axis").unwrap_or(0), x.shape.len())?;
            let parts = if inputs.len() > 1 {
                inputs.consts(1)?.iter().map(|&p| p as usize).collect()
            } else {
                let k = attr_i(n, "num_outputs").unwrap_or(n.output.len() as i64).max(1) as usize;
                vec![x.shape[a] / k; k]
            };
            let outs = parts
                .iter()
                .map(|&p| {
                    let mut s = x.shape.clone();
                    s[a] = p;
                    s
                })
                .collect();
            Ok((outs, OpKind::DataMovement))
        }
        "Gather" => {
            let idx = inputs.get(1)?;
            let a = axis(attr_i(n, "axis").unwrap_or(0), x.shape.len())?;
            let mut s = x.shape[..a].to_vec();
            s.extend(&idx.shape);
            s.extend(&x.shape[a + 1..]);
            one(s, OpKind::Gather)
        }
        "Resize" => one(inputs.consts(3)?.iter().map(|&d| d as usize).collect(), OpKind::DataMovement),
        "AveragePool" => {
            let k = attr_ints(n, "kernel_shape").ok_or_else(|| anyhow!("AveragePool needs kernel_shape"))?;
            let st = attr_ints(n, "strides").unwrap_or_else(|| vec![1; k.len()]);
            let mut s = x.shape[..2].to_vec();
            for i in 0..k.len() {
                s.push((x.shape[2 + i] - k[i] as usize) / st[i] as usize + 1);
            }
            one(s, OpKind::DataMovement)
        }
        other => bail!("unsupported op {other:?} (the cost model reads the exporter's op set)"),
    }
}

fn reduce_shape(n: &NodeProto, inputs: &NodeInputs, x: &Val) -> Result<Vec<usize>> {
    let axes = if inputs.len() > 1 { inputs.consts(1)? } else { attr_ints(n, "axes").unwrap_or_default() };
    let keep = attr_i(n, "keepdims").unwrap_or(1) == 1;
    let axes: Vec<usize> = axes.iter().map(|&a| axis(a, x.shape.len())).collect::<Result<_>>()?;
    let mut s = Vec::new();
    for (i, &d) in x.shape.iter().enumerate() {
        if !axes.contains(&i) {
            s.push(d);
        } else if keep {
            s.push(1);
        }
    }
    Ok(s)
}

/// MatMul and Gemm: a product with a weight, or (between activations) part of attention.
fn product_shape(n: &NodeProto, inputs: &NodeInputs, x: &Val) -> Result<(Vec<Vec<usize>>, OpKind)> {
    let w = inputs.get(1)?;
    let kind = if matches!(w.src, Src::Weight { .. }) { OpKind::Matmul } else { OpKind::Attention };
    let s = if n.op_type == "Gemm" {
        let trans = |k| attr_i(n, k).unwrap_or(0) == 1;
        let (m, k1) = if trans("transA") { (x.shape[1], x.shape[0]) } else { (x.shape[0], x.shape[1]) };
        let (k2, o) = if trans("transB") { (w.shape[1], w.shape[0]) } else { (w.shape[0], w.shape[1]) };
        if x.shape.len() != 2 || w.shape.len() != 2 || k1 != k2 {
            bail!("Gemm of {:?} and {:?}", x.shape, w.shape);
        }
        vec![m, o]
    } else {
        let (a, b) = (&x.shape, &w.shape);
        if a.len() < 2 || b.len() < 2 || a[a.len() - 1] != b[b.len() - 2] {
            bail!("MatMul of {a:?} and {b:?}");
        }
        let mut s = broadcast(&a[..a.len() - 2], &b[..b.len() - 2])?;
        s.extend([a[a.len() - 2], b[b.len() - 1]]);
        s
    };
    Ok((vec![s], kind))
}

fn conv_shape(n: &NodeProto, inputs: &NodeInputs, x: &Val) -> Result<(Vec<Vec<usize>>, OpKind)> {
    let w = inputs.get(1)?;
    let sp = x.shape.len().saturating_sub(2);
    if sp == 0 || w.shape.len() != x.shape.len() {
        bail!("Conv of {:?} with weight {:?}", x.shape, w.shape);
    }
    let k = &w.shape[2..];
    let strides = attr_ints(n, "strides").unwrap_or_else(|| vec![1; sp]);
    let dil = attr_ints(n, "dilations").unwrap_or_else(|| vec![1; sp]);
    let pads = attr_ints(n, "pads").unwrap_or_else(|| vec![0; 2 * sp]);
    let mut s = vec![x.shape[0], w.shape[0]];
    for i in 0..sp {
        let span = dil[i] as usize * (k[i] - 1) + 1;
        let padded = x.shape[2 + i] + (pads[i] + pads[i + sp]) as usize;
        if padded < span {
            bail!("Conv kernel {k:?} larger than its padded input {:?}", x.shape);
        }
        s.push((padded - span) / strides[i] as usize + 1);
    }
    let g = attr_i(n, "group").unwrap_or(1) as usize;
    let kind = if g > 1 && g == x.shape[1] { OpKind::Depthwise } else { OpKind::Conv };
    Ok((vec![s], kind))
}

fn slice_shape(inputs: &NodeInputs, x: &Val) -> Result<Vec<usize>> {
    let (starts, ends) = (inputs.consts(1)?, inputs.consts(2)?);
    let axes = if inputs.len() > 3 { inputs.consts(3)? } else { (0..starts.len() as i64).collect() };
    let steps = if inputs.len() > 4 { inputs.consts(4)? } else { vec![1; starts.len()] };
    let mut s = x.shape.clone();
    for i in 0..starts.len() {
        let a = axis(axes[i], s.len())?;
        let d = x.shape[a] as i64;
        let clamp = |v: i64| if v < 0 { (v + d).max(0) } else { v.min(d) };
        if steps[i] != 1 {
            bail!("Slice with step {} is not used by the exporter", steps[i]);
        }
        s[a] = (clamp(ends[i]) - clamp(starts[i])).max(0) as usize;
    }
    Ok(s)
}

/// What a costed op reads (every non-constant input, by what it is), writes, and computes.
fn op_cost(
    n: &NodeProto,
    inputs: &NodeInputs,
    x: &Val,
    outs: &[Vec<usize>],
    kind: OpKind,
    bits: Bits,
) -> Result<OpCost> {
    let mut op = OpCost::new(n.name.clone(), kind);
    for i in 0..inputs.len() {
        if n.input[i].is_empty() {
            continue;
        }
        let v = inputs.get(i)?;
        match v.src {
            Src::Act => op.act_read_bytes += bits.act(v.elems()),
            Src::State => op.state_bytes += Bits::bytes(v.elems(), bits.kv),
            Src::Weight { bits: wb } => {
                // A gather reads the rows it picks, not the table.
                let n_read =
                    if kind == OpKind::Gather { outs[0].iter().map(|&d| d as u64).product() } else { v.elems() };
                op.weight_bytes += Bits::bytes(n_read, wb);
            }
            Src::Const(_) => {}
        }
    }
    if kind == OpKind::Gather {
        op.act_read_bytes = 0;
    }
    for s in outs {
        op.act_write_bytes += bits.act(s.iter().map(|&d| d as u64).product());
    }
    op.macs = match kind {
        OpKind::Matmul | OpKind::Attention => {
            let (a, o) = (&x.shape, &outs[0]);
            let k = if n.op_type == "Gemm" && attr_i(n, "transA").unwrap_or(0) == 1 { a[0] } else { a[a.len() - 1] };
            o.iter().map(|&d| d as u64).product::<u64>() * k as u64
        }
        OpKind::Conv | OpKind::Depthwise => {
            let w = inputs.get(1)?;
            let per_out: u64 = w.shape[1..].iter().map(|&d| d as u64).product();
            outs[0].iter().map(|&d| d as u64).product::<u64>() * per_out
        }
        _ => 0,
    };
    Ok(op)
}
