//! Quantized graphs from a checkpoint's `quantization.json`, in the two forms deployment
//! takes:
//! - QDQ ([`Form::Qdq`]): weights stored as int4/int8/int16 initializers with
//!   `DequantizeLinear` (per tensor, per channel on `axis`, or blocked with `block_size`,
//!   opset 21), and every quantized op input and KV-cache entry passed through
//!   `QuantizeLinear`/`DequantizeLinear` (uint8/uint16, asymmetric), for onnxruntime and its
//!   QNN execution provider;
//! - AIMET encodings ([`Form::Encodings`]): the float graph, and beside it the encodings of
//!   every quantized weight and activation by the name of its tensor in that graph (AIMET's
//!   format 1.0.0, offsets on AIMET's convention), for QNN's converter
//!   (`--quantization_overrides`).
//! LPBQ weights are written with their effective block scales (`PER_BLOCK`): the same grid.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use autoneural_model::quant::grid::quantize;
use autoneural_model::quant::saved::QuantizationFile;
use autoneural_model::quant::{Encoding, Granularity};
use burn::module::Module;
use onnx_protobuf::TensorProto;
use onnx_protobuf::tensor_proto::DataType;
use serde_json::{Value, json};

use crate::graph::{Attr, Graph};

/// Which quantized form a graph is built in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Qdq,
    Encodings,
}

/// The encodings a graph applies, by checkpoint key (weights; op inputs by the key of the
/// op's weight; KV caches as `...self_attn.k_cache`).
#[derive(Debug, Clone)]
pub struct Quantization {
    pub weights: BTreeMap<String, Encoding>,
    pub activations: BTreeMap<String, Encoding>,
    pub form: Form,
}

/// How a weight is stored relative to its encoding's PyTorch layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// As the encoding's shape (`[out, in, ...]`).
    Torch,
    /// A Burn `Linear` weight, `[in, out]`: the encoding's `[out, in]` transposed.
    InOut,
}

/// AIMET encodings of one graph, by tensor name.
#[derive(Debug, Default)]
pub struct Aimet {
    pub params: BTreeMap<String, Value>,
    pub activations: BTreeMap<String, Value>,
}

impl Aimet {
    pub fn is_empty(&self) -> bool {
        self.params.is_empty() && self.activations.is_empty()
    }

    /// The file: AIMET's format 1.0.0.
    pub fn to_json(&self) -> Value {
        json!({
            "version": "1.0.0",
            "activation_encodings": self.activations.values().collect::<Vec<_>>(),
            "param_encodings": self.params.values().collect::<Vec<_>>(),
            "excluded_layers": [],
            "quantizer_args": { "producer": "autoneural" },
        })
    }
}

/// The ONNX integer type of a grid ([`Quantization::check`] admits 2 to 16 bits).
fn int_type(bits: u32, signed: bool) -> DataType {
    match (bits, signed) {
        (..=4, true) => DataType::INT4,
        (..=4, false) => DataType::UINT4,
        (5..=8, true) => DataType::INT8,
        (5..=8, false) => DataType::UINT8,
        (_, true) => DataType::INT16,
        (_, false) => DataType::UINT16,
    }
}

/// Every entry of `file` applies to `model` (see [`QuantizationFile::check_against`]).
pub fn check_against<M: Module>(file: &QuantizationFile, model: &M) -> Result<()> {
    Ok(file.check_against(model, std::path::Path::new(autoneural_model::quant::saved::FILE))?)
}

impl Quantization {
    /// Every encoding has an ONNX integer type, and every blocked one blocks the input axis.
    pub fn check(&self) -> Result<()> {
        for (key, enc) in self.weights.iter().chain(&self.activations) {
            if !(2..=16).contains(&enc.grid.bits) {
                bail!("quantization.json: {key}: {}-bit integers have no ONNX type", enc.grid.bits);
            }
            if enc.block_size().is_some() && (enc.axes.channel, enc.axes.block) != (0, 1) {
                bail!("quantization.json: {key}: blocks must run along the input axis");
            }
        }
        Ok(())
    }
}

/// Raw little-endian data of integer codes in `dtype` (4-bit types packed two per byte,
/// the first element in the low nibble).
fn int_bytes(codes: &[i32], dtype: DataType) -> Vec<u8> {
    match dtype {
        DataType::INT4 | DataType::UINT4 => {
            codes.chunks(2).map(|p| (p[0] as u8 & 0xf) | ((p.get(1).copied().unwrap_or(0) as u8 & 0xf) << 4)).collect()
        }
        DataType::INT8 | DataType::UINT8 => codes.iter().map(|&c| c as u8).collect(),
        _ => codes.iter().flat_map(|&c| (c as u16).to_le_bytes()).collect(),
    }
}

fn int_initializer(g: &mut Graph, name: &str, shape: &[usize], codes: &[i32], dtype: DataType) -> String {
    g.push_initializer(TensorProto {
        name: name.into(),
        dims: shape.iter().map(|&d| d as i64).collect(),
        data_type: dtype as i32,
        raw_data: int_bytes(codes, dtype),
        ..Default::default()
    });
    name.into()
}

/// AIMET's offset: the zero point on the unsigned grid, negated (`-128` for signed int8
/// with ONNX zero point 0).
fn aimet_offset(enc: &Encoding, zero_point: f32) -> i64 {
    let shift = if enc.grid.signed { 1i64 << (enc.grid.bits - 1) } else { 0 };
    -(zero_point as i64 + shift)
}

fn enc_type(enc: &Encoding) -> &'static str {
    match enc.granularity {
        Granularity::PerTensor => "PER_TENSOR",
        Granularity::PerChannel => "PER_CHANNEL",
        Granularity::PerBlock { .. } | Granularity::Lpbq { .. } => "PER_BLOCK",
    }
}

/// A weight initializer `key` (`values` stored with `shape` in `layout`), as the graph's
/// form wants it; returns the name of the tensor ops read.
pub fn weight(g: &mut Graph, key: &str, shape: &[usize], values: &[f32], layout: Layout) -> String {
    let Some(q) = g.quantization.clone() else { return g.weight(key, shape, values) };
    let Some(enc) = q.weights.get(key) else { return g.weight(key, shape, values) };
    // The stored flat index -> the encoding's (PyTorch-layout) flat index.
    let torch_index = |s: usize| match layout {
        Layout::Torch => s,
        Layout::InOut => {
            let (n_in, n_out) = (shape[0], shape[1]);
            (s % n_out) * n_in + s / n_out
        }
    };
    let channels = enc.shape[enc.axes.channel];
    let blocks = enc.block_size().map(|b| (b, enc.shape[enc.axes.block] / b));
    // The scales laid out as ONNX wants them for the stored tensor, and the attributes.
    let (scale_shape, scales, attrs): (Vec<usize>, Vec<f32>, Vec<(&str, Attr)>) = match (enc.granularity, layout) {
        (Granularity::PerTensor, _) => (vec![], enc.scales.clone(), vec![]),
        (Granularity::PerChannel, Layout::Torch) => (vec![channels], enc.scales.clone(), vec![("axis", Attr::Int(0))]),
        (Granularity::PerChannel, Layout::InOut) => (vec![channels], enc.scales.clone(), vec![("axis", Attr::Int(1))]),
        (_, Layout::InOut) => {
            let (b, nb) = blocks.expect("blocked");
            let v =
                (0..nb).flat_map(|k| (0..channels).map(move |o| (k, o))).map(|(k, o)| enc.scales[o * nb + k]).collect();
            (vec![nb, channels], v, vec![("axis", Attr::Int(0)), ("block_size", Attr::Int(b as i64))])
        }
        (_, Layout::Torch) => {
            let (b, nb) = blocks.expect("blocked");
            let inner: usize = shape[2..].iter().product();
            let v = (0..channels * nb).flat_map(|i| std::iter::repeat_n(enc.scales[i], inner)).collect();
            let mut s = shape.to_vec();
            s[1] = nb;
            (s, v, vec![("axis", Attr::Int(1)), ("block_size", Attr::Int(b as i64))])
        }
    };
    match q.form {
        Form::Encodings => {
            let name = g.weight(key, shape, values);
            let offsets: Vec<i64> = enc.zero_points.iter().map(|&z| aimet_offset(enc, z)).collect();
            let mut e = json!({
                "name": key, "dtype": "INT", "enc_type": enc_type(enc), "bw": enc.grid.bits, "is_sym": true,
                "scale": scales, "offset": if scales.len() == offsets.len() { offsets } else { vec![offsets[0]; scales.len()] },
            });
            if let Some((b, _)) = blocks {
                e["block_size"] = json!(b);
            }
            g.aimet.params.insert(key.into(), e);
            name
        }
        Form::Qdq => {
            let dtype = int_type(enc.grid.bits, enc.grid.signed);
            let codes: Vec<i32> = (0..values.len())
                .map(|s| {
                    let gi = enc.group_of(torch_index(s));
                    quantize(values[s], enc.scales[gi], enc.zero_points[gi], enc.grid) as i32
                })
                .collect();
            let q_name = int_initializer(g, &format!("{key}.quantized"), shape, &codes, dtype);
            let scale = g.weight(&format!("{key}.scale"), &scale_shape, &scales);
            let zeros = vec![0; scales.len()];
            let zp = int_initializer(g, &format!("{key}.zero_point"), &scale_shape, &zeros, dtype);
            g.op("DequantizeLinear", &[&q_name, &scale, &zp], attrs)
        }
    }
}

/// The input `x` of the op whose weight is `key` (or the cache entry `key`), fake-quantized
/// as the graph's form wants it.
pub fn activation(g: &mut Graph, key: &str, x: &str) -> String {
    let Some(q) = g.quantization.clone() else { return x.into() };
    let Some(enc) = q.activations.get(key) else { return x.into() };
    let (scale, zero_point) = (enc.scales[0], enc.zero_points[0]);
    match q.form {
        Form::Encodings => {
            let e = json!({
                "name": x, "dtype": "INT", "enc_type": "PER_TENSOR", "bw": enc.grid.bits, "is_sym": false,
                "scale": [scale], "offset": [aimet_offset(enc, zero_point)],
            });
            g.aimet.activations.insert(x.into(), e);
            x.into()
        }
        Form::Qdq => {
            let dtype = int_type(enc.grid.bits, enc.grid.signed);
            // One op reads each weight's input, so each key is quantized once per graph.
            let s = g.weight(&format!("{key}.input_scale"), &[], &[scale]);
            let zp = int_initializer(g, &format!("{key}.input_zero_point"), &[], &[zero_point as i32], dtype);
            let qx = g.op("QuantizeLinear", &[x, &s, &zp], vec![]);
            g.op("DequantizeLinear", &[&qx, &s, &zp], vec![])
        }
    }
}
