//! Runs an exported float graph on Burn, node by node, so the exporter can observe every
//! tensor it wrote: the ranges of the activations AIMET and QNN quantize beyond the ones the
//! model's own quantization learned ([`crate::placement`]). It covers the ops the exporter
//! writes (ONNX semantics at opset 21), nothing more: an op it does not know is an error
//! naming the node, never a silent guess.
//!
//! Tensors of any rank up to [`RANK`] are held as one Burn rank, padded with leading 1s
//! (numpy broadcasting pads the same way), beside their logical shape.

use std::collections::HashMap;

use anyhow::{Context, Result, bail};
use burn::tensor::activation::{sigmoid, softmax};
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Int, Tensor, TensorData};
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::{AttributeProto, NodeProto, TensorProto};

/// The rank every float tensor is held at.
pub const RANK: usize = 8;

/// A float tensor (padded to [`RANK`], with its logical shape) or an int64 one (shapes,
/// axes, indices).
#[derive(Clone)]
pub enum Value {
    F(Tensor<RANK>, Vec<usize>),
    I(Vec<i64>, Vec<usize>),
}

fn padded(shape: &[usize]) -> [usize; RANK] {
    let mut p = [1; RANK];
    p[RANK - shape.len()..].copy_from_slice(shape);
    p
}

impl Value {
    /// A float tensor of `shape` from row-major `values`.
    pub fn float(values: Vec<f32>, shape: &[usize], device: &Device) -> Self {
        let t = Tensor::<RANK>::from_data(TensorData::new(values, padded(shape)), device);
        Self::F(t, shape.to_vec())
    }

    pub fn shape(&self) -> &[usize] {
        match self {
            Self::F(_, s) | Self::I(_, s) => s,
        }
    }

    fn f(&self, what: &str) -> Result<(&Tensor<RANK>, &[usize])> {
        match self {
            Self::F(t, s) => Ok((t, s)),
            Self::I(..) => bail!("{what}: expected a float tensor, found int64"),
        }
    }

    fn ints(&self, what: &str) -> Result<&[i64]> {
        match self {
            Self::I(v, _) => Ok(v),
            Self::F(..) => bail!("{what}: expected int64 values, found a float tensor"),
        }
    }

    /// The float values, row-major.
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        let (t, _) = self.f("value")?;
        Ok(t.clone().into_data().try_into_vec_as::<f32>().expect("f32 values"))
    }
}

/// The smallest and largest element of a float tensor.
pub fn min_max(t: &Tensor<RANK>) -> (f32, f32) {
    (t.clone().min().into_scalar::<f32>(), t.clone().max().into_scalar::<f32>())
}

fn attr<'a>(n: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    n.attribute.iter().find(|a| a.name == name)
}
fn attr_i(n: &NodeProto, name: &str, default: i64) -> i64 {
    attr(n, name).map_or(default, |a| a.i)
}
fn attr_ints(n: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(n, name).map(|a| a.ints.clone())
}
fn attr_s(n: &NodeProto, name: &str, default: &str) -> String {
    attr(n, name).map_or(default.to_string(), |a| String::from_utf8_lossy(&a.s).into_owned())
}

/// `axis` of a rank-`rank` tensor (negative counts from the end) as a non-negative index.
fn axis(a: i64, rank: usize) -> Result<usize> {
    let i = if a < 0 { a + rank as i64 } else { a };
    if !(0..rank as i64).contains(&i) {
        bail!("axis {a} out of range for rank {rank}");
    }
    Ok(i as usize)
}

/// The padded-rank index of logical axis `a`.
fn at(a: usize, rank: usize) -> usize {
    RANK - rank + a
}

fn broadcast(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let r = a.len().max(b.len());
    let (pa, pb) = (padded(a), padded(b));
    (RANK - r..RANK)
        .map(|i| match (pa[i], pb[i]) {
            (x, y) if x == y || y == 1 => Ok(x),
            (1, y) => Ok(y),
            (x, y) => bail!("shapes {a:?} and {b:?} do not broadcast ({x} against {y})"),
        })
        .collect()
}

/// A graph's initializers as values, converted once, and its nodes, run in order.
pub struct Interpreter<'g> {
    nodes: &'g [NodeProto],
    constants: HashMap<String, Value>,
    device: Device,
}

/// The values of a float initializer (raw little-endian data, as [`crate::graph`] writes
/// them); None for another type.
pub fn float_values(t: &TensorProto) -> Option<Vec<f32>> {
    (t.data_type == DataType::FLOAT as i32)
        .then(|| t.raw_data.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect())
}

fn constant(t: &TensorProto, device: &Device) -> Result<Value> {
    let shape: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
    if let Some(v) = float_values(t) {
        return Ok(Value::float(v, &shape, device));
    }
    match t.data_type {
        d if d == DataType::INT64 as i32 => {
            let v = t.raw_data.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect();
            Ok(Value::I(v, shape))
        }
        other => bail!("initializer {}: data type {other} is not interpreted (float graphs only)", t.name),
    }
}

impl<'g> Interpreter<'g> {
    pub fn new(nodes: &'g [NodeProto], initializers: &[TensorProto], device: &Device) -> Result<Self> {
        let constants =
            initializers.iter().map(|t| Ok((t.name.clone(), constant(t, device)?))).collect::<Result<_>>()?;
        Ok(Self { nodes, constants, device: device.clone() })
    }

    /// The graph's constant `name` (an initializer), if it has one.
    pub fn constant(&self, name: &str) -> Option<&Value> {
        self.constants.get(name)
    }

    /// Runs the graph on `feeds`; `observe` sees every float tensor a node writes, by name.
    /// Returns every value, the initializers aside.
    pub fn run(
        &self,
        feeds: HashMap<String, Value>,
        observe: &mut dyn FnMut(&str, &Tensor<RANK>),
    ) -> Result<HashMap<String, Value>> {
        let mut values = feeds;
        for n in self.nodes {
            let inputs = n
                .input
                .iter()
                .map(|i| match i.as_str() {
                    "" => Ok(None),
                    i => values
                        .get(i)
                        .or_else(|| self.constants.get(i))
                        .cloned()
                        .map(Some)
                        .with_context(|| format!("node {}: input {i} is not computed yet", n.name)),
                })
                .collect::<Result<Vec<_>>>()?;
            let outputs = self.node(n, &inputs).with_context(|| format!("node {} ({})", n.name, n.op_type))?;
            if outputs.len() != n.output.len() {
                bail!("node {}: {} outputs, {} named", n.name, outputs.len(), n.output.len());
            }
            for (name, v) in n.output.iter().zip(outputs) {
                if let Value::F(t, _) = &v {
                    observe(name, t);
                }
                values.insert(name.clone(), v);
            }
        }
        Ok(values)
    }

    fn ints_tensor(&self, v: &[i64]) -> Tensor<1, Int> {
        Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), &self.device)
    }

    fn node(&self, n: &NodeProto, inputs: &[Option<Value>]) -> Result<Vec<Value>> {
        let input = |i: usize| inputs.get(i).and_then(Option::as_ref).with_context(|| format!("input {i} missing"));
        let x = |i: usize| input(i)?.f(&format!("input {i}"));
        let op = n.op_type.as_str();
        let one = |t: Tensor<RANK>, s: Vec<usize>| Ok(vec![Value::F(t, s)]);
        match op {
            "Add" | "Sub" | "Mul" | "Div" => {
                let ((a, sa), (b, sb)) = (x(0)?, x(1)?);
                let s = broadcast(sa, sb)?;
                let (a, b) = (a.clone(), b.clone());
                let y = match op {
                    "Add" => a + b,
                    "Sub" => a - b,
                    "Mul" => a * b,
                    _ => a / b,
                };
                one(y, s)
            }
            "Sqrt" | "Sigmoid" | "Neg" | "Relu" | "Tanh" | "Exp" | "Identity" | "Gelu" => {
                let (a, s) = x(0)?;
                let a = a.clone();
                let y = match op {
                    "Sqrt" => a.sqrt(),
                    "Sigmoid" => sigmoid(a),
                    "Neg" => a.neg(),
                    "Relu" => a.clamp_min(0.0),
                    "Tanh" => a.tanh(),
                    "Exp" => a.exp(),
                    "Identity" => a,
                    _ => match attr_s(n, "approximate", "none").as_str() {
                        "tanh" => {
                            // tanh saturates to +-1 in f32 past |10|; clamping first keeps its
                            // exponentials finite (unclamped, large inputs gave NaN).
                            let inner = ((a.clone() + a.clone().powf_scalar(3.0) * 0.044715)
                                * (2.0f32 / std::f32::consts::PI).sqrt())
                            .clamp(-10.0, 10.0);
                            a * (inner.tanh() + 1.0) * 0.5
                        }
                        _ => burn::tensor::activation::gelu(a),
                    },
                };
                one(y, s.to_vec())
            }
            "MatMul" | "Gemm" => {
                let ((a, sa), (b, sb)) = (x(0)?, x(1)?);
                let (mut b, mut sb) = (b.clone(), sb.to_vec());
                if op == "Gemm" && attr_i(n, "transB", 0) == 1 {
                    b = b.swap_dims(RANK - 2, RANK - 1);
                    let r = sb.len();
                    sb.swap(r - 2, r - 1);
                }
                if op == "Gemm" && attr_i(n, "transA", 0) == 1 {
                    bail!("transA is not interpreted");
                }
                if sa.len() < 2 || sb.len() < 2 {
                    bail!("MatMul of ranks {} and {} (1-D operands are not interpreted)", sa.len(), sb.len());
                }
                let batch = broadcast(&sa[..sa.len() - 2], &sb[..sb.len() - 2])?;
                let (m, k, nn) = (sa[sa.len() - 2], sa[sa.len() - 1], sb[sb.len() - 1]);
                if sb[sb.len() - 2] != k {
                    bail!("MatMul of {sa:?} and {sb:?}");
                }
                let mut ea = batch.clone();
                ea.extend([m, k]);
                let mut eb = batch.clone();
                eb.extend([k, nn]);
                let mut y = a.clone().expand(padded(&ea)).matmul(b.expand(padded(&eb)));
                let mut s = batch;
                s.extend([m, nn]);
                if let Some(Some(c)) = inputs.get(2) {
                    let (c, sc) = c.f("C")?;
                    s = broadcast(&s, sc)?;
                    y = y + c.clone();
                }
                one(y, s)
            }
            "Softmax" => {
                let (a, s) = x(0)?;
                let d = at(axis(attr_i(n, "axis", -1), s.len())?, s.len());
                one(softmax(a.clone(), d), s.to_vec())
            }
            "ReduceMean" => {
                let (a, s) = x(0)?;
                let axes = match inputs.get(1) {
                    Some(Some(v)) => v.ints("axes")?.to_vec(),
                    _ => attr_ints(n, "axes").unwrap_or_else(|| (0..s.len() as i64).collect()),
                };
                let axes = axes.iter().map(|&a| axis(a, s.len())).collect::<Result<Vec<_>>>()?;
                let mut y = a.clone();
                let mut shape = s.to_vec();
                for &a in &axes {
                    y = y.mean_dim(at(a, s.len()));
                    shape[a] = 1;
                }
                if attr_i(n, "keepdims", 1) == 0 {
                    shape = shape.iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, &d)| d).collect();
                    y = y.reshape(padded(&shape));
                }
                one(y, shape)
            }
            "Transpose" => {
                let (a, s) = x(0)?;
                let r = s.len();
                let perm = attr_ints(n, "perm").unwrap_or_else(|| (0..r as i64).rev().collect());
                let mut p: [usize; RANK] = std::array::from_fn(|i| i);
                let mut shape = vec![0; r];
                for (i, &src) in perm.iter().enumerate() {
                    let src = axis(src, r)?;
                    p[at(i, r)] = at(src, r);
                    shape[i] = s[src];
                }
                one(a.clone().permute(p), shape)
            }
            "Reshape" | "Flatten" | "Squeeze" | "Unsqueeze" => {
                let (a, s) = x(0)?;
                let shape = match op {
                    "Reshape" => {
                        let target = input(1)?.ints("shape")?;
                        let total: usize = s.iter().product();
                        let mut shape: Vec<usize> = target
                            .iter()
                            .enumerate()
                            .map(|(i, &d)| match d {
                                0 => s[i],
                                -1 => 1,
                                d => d as usize,
                            })
                            .collect();
                        if let Some(i) = target.iter().position(|&d| d == -1) {
                            shape[i] = total / shape.iter().product::<usize>().max(1);
                        }
                        shape
                    }
                    "Flatten" => {
                        let a = axis(attr_i(n, "axis", 1), s.len() + 1)?;
                        vec![s[..a].iter().product(), s[a..].iter().product()]
                    }
                    "Squeeze" => {
                        let axes = input(1)?.ints("axes")?;
                        let axes = axes.iter().map(|&a| axis(a, s.len())).collect::<Result<Vec<_>>>()?;
                        s.iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, &d)| d).collect()
                    }
                    _ => {
                        let axes = input(1)?.ints("axes")?;
                        let r = s.len() + axes.len();
                        let mut axes = axes.iter().map(|&a| axis(a, r)).collect::<Result<Vec<_>>>()?;
                        axes.sort();
                        let mut shape = s.to_vec();
                        for a in axes {
                            shape.insert(a, 1);
                        }
                        shape
                    }
                };
                if shape.len() > RANK || shape.iter().product::<usize>() != s.iter().product::<usize>() {
                    bail!("{s:?} cannot take shape {shape:?}");
                }
                one(a.clone().reshape(padded(&shape)), shape)
            }
            "Concat" => {
                let parts = (0..inputs.len())
                    .map(|i| x(i).map(|(t, s)| (t.clone(), s.to_vec())))
                    .collect::<Result<Vec<_>>>()?;
                let r = parts[0].1.len();
                let a = axis(attr_i(n, "axis", 0), r)?;
                let mut shape = parts[0].1.clone();
                shape[a] = parts.iter().map(|(_, s)| s[a]).sum();
                one(Tensor::cat(parts.into_iter().map(|(t, _)| t).collect(), at(a, r)), shape)
            }
            "Split" => {
                let (t, s) = x(0)?;
                let a = axis(attr_i(n, "axis", 0), s.len())?;
                let sizes = match inputs.get(1) {
                    Some(Some(v)) => v.ints("split")?.iter().map(|&d| d as usize).collect(),
                    _ => {
                        let k = attr_i(n, "num_outputs", n.output.len() as i64) as usize;
                        let part = s[a].div_ceil(k);
                        (0..k).map(|i| part.min(s[a].saturating_sub(i * part))).collect::<Vec<usize>>()
                    }
                };
                let mut from = 0;
                let mut out = Vec::new();
                for size in sizes {
                    let mut shape = s.to_vec();
                    shape[a] = size;
                    out.push(Value::F(t.clone().narrow(at(a, s.len()), from, size), shape));
                    from += size;
                }
                Ok(out)
            }
            "Slice" => {
                let (t, s) = x(0)?;
                let starts = input(1)?.ints("starts")?;
                let ends = input(2)?.ints("ends")?;
                let axes = match inputs.get(3) {
                    Some(Some(v)) => v.ints("axes")?.to_vec(),
                    _ => (0..starts.len() as i64).collect(),
                };
                if let Some(Some(steps)) = inputs.get(4)
                    && steps.ints("steps")?.iter().any(|&k| k != 1)
                {
                    bail!("steps other than 1 are not interpreted");
                }
                let (mut y, mut shape) = (t.clone(), s.to_vec());
                for ((&b, &e), &a) in starts.iter().zip(ends).zip(&axes) {
                    let a = axis(a, s.len())?;
                    let d = s[a] as i64;
                    let clampi = |v: i64| (if v < 0 { v + d } else { v }).clamp(0, d) as usize;
                    let (b, e) = (clampi(b), clampi(e));
                    let len = e.saturating_sub(b);
                    y = y.narrow(at(a, s.len()), b, len);
                    shape[a] = len;
                }
                one(y, shape)
            }
            "Gather" => {
                let (t, s) = x(0)?;
                let idx = input(1)?;
                let a = axis(attr_i(n, "axis", 0), s.len())?;
                let ids: Vec<i64> =
                    idx.ints("indices")?.iter().map(|&i| if i < 0 { i + s[a] as i64 } else { i }).collect();
                if let Some(bad) = ids.iter().find(|&&i| i < 0 || i >= s[a] as i64) {
                    bail!("index {bad} out of range for axis {a} of {s:?}");
                }
                let mut shape = s[..a].to_vec();
                shape.extend(idx.shape());
                shape.extend(&s[a + 1..]);
                if shape.len() > RANK {
                    bail!("Gather output rank {} over {RANK}", shape.len());
                }
                let y = t.clone().select(at(a, s.len()), self.ints_tensor(&ids));
                one(y.reshape(padded(&shape)), shape)
            }
            "Conv" => {
                let ((t, s), (w, sw)) = (x(0)?, x(1)?);
                let spatial = s.len() - 2;
                if !(1..=2).contains(&spatial) {
                    bail!("{spatial}-D convolution is not interpreted");
                }
                let ints = |name: &str, d: i64| attr_ints(n, name).unwrap_or_else(|| vec![d; spatial]);
                let (strides, dilations) = (ints("strides", 1), ints("dilations", 1));
                let pads = attr_ints(n, "pads").unwrap_or_else(|| vec![0; 2 * spatial]);
                if attr_s(n, "auto_pad", "NOTSET") != "NOTSET" {
                    bail!("auto_pad is not interpreted");
                }
                // 1-D as 2-D over a height of 1.
                let two = |v: &[i64], d: usize| {
                    if spatial == 1 { [d, v[0] as usize] } else { [v[0] as usize, v[1] as usize] }
                };
                let x4 = |t: &Tensor<RANK>, s: &[usize]| -> Tensor<4> {
                    let [h, w] = if spatial == 1 { [1, s[2]] } else { [s[2], s[3]] };
                    t.clone().reshape([s[0], s[1], h, w])
                };
                let padding = if spatial == 1 {
                    [(0, 0), (pads[0] as usize, pads[1] as usize)]
                } else {
                    [(pads[0] as usize, pads[2] as usize), (pads[1] as usize, pads[3] as usize)]
                };
                let options = ConvOptions::new_with_padding(
                    two(&strides, 1),
                    padding,
                    two(&dilations, 1),
                    attr_i(n, "group", 1) as usize,
                );
                let bias = match inputs.get(2) {
                    Some(Some(b)) => Some(b.f("bias")?.0.clone().reshape([sw[0]])),
                    _ => None,
                };
                let y = conv2d(x4(t, s), x4(w, sw), bias, options);
                let [b, c, h, wd] = y.dims();
                let shape = if spatial == 1 { vec![b, c, wd] } else { vec![b, c, h, wd] };
                one(y.reshape(padded(&shape)), shape)
            }
            "BatchNormalization" => {
                let (t, s) = x(0)?;
                let eps = attr(n, "epsilon").map_or(1e-5, |a| a.f);
                let c = s[1];
                let mut cs = vec![1; s.len()];
                cs[1] = c;
                let p = |i: usize| -> Result<Tensor<RANK>> { Ok(x(i)?.0.clone().reshape(padded(&cs))) };
                let (scale, bias, mean, var) = (p(1)?, p(2)?, p(3)?, p(4)?);
                let y = (t.clone() - mean) / (var + eps).sqrt() * scale + bias;
                one(y, s.to_vec())
            }
            "LayerNormalization" => {
                let (t, s) = x(0)?;
                let r = s.len();
                if axis(attr_i(n, "axis", -1), r)? != r - 1 {
                    bail!("LayerNormalization over other than the last axis is not interpreted");
                }
                let eps = attr(n, "epsilon").map_or(1e-5, |a| a.f);
                let mean = t.clone().mean_dim(RANK - 1);
                let centered = t.clone() - mean;
                let var = centered.clone().powf_scalar(2.0).mean_dim(RANK - 1);
                let mut y = centered / (var + eps).sqrt() * x(1)?.0.clone();
                if let Some(Some(b)) = inputs.get(2) {
                    y = y + b.f("bias")?.0.clone();
                }
                one(y, s.to_vec())
            }
            "AveragePool" => {
                let (t, s) = x(0)?;
                let k = attr_ints(n, "kernel_shape").context("kernel_shape")?;
                let st = attr_ints(n, "strides").unwrap_or_else(|| vec![1; k.len()]);
                let pads = attr_ints(n, "pads").unwrap_or_default();
                if s.len() != 4 || k != st || pads.iter().any(|&p| p != 0) {
                    bail!("only non-overlapping 2-D average pooling without padding is interpreted");
                }
                let (fh, fw) = (k[0] as usize, k[1] as usize);
                let y = autoneural_model::vision::resize::avg_pool(t.clone().reshape([s[0], s[1], s[2], s[3]]), fh, fw);
                let shape = vec![s[0], s[1], s[2] / fh, s[3] / fw];
                one(y.reshape(padded(&shape)), shape)
            }
            "Resize" => {
                let (t, s) = x(0)?;
                let modes = (
                    attr_s(n, "mode", "nearest"),
                    attr_s(n, "coordinate_transformation_mode", "half_pixel"),
                    attr_s(n, "nearest_mode", "round_prefer_floor"),
                );
                if modes != ("nearest".into(), "asymmetric".into(), "floor".into()) || s.len() != 4 {
                    bail!("only 2-D nearest resizing (asymmetric, floor) is interpreted, found {modes:?}");
                }
                let sizes = input(3)?.ints("sizes")?;
                let (h, w) = (sizes[2] as usize, sizes[3] as usize);
                let y = autoneural_model::vision::resize::nearest(t.clone().reshape([s[0], s[1], s[2], s[3]]), h, w);
                let shape = vec![s[0], s[1], h, w];
                one(y.reshape(padded(&shape)), shape)
            }
            other => bail!("op {other} is not interpreted"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{Attr, DType, Graph};

    /// The tanh GELU against its formula in f64, large inputs included (they once gave NaN,
    /// and NaN-blind ranges with them).
    #[test]
    fn tanh_gelu_is_finite_and_exact() {
        let mut g = Graph::new("t");
        let x = g.input("x", DType::Float32, &[1, 6]);
        let y = g.op("Gelu", &[&x], vec![("approximate", Attr::Str("tanh".into()))]);
        g.output(&y, "y", DType::Float32, &[1, 6]);
        let device = Device::flex();
        let interp = Interpreter::new(g.nodes(), g.initializers(), &device).unwrap();
        let xs = [-40.0f32, -3.0, -0.5, 0.25, 13.5, 90.0];
        let feeds = HashMap::from([("x".to_string(), Value::float(xs.to_vec(), &[1, 6], &device))]);
        let out = interp.run(feeds, &mut |_, _| {}).unwrap()["y"].to_vec().unwrap();
        for (x, y) in xs.iter().map(|&x| f64::from(x)).zip(out) {
            let want = 0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh());
            assert!((f64::from(y) - want).abs() <= 1e-5 * want.abs().max(1.0), "gelu({x}) = {y}, want {want}");
        }
    }
}
