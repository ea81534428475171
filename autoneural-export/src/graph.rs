//! A small ONNX graph builder over the `onnx-protobuf` messages: named inputs and outputs
//! with static shapes, initializers stored as raw little-endian data, and nodes whose
//! outputs get unique names. Ops are written as ONNX defines them at opset [`OPSET`].

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use autoneural_model::nn::Linear;
use burn::tensor::Tensor;
use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::tensor_shape_proto::{Dimension, dimension};
use onnx_protobuf::type_proto::{self, Value as TypeValue};
use onnx_protobuf::{
    AttributeProto, GraphProto, Message, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use protobuf::{EnumOrUnknown, MessageField};

use crate::qdq::{self, Aimet, Layout, Quantization};

/// Opset 21: QuantizeLinear / DequantizeLinear with int4 and blocked scales (IR version 10).
pub const OPSET: i64 = 21;
pub const IR_VERSION: i64 = 10;
/// The protobuf limit of one file; heavier graphs keep their weights in external data.
pub const PROTOBUF_LIMIT: usize = 2 << 30;

/// Element types used by the exported graphs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    Float32,
    Int64,
}

impl DType {
    fn onnx(self) -> DataType {
        match self {
            Self::Float32 => DataType::FLOAT,
            Self::Int64 => DataType::INT64,
        }
    }
}

/// An attribute value.
pub enum Attr {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
    Str(String),
}

/// One graph input or output as the manifest lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Port {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
}

/// How graphs are built: Linear layers as MatMul or 1x1 Conv; float, QDQ or float with
/// AIMET encodings.
#[derive(Debug, Clone, Default)]
pub struct Build {
    pub linear_as_conv: bool,
    pub quantization: Option<Arc<Quantization>>,
}

/// A graph under construction.
pub struct Graph {
    name: String,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    pub input_ports: Vec<Port>,
    pub output_ports: Vec<Port>,
    /// Write Linear layers as 1x1 Conv (Qualcomm's HTP prefers them), see [`linear`].
    pub linear_as_conv: bool,
    /// Quantized weights and activations, in one of the two forms ([`crate::qdq`]).
    pub quantization: Option<Arc<Quantization>>,
    /// With [`Form::Encodings`](crate::qdq::Form): the AIMET encodings collected so far.
    pub aimet: Aimet,
    next: usize,
}

fn value_info(name: &str, dtype: DType, shape: &[usize]) -> ValueInfoProto {
    let dims = shape
        .iter()
        .map(|&d| Dimension { value: Some(dimension::Value::DimValue(d as i64)), ..Default::default() })
        .collect();
    let tensor = type_proto::Tensor {
        elem_type: dtype.onnx() as i32,
        shape: MessageField::some(TensorShapeProto { dim: dims, ..Default::default() }),
        ..Default::default()
    };
    ValueInfoProto {
        name: name.into(),
        type_: MessageField::some(TypeProto { value: Some(TypeValue::TensorType(tensor)), ..Default::default() }),
        ..Default::default()
    }
}

fn attribute(name: &str, value: Attr) -> AttributeProto {
    let mut a = AttributeProto { name: name.into(), ..Default::default() };
    match value {
        Attr::Int(i) => {
            a.type_ = EnumOrUnknown::new(AttributeType::INT);
            a.i = i;
        }
        Attr::Ints(v) => {
            a.type_ = EnumOrUnknown::new(AttributeType::INTS);
            a.ints = v;
        }
        Attr::Float(f) => {
            a.type_ = EnumOrUnknown::new(AttributeType::FLOAT);
            a.f = f;
        }
        Attr::Str(s) => {
            a.type_ = EnumOrUnknown::new(AttributeType::STRING);
            a.s = s.into_bytes();
        }
    }
    a
}

impl Graph {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            nodes: Vec::new(),
            initializers: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            input_ports: Vec::new(),
            output_ports: Vec::new(),
            linear_as_conv: false,
            quantization: None,
            aimet: Aimet::default(),
            next: 0,
        }
    }

    /// An empty graph built as `build` says.
    pub fn with(name: &str, build: &Build) -> Self {
        let mut g = Self::new(name);
        g.linear_as_conv = build.linear_as_conv;
        g.quantization = build.quantization.clone();
        g
    }

    /// A graph input with a static shape; returns its name.
    pub fn input(&mut self, name: &str, dtype: DType, shape: &[usize]) -> String {
        self.inputs.push(value_info(name, dtype, shape));
        self.input_ports.push(Port { name: name.into(), dtype, shape: shape.to_vec() });
        name.into()
    }

    /// Marks `value` as the graph output `name` (through an Identity when it has another name).
    pub fn output(&mut self, value: &str, name: &str, dtype: DType, shape: &[usize]) {
        if value != name {
            self.nodes.push(NodeProto {
                op_type: "Identity".into(),
                input: vec![value.into()],
                output: vec![name.into()],
                name: format!("{name}/identity"),
                ..Default::default()
            });
        }
        self.outputs.push(value_info(name, dtype, shape));
        self.output_ports.push(Port { name: name.into(), dtype, shape: shape.to_vec() });
    }

    /// A float initializer named `name` (a checkpoint key, so encodings can name it).
    pub fn weight(&mut self, name: &str, shape: &[usize], values: &[f32]) -> String {
        assert_eq!(shape.iter().product::<usize>(), values.len(), "{name}: shape {shape:?}");
        self.initializers.push(TensorProto {
            name: name.into(),
            dims: shape.iter().map(|&d| d as i64).collect(),
            data_type: DataType::FLOAT as i32,
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name.into()
    }

    /// Adds an initializer built elsewhere (integer weights).
    pub fn push_initializer(&mut self, t: TensorProto) {
        self.initializers.push(t);
    }

    /// An int64 constant initializer (shapes, axes, indices).
    pub fn ints(&mut self, values: &[i64]) -> String {
        let name = self.fresh("const");
        self.initializers.push(TensorProto {
            name: name.clone(),
            dims: vec![values.len() as i64],
            data_type: DataType::INT64 as i32,
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name
    }

    /// A float scalar constant initializer.
    pub fn scalar(&mut self, value: f32) -> String {
        let name = self.fresh("const");
        self.weight(&name, &[], &[value])
    }

    fn fresh(&mut self, what: &str) -> String {
        self.next += 1;
        format!("{what}_{}", self.next)
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn nodes(&self) -> &[NodeProto] {
        &self.nodes
    }
    pub fn initializers(&self) -> &[TensorProto] {
        &self.initializers
    }

    /// A node named `name` with one output of the same name. Unlike [`Graph::op`] it takes no
    /// number from the counter, so a QDQ graph's own nodes leave every other node named as
    /// in the float graph built beside it (the encodings name tensors of both).
    pub fn op_named(&mut self, name: &str, op_type: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>) -> String {
        self.nodes.push(NodeProto {
            op_type: op_type.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![name.into()],
            name: name.into(),
            attribute: attrs.into_iter().map(|(k, v)| attribute(k, v)).collect(),
            ..Default::default()
        });
        name.into()
    }

    /// A node with one output, named after its op and a counter.
    pub fn op(&mut self, op_type: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>) -> String {
        self.op_n(op_type, inputs, attrs, 1).pop().expect("one output")
    }

    /// A node with `n` outputs.
    pub fn op_n(&mut self, op_type: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>, n: usize) -> Vec<String> {
        let base = self.fresh(op_type);
        let outputs: Vec<String> = (0..n).map(|i| if n == 1 { base.clone() } else { format!("{base}_{i}") }).collect();
        self.nodes.push(NodeProto {
            op_type: op_type.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.clone(),
            name: base,
            attribute: attrs.into_iter().map(|(k, v)| attribute(k, v)).collect(),
            ..Default::default()
        });
        outputs
    }

    // Ops used often enough to name.

    pub fn matmul(&mut self, a: &str, b: &str) -> String {
        self.op("MatMul", &[a, b], vec![])
    }
    pub fn add(&mut self, a: &str, b: &str) -> String {
        self.op("Add", &[a, b], vec![])
    }
    pub fn mul(&mut self, a: &str, b: &str) -> String {
        self.op("Mul", &[a, b], vec![])
    }
    pub fn reshape(&mut self, x: &str, shape: &[i64]) -> String {
        let s = self.ints(shape);
        self.op("Reshape", &[x, &s], vec![])
    }
    pub fn transpose(&mut self, x: &str, perm: &[i64]) -> String {
        self.op("Transpose", &[x], vec![("perm", Attr::Ints(perm.to_vec()))])
    }
    /// `x[starts..ends]` on `axes`.
    pub fn slice(&mut self, x: &str, starts: &[i64], ends: &[i64], axes: &[i64]) -> String {
        let (s, e, a) = (self.ints(starts), self.ints(ends), self.ints(axes));
        self.op("Slice", &[x, &s, &e, &a], vec![])
    }
    pub fn concat(&mut self, xs: &[&str], axis: i64) -> String {
        self.op("Concat", xs, vec![("axis", Attr::Int(axis))])
    }
    /// `x * sigmoid(x)`.
    pub fn silu(&mut self, x: &str) -> String {
        let s = self.op("Sigmoid", &[x], vec![]);
        self.mul(x, &s)
    }
    /// RMS norm over the last axis: `x / sqrt(mean(x^2) + eps) * weight`.
    pub fn rms_norm(&mut self, x: &str, weight: &str, eps: f64) -> String {
        let sq = self.mul(x, x);
        let axes = self.ints(&[-1]);
        let mean = self.op("ReduceMean", &[&sq, &axes], vec![("keepdims", Attr::Int(1))]);
        let e = self.scalar(eps as f32);
        let var = self.add(&mean, &e);
        let root = self.op("Sqrt", &[&var], vec![]);
        let normed = self.op("Div", &[x, &root], vec![]);
        self.mul(&normed, weight)
    }

    /// Moves each activation encoding on the output of a data-movement op (Transpose,
    /// Reshape, ...) to that op's input, through a chain of them, while the input feeds
    /// nothing else: AIMET places no quantizer on a data-movement output (such ops preserve
    /// the grid), and per-tensor quantization commutes with moving the elements, so the
    /// values are the same. Moving twice moves nothing more.
    pub fn hoist_activations(&mut self) {
        const MOVES: [&str; 6] = ["Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"];
        let mut consumers: HashMap<&str, usize> = HashMap::new();
        for n in &self.nodes {
            for i in &n.input {
                *consumers.entry(i.as_str()).or_default() += 1;
            }
        }
        for o in &self.outputs {
            *consumers.entry(o.name.as_str()).or_default() += 1;
        }
        let producer: HashMap<&str, &NodeProto> =
            self.nodes.iter().flat_map(|n| n.output.iter().map(move |o| (o.as_str(), n))).collect();
        let mut moves = Vec::new();
        for name in self.aimet.activations.keys() {
            let mut at = name.as_str();
            while let Some(n) = producer.get(at).filter(|n| MOVES.contains(&n.op_type.as_str())) {
                let source = n.input[0].as_str();
                if consumers.get(source) != Some(&1) || self.initializers.iter().any(|t| t.name == source) {
                    break;
                }
                at = source;
            }
            if at != name {
                moves.push((name.clone(), at.to_string()));
            }
        }
        for (from, to) in moves {
            if let Some(e) = self.aimet.activations.remove(&from) {
                self.aimet.activations.insert(to, e);
            }
        }
    }

    /// Puts every tensor that has an activation encoding in `encodings` (by name, as in the
    /// float graph built beside this one) through QuantizeLinear / DequantizeLinear, right
    /// after the node that writes it (graph inputs and constants first), for all its readers.
    pub fn quantize_activations(
        &mut self,
        encodings: &std::collections::BTreeMap<String, autoneural_model::quant::Encoding>,
    ) {
        let outputs: std::collections::HashSet<String> = self.outputs.iter().map(|o| o.name.clone()).collect();
        let mut renamed: HashMap<String, String> = HashMap::new();
        let mut pending: Vec<NodeProto> = Vec::new();
        let qdq_nodes = |g: &mut Graph, t: &str, renamed: &mut HashMap<String, String>| -> Vec<NodeProto> {
            let enc = &encodings[t];
            let (scale, zp) = qdq::activation_parameters(g, t, enc);
            // A graph output keeps its name on the dequantized values.
            let (source, result) = if outputs.contains(t) {
                (format!("{t}.float"), t.to_string())
            } else {
                let r = format!("{t}.dequantized");
                renamed.insert(t.to_string(), r.clone());
                (t.to_string(), r)
            };
            let q = format!("{t}.quantized");
            let node = |op: &str, input: Vec<String>, output: &str| NodeProto {
                op_type: op.into(),
                input,
                output: vec![output.into()],
                name: format!("{output}/{op}"),
                ..Default::default()
            };
            vec![
                node("QuantizeLinear", vec![source.clone(), scale.clone(), zp.clone()], &q),
                node("DequantizeLinear", vec![q.clone(), scale, zp], &result),
            ]
        };
        let sources: Vec<String> = self
            .inputs
            .iter()
            .map(|i| i.name.clone())
            .chain(self.initializers.iter().map(|t| t.name.clone()))
            .filter(|n| encodings.contains_key(n))
            .collect();
        for t in sources {
            pending.extend(qdq_nodes(self, &t, &mut renamed));
        }
        let nodes = std::mem::take(&mut self.nodes);
        for mut n in nodes {
            let written: Vec<String> = n.output.iter().filter(|o| encodings.contains_key(*o)).cloned().collect();
            for o in n.output.iter_mut() {
                if written.contains(o) && outputs.contains(o.as_str()) {
                    *o = format!("{o}.float");
                }
            }
            pending.push(n);
            for t in written {
                pending.extend(qdq_nodes(self, &t, &mut renamed));
            }
        }
        // Readers take the dequantized values (the QuantizeLinear nodes keep the originals).
        for n in pending.iter_mut().filter(|n| n.op_type != "QuantizeLinear" || !n.output[0].ends_with(".quantized")) {
            for i in n.input.iter_mut() {
                if let Some(r) = renamed.get(i.as_str()) {
                    *i = r.clone();
                }
            }
        }
        self.nodes = pending;
    }

    /// The model: this graph at [`OPSET`], with its producer recorded.
    pub fn into_model(self, doc: &str) -> ModelProto {
        let graph = GraphProto {
            name: self.name,
            node: self.nodes,
            initializer: self.initializers,
            input: self.inputs,
            output: self.outputs,
            ..Default::default()
        };
        ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![OperatorSetIdProto { domain: String::new(), version: OPSET, ..Default::default() }],
            producer_name: "autoneural".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            doc_string: doc.into(),
            graph: MessageField::some(graph),
            metadata_props: vec![StringStringEntryProto {
                key: "source".into(),
                value: "https://github.com/autoneural/autoneural".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }
}

/// A float tensor's values (weights to store as initializers).
pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec_as::<f32>().expect("float weights")
}

/// Adds a Burn `Linear` under `key` and applies it to `x` (`[1, t, in]` -> `[1, t, out]`):
/// a `MatMul` on the weight as Burn stores it (`[in, out]`), or with
/// [`Graph::linear_as_conv`] a 1x1 `Conv` on `[1, in, 1, t]` with the weight in PyTorch's
/// layout (`[out, in, 1, 1]`), between transposes.
pub fn linear(g: &mut Graph, x: &str, lin: &Linear, key: &str) -> String {
    let w = lin.weight.val();
    let [n_in, n_out] = w.dims();
    let bias = lin.bias.as_ref().map(|b| values(b.val()));
    let wkey = format!("{key}.weight");
    let x = &qdq::activation(g, &wkey, x);
    if g.linear_as_conv {
        let w = qdq::weight(g, &wkey, &[n_out, n_in, 1, 1], &values(w.transpose()), Layout::Torch);
        let mut inputs = vec![w];
        if let Some(b) = bias {
            inputs.push(g.weight(&format!("{key}.bias"), &[n_out], &b));
        }
        let axes = g.ints(&[2]);
        let xt = g.transpose(x, &[0, 2, 1]);
        let x4 = g.op("Unsqueeze", &[&xt, &axes], vec![]);
        let mut conv_inputs = vec![x4.as_str()];
        conv_inputs.extend(inputs.iter().map(String::as_str));
        let y = g.op("Conv", &conv_inputs, vec![("kernel_shape", Attr::Ints(vec![1, 1]))]);
        let y = g.op("Squeeze", &[&y, &axes], vec![]);
        return g.transpose(&y, &[0, 2, 1]);
    }
    let w = qdq::weight(g, &wkey, &[n_in, n_out], &values(w), Layout::InOut);
    let y = g.matmul(x, &w);
    match bias {
        Some(b) => {
            let b = g.weight(&format!("{key}.bias"), &[n_out], &b);
            g.add(&y, &b)
        }
        None => y,
    }
}

/// Writes `model` to `path`. A model over the protobuf limit keeps its initializers in
/// `<file>.data` beside it (ONNX external data, one file, 64-byte aligned offsets).
pub fn write_model(model: ModelProto, path: &Path) -> Result<()> {
    write_model_within(model, path, PROTOBUF_LIMIT - (16 << 20))
}

/// [`write_model`] with initializers moved to external data once they pass `inline_limit`
/// bytes.
fn write_model_within(mut model: ModelProto, path: &Path, inline_limit: usize) -> Result<()> {
    let weights: usize = model.graph.initializer.iter().map(|t| t.raw_data.len()).sum();
    if weights > inline_limit {
        let file_name =
            format!("{}.data", path.file_name().and_then(|f| f.to_str()).context("an ONNX path needs a file name")?);
        // Streamed tensor by tensor: a multi-GB model is never copied whole.
        let data_path = path.with_file_name(&file_name);
        let file = std::fs::File::create(&data_path).with_context(|| format!("creating {}", data_path.display()))?;
        let mut data = std::io::BufWriter::new(file);
        let mut offset = 0usize;
        for t in model.graph.as_mut().expect("graph").initializer.iter_mut() {
            if t.raw_data.len() < 1024 {
                continue;
            }
            let pad = offset.next_multiple_of(64) - offset;
            data.write_all(&[0u8; 64][..pad]).with_context(|| format!("writing {}", data_path.display()))?;
            offset += pad;
            data.write_all(&t.raw_data).with_context(|| format!("writing {}", data_path.display()))?;
            let entry = |k: &str, v: String| StringStringEntryProto { key: k.into(), value: v, ..Default::default() };
            t.external_data = vec![
                entry("location", file_name.clone()),
                entry("offset", offset.to_string()),
                entry("length", t.raw_data.len().to_string()),
            ];
            t.data_location = EnumOrUnknown::new(onnx_protobuf::tensor_proto::DataLocation::EXTERNAL);
            offset += t.raw_data.len();
            t.raw_data = Vec::new();
        }
        data.flush().with_context(|| format!("writing {}", data_path.display()))?;
    }
    let bytes = model.write_to_bytes().with_context(|| format!("encoding {}", path.display()))?;
    if bytes.len() > PROTOBUF_LIMIT {
        bail!("{}: {} bytes of graph over the protobuf limit", path.display(), bytes.len());
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// Writes `models` (each to its path) with their large initializers (1 KiB or more) in one
/// external data file, `data`, each tensor once: models built from the same weights under
/// the same names (the Genie layout's AR-1 and AR-N graphs of a part) share them, as QNN's
/// weight sharing does. A name that two models hold with different bytes is an error.
/// Returns the data file's size.
pub fn write_models_sharing(models: Vec<(ModelProto, std::path::PathBuf)>, data: &Path) -> Result<u64> {
    use std::collections::hash_map::DefaultHasher;
    use std::hash::{Hash, Hasher};
    let file_name = data.file_name().and_then(|f| f.to_str()).context("a data path needs a file name")?.to_string();
    let file = std::fs::File::create(data).with_context(|| format!("creating {}", data.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let mut offset = 0usize;
    // Name -> (offset, length, hash of the bytes).
    let mut written: HashMap<String, (usize, usize, u64)> = HashMap::new();
    for (mut model, path) in models {
        for t in model.graph.as_mut().expect("graph").initializer.iter_mut() {
            if t.raw_data.len() < 1024 {
                continue;
            }
            let mut h = DefaultHasher::new();
            t.raw_data.hash(&mut h);
            let hash = h.finish();
            let (at, len) = match written.get(&t.name) {
                Some(&(at, len, seen)) if seen == hash && len == t.raw_data.len() => (at, len),
                Some(_) => bail!(
                    "{}: initializer {} differs from the one already shared under its name",
                    path.display(),
                    t.name
                ),
                None => {
                    let pad = offset.next_multiple_of(64) - offset;
                    out.write_all(&[0u8; 64][..pad]).with_context(|| format!("writing {}", data.display()))?;
                    offset += pad;
                    out.write_all(&t.raw_data).with_context(|| format!("writing {}", data.display()))?;
                    let at = offset;
                    offset += t.raw_data.len();
                    written.insert(t.name.clone(), (at, t.raw_data.len(), hash));
                    (at, t.raw_data.len())
                }
            };
            let entry = |k: &str, v: String| StringStringEntryProto { key: k.into(), value: v, ..Default::default() };
            t.external_data = vec![
                entry("location", file_name.clone()),
                entry("offset", at.to_string()),
                entry("length", len.to_string()),
            ];
            t.data_location = EnumOrUnknown::new(onnx_protobuf::tensor_proto::DataLocation::EXTERNAL);
            t.raw_data = Vec::new();
        }
        let bytes = model.write_to_bytes().with_context(|| format!("encoding {}", path.display()))?;
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    out.flush().with_context(|| format!("writing {}", data.display()))?;
    Ok(offset as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> ModelProto {
        let mut g = Graph::new("tiny");
        let x = g.input("x", DType::Float32, &[1, 4]);
        let w = g.weight("w", &[4, 300], &vec![0.5; 1200]);
        let y = g.matmul(&x, &w);
        g.output(&y, "y", DType::Float32, &[1, 300]);
        g.into_model("test")
    }

    #[test]
    fn large_initializers_move_to_external_data() {
        let dir = tempfile::tempdir().unwrap();
        let inline = dir.path().join("inline.onnx");
        write_model(tiny(), &inline).unwrap();
        let back = ModelProto::parse_from_bytes(&std::fs::read(&inline).unwrap()).unwrap();
        assert_eq!(back.graph.initializer[0].raw_data.len(), 4800);
        assert_eq!((back.ir_version, back.opset_import[0].version), (IR_VERSION, OPSET));

        let split = dir.path().join("split.onnx");
        write_model_within(tiny(), &split, 1000).unwrap();
        let back = ModelProto::parse_from_bytes(&std::fs::read(&split).unwrap()).unwrap();
        let w = &back.graph.initializer[0];
        assert!(w.raw_data.is_empty());
        let entries: Vec<(&str, &str)> = w.external_data.iter().map(|e| (e.key.as_str(), e.value.as_str())).collect();
        assert_eq!(entries, [("location", "split.onnx.data"), ("offset", "0"), ("length", "4800")]);
        let data = std::fs::read(dir.path().join("split.onnx.data")).unwrap();
        assert_eq!(data.len(), 4800);
        assert_eq!(&data[..4], &0.5f32.to_le_bytes());
    }
}
