//! Quantized graphs from a checkpoint's `quantization.json`, in the two forms deployment
//! takes:
//! - QDQ ([`Form::Qdq`]): weights stored as int4/int8/int16 initializers with
//!   `DequantizeLinear` (per tensor, per channel on `axis`, or blocked with `block_size`,
//!   opset 21), and every quantized op input and KV-cache entry passed through
//!   `QuantizeLinear`/`DequantizeLinear` (uint8/uint16, asymmetric), for onnxruntime and its
//!   QNN execution provider;
//! - AIMET encodings ([`Form::Encodings`]): the float graph, and beside it the encodings of
//!   every quantized weight and activation by the name of its tensor in that graph (AIMET's
//!   format 1.0.0, offsets on AIMET's convention, or 2.0.0 in ONNX's terms with LPBQ's
//!   integer block scales: [`EncodingsVersion`]), for QNN's converter
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

/// The versions of AIMET's encodings file the exporter writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub enum EncodingsVersion {
    /// Separate `param_encodings` and `activation_encodings` lists, QNN offsets (`bw`,
    /// `is_sym`, `enc_type`; LPBQ weights as `PER_BLOCK` with their effective block scales).
    #[default]
    #[serde(rename = "1.0.0")]
    V1,
    /// One `encodings` list in ONNX's terms (`output_dtype` `int4`/`uint16`, `y_scale`,
    /// `y_zero_point`, `axis`, `block_size`); LPBQ as `per_channel_float_scale` and
    /// `per_block_int_scale`.
    #[serde(rename = "2.0.0")]
    V2,
}

impl std::str::FromStr for EncodingsVersion {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "1.0.0" | "1" => Ok(Self::V1),
            "2.0.0" | "2" => Ok(Self::V2),
            other => Err(format!("encodings version {other:?}: expected 1.0.0 or 2.0.0")),
        }
    }
}

/// AIMET encodings of one graph, by tensor name: weights in both file versions (an entry
/// that has no 2.0.0 form says why in `v2_refused`), activations as encodings (written in
/// either version, and applied by the QDQ graph).
#[derive(Debug, Default)]
pub struct Aimet {
    pub params: BTreeMap<String, Value>,
    pub activations: BTreeMap<String, Encoding>,
    /// 2.0.0 weight entries.
    pub v2: BTreeMap<String, Value>,
    pub v2_refused: Vec<String>,
}

/// The 1.0.0 entry of activation `name`.
fn activation_v1(name: &str, enc: &Encoding) -> Value {
    json!({
        "name": name, "dtype": "INT", "enc_type": "PER_TENSOR", "bw": enc.grid.bits, "is_sym": enc.grid.signed,
        "scale": [enc.scales[0]], "offset": [aimet_offset(enc, enc.zero_points[0])],
    })
}

/// The 2.0.0 entry of activation `name`.
fn activation_v2(name: &str, enc: &Encoding) -> Value {
    let mut v2 = json!({ "name": name, "output_dtype": output_dtype(enc), "y_scale": enc.scales[0] });
    if enc.zero_points[0] != 0.0 {
        v2["y_zero_point"] = json!(enc.zero_points[0] as i64);
    }
    v2
}

impl Aimet {
    /// The file in `version`.
    pub fn to_json(&self, version: EncodingsVersion) -> Result<Value> {
        Ok(match version {
            EncodingsVersion::V1 => json!({
                "version": "1.0.0",
                "activation_encodings": self.activations.iter().map(|(n, e)| activation_v1(n, e)).collect::<Vec<_>>(),
                "param_encodings": self.params.values().collect::<Vec<_>>(),
                "excluded_layers": [],
                "quantizer_args": { "producer": "autoneural" },
            }),
            EncodingsVersion::V2 => {
                if let Some(why) = self.v2_refused.first() {
                    bail!("{why}; --encodings-version 1.0.0 writes it (as PER_BLOCK)");
                }
                json!({
                    "version": "2.0.0",
                    "producer": { "package": "autoneural", "version": env!("CARGO_PKG_VERSION") },
                    // Weights and activations in one list, by name, as the format has them.
                    "encodings": self
                        .v2
                        .clone()
                        .into_iter()
                        .chain(self.activations.iter().map(|(n, e)| (n.clone(), activation_v2(n, e))))
                        .collect::<BTreeMap<_, _>>()
                        .into_values()
                        .collect::<Vec<_>>(),
                })
            }
        })
    }

    /// AIMET's QuantSim configuration for these encodings: weights symmetric, per channel
    /// when most of the graph's weight encodings are (per channel, per block or LPBQ), else
    /// per tensor; biases and batch-norm parameters float, as our quantization leaves them.
    /// Activation quantizers are placed as AIMET places them (every model input and op
    /// output, less what the supergroup passes fuse, as Qualcomm's HTP configurations
    /// have them), and the encodings cover each ([`crate::placement`]).
    pub fn quantsim_config(&self) -> Value {
        let channelled = self.params.values().filter(|e| e["enc_type"] != "PER_TENSOR").count();
        let per_channel = if 2 * channelled > self.params.len() { "True" } else { "False" };
        let off = json!({ "is_quantized": "False" });
        json!({
            "defaults": {
                "ops": { "is_output_quantized": "True" },
                "params": { "is_quantized": "True", "is_symmetric": "True" },
                "strict_symmetric": "False",
                // Per channel only where weights are (as HTP's configurations): a default
                // would also give a norm's weight, which AIMET quantizes as an activation of
                // its Mul, one scale per channel.
                "per_channel_quantization": "False",
            },
            "params": { "bias": off },
            "op_type": {
                "BatchNormalization": {
                    "params": { "weight": off, "bias": off, "running_mean": off, "running_var": off }
                },
                "Conv": { "per_channel_quantization": per_channel },
                "ConvTranspose": { "per_channel_quantization": per_channel },
                "Gemm": { "per_channel_quantization": per_channel },
                "MatMul": { "per_channel_quantization": per_channel },
            },
            // As Qualcomm's HTP configurations: QNN fuses a written-out RMS norm and a
            // MatMul + bias Add into one op each, with no quantizer inside.
            "supergroup_pass_list": ["RMSNormalization", "MatmulAdd"],
            "supergroups": [],
            "model_input": { "is_input_quantized": "True" },
            "model_output": {},
        })
    }
}

/// Nests `flat` (row-major) as a JSON array of `shape`.
fn nested<T: Copy + Into<Value>>(flat: &[T], shape: &[usize]) -> Value {
    match shape {
        [] => flat[0].into(),
        [n] => Value::Array(flat[..*n].iter().map(|&v| v.into()).collect()),
        [n, rest @ ..] => {
            let inner: usize = rest.iter().product();
            Value::Array((0..*n).map(|i| nested(&flat[i * inner..(i + 1) * inner], rest)).collect())
        }
    }
}

/// AIMET's 2.0.0 dtype: `int{bits}` for a signed (symmetric) grid, `uint{bits}` otherwise.
fn output_dtype(enc: &Encoding) -> String {
    format!("{}int{}", if enc.grid.signed { "" } else { "u" }, enc.grid.bits)
}

/// The 2.0.0 entry of weight `key` stored with `shape` in `layout`: scales in AIMET's
/// encoding shape for the stored tensor (per channel: `[channels]` on the channel `axis`;
/// blocked: the tensor's shape with the block axis divided by `block_size` and every axis
/// but the channel and block ones 1, `axis` the block axis), zero points as ONNX's (2.0.0
/// is ONNX's convention: `x = (q - y_zero_point) * y_scale`).
fn weight_v2(key: &str, enc: &Encoding, shape: &[usize], layout: Layout) -> std::result::Result<Value, String> {
    let channels = enc.shape[enc.axes.channel];
    let mut e = json!({ "name": key, "output_dtype": output_dtype(enc) });
    let zero = enc.zero_points.iter().all(|&z| z == 0.0);
    let zps: Vec<i64> = enc.zero_points.iter().map(|&z| z as i64).collect();
    // (channel axis, block axis) of the stored tensor, and the encoding shape.
    let axes = match layout {
        Layout::Torch => (0, 1),
        Layout::InOut => (1, 0),
    };
    match enc.granularity {
        Granularity::PerTensor => {
            e["y_scale"] = json!(enc.scales[0]);
            if !zero {
                e["y_zero_point"] = json!(zps[0]);
            }
        }
        Granularity::PerChannel => {
            e["y_scale"] = json!(enc.scales);
            e["axis"] = json!(axes.0);
            if !zero {
                e["y_zero_point"] = json!(zps);
            }
        }
        Granularity::PerBlock { block_size } | Granularity::Lpbq { block_size, .. } => {
            let nb = enc.shape[enc.axes.block] / block_size;
            let mut enc_shape = vec![1; shape.len()];
            enc_shape[axes.0] = channels;
            enc_shape[axes.1] = nb;
            // Our groups are channel-major; the encoding shape's order is `[nb, channels]`
            // for a Linear `[in, out]` and `[channels, nb, 1..]` for Torch.
            fn reorder<T: Copy>(groups: &[T], layout: Layout, channels: usize, nb: usize) -> Vec<T> {
                match layout {
                    Layout::Torch => groups.to_vec(),
                    Layout::InOut => block_major(groups, channels, nb),
                }
            }
            e["axis"] = json!(axes.1);
            e["block_size"] = json!(block_size);
            match (&enc.granularity, &enc.lpbq) {
                (Granularity::Lpbq { scale_bits, .. }, Some(l)) => {
                    if *scale_bits != enc.grid.bits {
                        return Err(format!(
                            "{key}: LPBQ with {scale_bits}-bit block multipliers on {}-bit weights has no 2.0.0 form \
                             (AIMET's 2.0.0 LPBQ decompresses to twice the weight bits: scale_bits = bits)",
                            enc.grid.bits
                        ));
                    }
                    let ints: Vec<i64> = l.block_multipliers.iter().map(|&m| i64::from(m)).collect();
                    let ints = reorder(&ints, layout, channels, nb);
                    let mut channel_shape = vec![1; shape.len()];
                    channel_shape[axes.0] = channels;
                    e["per_channel_float_scale"] = nested(&l.channel_scales, &channel_shape);
                    e["per_block_int_scale"] = nested(&ints, &enc_shape);
                }
                _ => {
                    e["y_scale"] = nested(&reorder(&enc.scales, layout, channels, nb), &enc_shape);
                    if !zero {
                        e["y_zero_point"] = nested(&reorder(&zps, layout, channels, nb), &enc_shape);
                    }
                }
            }
        }
    }
    Ok(e)
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

/// Channel-major groups (`o * blocks + k`, ours) in block-major order (`k * channels + o`):
/// a Linear's block scales as its stored `[in, out]` layout lists them.
fn block_major<T: Copy>(groups: &[T], channels: usize, blocks: usize) -> Vec<T> {
    (0..blocks).flat_map(|k| (0..channels).map(move |o| groups[o * blocks + k])).collect()
}

/// The 1.0.0 entry of weight `key`: one scale per group, channel by channel (`[channels,
/// blocks]` whatever the stored layout, which is how AIMET reads block scales).
fn weight_v1(key: &str, enc: &Encoding) -> Value {
    let offsets: Vec<i64> = enc.zero_points.iter().map(|&z| aimet_offset(enc, z)).collect();
    let n = enc.scales.len();
    let mut e = json!({
        "name": key, "dtype": "INT", "enc_type": enc_type(enc), "bw": enc.grid.bits, "is_sym": true,
        "scale": enc.scales, "offset": if offsets.len() == n { offsets } else { vec![offsets[0]; n] },
    });
    if let Some(b) = enc.block_size() {
        e["block_size"] = json!(b);
    }
    e
}

/// The scales of weight `enc` laid out as ONNX's `DequantizeLinear` wants them for the
/// stored tensor (`shape` in `layout`): their shape, values and attributes.
fn onnx_scales(enc: &Encoding, shape: &[usize], layout: Layout) -> (Vec<usize>, Vec<f32>, Vec<(&'static str, Attr)>) {
    let channels = enc.shape[enc.axes.channel];
    let blocks = enc.block_size().map(|b| (b, enc.shape[enc.axes.block] / b));
    match (enc.granularity, layout) {
        (Granularity::PerTensor, _) => (vec![], enc.scales.clone(), vec![]),
        (Granularity::PerChannel, Layout::Torch) => (vec![channels], enc.scales.clone(), vec![("axis", Attr::Int(0))]),
        (Granularity::PerChannel, Layout::InOut) => (vec![channels], enc.scales.clone(), vec![("axis", Attr::Int(1))]),
        (_, Layout::InOut) => {
            let (b, nb) = blocks.expect("blocked");
            let v = block_major(&enc.scales, channels, nb);
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
    }
}

/// A weight initializer `key` (`values` stored with `shape` in `layout`), as the graph's
/// form wants it; returns the name of the tensor ops read.
pub fn weight(g: &mut Graph, key: &str, shape: &[usize], values: &[f32], layout: Layout) -> String {
    let Some(q) = g.quantization.clone() else { return g.weight(key, shape, values) };
    let Some(enc) = q.weights.get(key) else { return g.weight(key, shape, values) };
    match q.form {
        Form::Encodings => {
            let name = g.weight(key, shape, values);
            g.aimet.params.insert(key.into(), weight_v1(key, enc));
            match weight_v2(key, enc, shape, layout) {
                Ok(v2) => {
                    g.aimet.v2.insert(key.into(), v2);
                }
                Err(why) => g.aimet.v2_refused.push(why),
            }
            name
        }
        Form::Qdq => {
            // The stored flat index -> the encoding's (PyTorch-layout) flat index.
            let torch_index = |s: usize| match layout {
                Layout::Torch => s,
                Layout::InOut => {
                    let (n_in, n_out) = (shape[0], shape[1]);
                    (s % n_out) * n_in + s / n_out
                }
            };
            let dtype = int_type(enc.grid.bits, enc.grid.signed);
            let codes: Vec<i32> = (0..values.len())
                .map(|s| {
                    let gi = enc.group_of(torch_index(s));
                    quantize(values[s], enc.scales[gi], enc.zero_points[gi], enc.grid) as i32
                })
                .collect();
            let (scale_shape, scales, attrs) = onnx_scales(enc, shape, layout);
            let q_name = int_initializer(g, &format!("{key}.quantized"), shape, &codes, dtype);
            let scale = g.weight(&format!("{key}.scale"), &scale_shape, &scales);
            let zeros = vec![0; scales.len()];
            let zp = int_initializer(g, &format!("{key}.zero_point"), &scale_shape, &zeros, dtype);
            g.op_named(&format!("{key}.dq"), "DequantizeLinear", &[&q_name, &scale, &zp], attrs)
        }
    }
}

/// The input `x` of the op whose weight is `key` (or the cache entry `key`): its encoding is
/// recorded by the name of `x` (in both forms; a QDQ graph puts every recorded tensor, and
/// the ones [`crate::calibrate`] adds, through QuantizeLinear / DequantizeLinear once built:
/// [`Graph::quantize_activations`]).
pub fn activation(g: &mut Graph, key: &str, x: &str) -> String {
    if let Some(enc) = g.quantization.as_ref().and_then(|q| q.activations.get(key)) {
        let enc = enc.clone();
        g.aimet.activations.insert(x.into(), enc);
    }
    x.into()
}

/// The scale and zero-point initializers of activation `name`'s QuantizeLinear /
/// DequantizeLinear pair (uint8/uint16, asymmetric).
pub fn activation_parameters(g: &mut Graph, name: &str, enc: &Encoding) -> (String, String) {
    let dtype = int_type(enc.grid.bits, enc.grid.signed);
    let s = g.weight(&format!("{name}.act_scale"), &[], &[enc.scales[0]]);
    let zp = int_initializer(g, &format!("{name}.act_zero_point"), &[], &[enc.zero_points[0] as i32], dtype);
    (s, zp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use autoneural_model::quant::Axes;

    /// A Burn Linear weight `[in = 4, out = 2]` in 2.0.0: per channel on axis 1; blocked
    /// with the block scales as `[blocks, out]` on axis 0; LPBQ's multipliers likewise, of
    /// `[1, out]` channel scales, and refused where its multipliers are not as wide as the
    /// weights (AIMET's 2.0.0 LPBQ decompresses to twice the weight bits).
    #[test]
    fn weights_in_2_0_0() {
        let w = [1.0, -8.0, 2.0, 4.0, -3.0, 0.5, 0.25, 1.0];
        let enc = |g| Encoding::weights(&w, &[4, 2], 4, g, Axes::LINEAR).unwrap();
        let e = weight_v2("w", &enc(Granularity::PerChannel), &[4, 2], Layout::InOut).unwrap();
        assert_eq!((e["axis"].clone(), e["output_dtype"].clone()), (json!(1), json!("int4")));
        assert_eq!(e["y_scale"], json!([3.0f32 / 7.0, 8.0f32 / 7.0]));
        assert!(e.get("y_zero_point").is_none());
        // channel 0: blocks {1, 2}, {-3, 0.25}; channel 1: {-8, 4}, {0.5, 1}
        let e = weight_v2("w", &enc(Granularity::PerBlock { block_size: 2 }), &[4, 2], Layout::InOut).unwrap();
        let s = |x: f32| x / 7.0;
        assert_eq!(e["y_scale"], json!([[s(2.0), s(8.0)], [s(3.0), s(1.0)]]));
        assert_eq!((e["axis"].clone(), e["block_size"].clone()), (json!(0), json!(2)));
        let lp = enc(Granularity::Lpbq { block_size: 2, scale_bits: 4 });
        let e = weight_v2("w", &lp, &[4, 2], Layout::InOut).unwrap();
        let l = lp.lpbq.as_ref().unwrap();
        assert_eq!(e["per_channel_float_scale"], json!([l.channel_scales]));
        let m = &l.block_multipliers;
        assert_eq!(e["per_block_int_scale"], json!([[m[0], m[2]], [m[1], m[3]]]));
        assert!(e.get("y_scale").is_none());
        let narrow = enc(Granularity::Lpbq { block_size: 2, scale_bits: 3 });
        assert!(weight_v2("w", &narrow, &[4, 2], Layout::InOut).unwrap_err().contains("no 2.0.0 form"));
    }
}
