//! Low-bit weights for CPU inference: every weight matrix a policy quantizes to 8 bits or
//! fewer, stored as its integers and scales ([`PackedMatrix`]), and a per-thread context in
//! which the products of those weights run through the integer kernels of
//! [`crate::kernels::lowbit`] instead of reading the f32 weights.
//!
//! The integers are those of the weights' encodings (ONNX QuantizeLinear of the float
//! values), so the packed product computes the fake-quantized model's product; the one
//! difference is that activations are quantized per row to int16 on the way in (the A16 of
//! the policy), which changes the logits by far less than the weights' quantization does
//! (tests/quantization.rs states the tolerance).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use burn::module::{Module, ParamId};
use burn::tensor::{Tensor, TensorData};
use burn_flex::Flex;

use super::apply::quantize_weights;
use super::encoding::{Encoding, Granularity};
use super::grid::quantize;
use super::policy::PrecisionPolicy;
use crate::checkpoint::apply::{Identity, collect_tensors, param_keys};
use crate::error::Result;
use crate::kernels::gemv::MAX_ROWS;
use crate::kernels::lowbit::PackedMatrix;

/// The packed weights of a model, by parameter id.
#[derive(Debug, Default)]
pub struct PackedWeights {
    matrices: HashMap<ParamId, PackedMatrix>,
    /// Bytes the packed matrices hold (values and scales).
    pub packed_bytes: usize,
    /// Bytes the same matrices hold as f32.
    pub float_bytes: usize,
    /// Checkpoint keys of quantized weights that stay on the float path (convolutions,
    /// more than 8 bits, blocks that are not a multiple of 32).
    pub unpacked: Vec<String>,
    /// Bytes of packed matrices the products have read so far: what decoding actually
    /// touched, counted by the kernels' callers (a mixture of experts reads only its chosen
    /// experts' matrices).
    read: AtomicU64,
    /// Each packed matrix's checkpoint key, packed bytes and f32 bytes.
    pub sizes: Vec<(String, usize, usize)>,
}

impl PackedWeights {
    /// Packs the matrices of `model` that `encodings` (by checkpoint key, as in
    /// `quantization.json`) quantize: the values are quantized with their encoding, so they
    /// may be the float weights or already their QDQ values.
    pub fn pack<M: Module>(model: &M, encodings: &BTreeMap<String, Encoding>) -> Self {
        let ids: HashMap<String, ParamId> = param_keys(model, &Identity).into_iter().collect();
        let mut out = Self::default();
        for (key, shape, values) in collect_tensors(model, &Identity) {
            let Some(enc) = encodings.get(&key) else { continue };
            match pack_one(&shape, &values, enc) {
                Some(p) => {
                    out.packed_bytes += p.bytes();
                    out.float_bytes += 4 * values.len();
                    out.sizes.push((key.clone(), p.bytes(), 4 * values.len()));
                    out.matrices.insert(ids[&key], p);
                }
                None => out.unpacked.push(key),
            }
        }
        out
    }

    /// Bytes of packed matrices read by products since the weights were packed.
    pub fn bytes_read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    /// (packed, f32) bytes of the matrices one decode token reads, by formula: every matrix
    /// once, except that of each layer's `experts` routed experts (keys `.experts.E.`) a
    /// token reads `top_k`.
    pub fn active_bytes(&self, routing: Option<(usize, usize)>) -> (f64, f64) {
        let share = |key: &str| match routing {
            Some((top_k, experts)) if key.contains(".experts.") => top_k as f64 / experts as f64,
            _ => 1.0,
        };
        self.sizes.iter().fold((0.0, 0.0), |(p, f), (key, packed, float)| {
            (p + share(key) * *packed as f64, f + share(key) * *float as f64)
        })
    }

    /// Number of packed matrices.
    pub fn len(&self) -> usize {
        self.matrices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.matrices.is_empty()
    }
}

/// `model` with its weights quantized by `policy` (their QDQ values, which prefill and every
/// op without a packed form read) and the packed form of its matrices.
pub fn quantize_and_pack<M: Module>(model: M, policy: &PrecisionPolicy) -> Result<(M, PackedWeights)> {
    let (model, reports) = quantize_weights(model, policy)?;
    let encodings: BTreeMap<String, Encoding> = reports.into_iter().map(|r| (r.key, r.encoding)).collect();
    let packed = PackedWeights::pack(&model, &encodings);
    Ok((model, packed))
}

/// Packs the matrices of `model` that `policy` quantizes to 8 bits or fewer (as
/// [`quantize_and_pack`] would) one parameter at a time, and drops their f32 values: each
/// becomes a one-element placeholder. The embedding table keeps its values (lookups read
/// it) besides its packed form for a tied head. A lazily initialised model is thus never
/// whole in f32: LFM2-8B-A1B's 33 GB of f32 weights decode from 4.5 GB packed at W4.
///
/// The result can only decode: a product of more than [`MAX_ROWS`] rows with a dropped
/// weight (a long prefill chunk, training) has no f32 values to read.
pub fn pack_dropping_floats<M: Module>(model: M, policy: &PrecisionPolicy) -> Result<(M, PackedWeights)> {
    use super::apply::{weight_encoding, weight_group};
    use crate::checkpoint::apply::{Rewrite, rewrite_tensors};
    let ids: HashMap<String, ParamId> = param_keys(&model, &Identity).into_iter().collect();
    let mut out = PackedWeights::default();
    let mut error = None;
    let model = rewrite_tensors(model, &Identity, |key, shape, values| {
        let Some(scheme) = weight_group(key, shape.len()).and_then(|g| policy.precision_of(g, key).weights) else {
            return Rewrite::Keep;
        };
        if error.is_some() {
            return Rewrite::Keep;
        }
        let enc = match weight_encoding(&values, shape, scheme) {
            Ok(enc) => enc,
            Err(e) => {
                error = Some(crate::error::ModelError::Invalid(format!("{key}: {e}")));
                return Rewrite::Keep;
            }
        };
        match pack_one(shape, &values, &enc) {
            Some(p) => {
                out.packed_bytes += p.bytes();
                out.float_bytes += 4 * values.len();
                out.sizes.push((key.to_string(), p.bytes(), 4 * values.len()));
                out.matrices.insert(ids[key], p);
                if key.ends_with("embed_tokens.weight") {
                    Rewrite::Values(enc.fake_quant(&values))
                } else {
                    Rewrite::Drop
                }
            }
            None => {
                out.unpacked.push(key.to_string());
                Rewrite::Values(enc.fake_quant(&values))
            }
        }
    });
    match error {
        Some(e) => Err(e),
        None => Ok((model, out)),
    }
}

/// One `[out, in]` matrix, or `None` when it has no packed form.
fn pack_one(shape: &[usize], values: &[f32], enc: &Encoding) -> Option<PackedMatrix> {
    let &[n, k] = shape else { return None };
    if !enc.grid.signed || enc.grid.bits > 8 || enc.shape != shape || enc.axes.channel != 0 {
        return None;
    }
    let (group, scales): (usize, Vec<f32>) = match enc.granularity {
        Granularity::PerTensor => (k, vec![enc.scales[0]; n]),
        Granularity::PerChannel => (k, enc.scales.clone()),
        Granularity::PerBlock { block_size } | Granularity::Lpbq { block_size, .. } => (block_size, enc.scales.clone()),
    };
    let q: Vec<i8> = enc.map_groups(values, |v, g| quantize(v, enc.scales[g], 0.0, enc.grid) as i8);
    PackedMatrix::new(&q, n, k, enc.grid.bits, group, &scales)
}

/// Runs `f` with the products of `weights`' matrices through the low-bit kernels.
pub fn with_packed<R>(weights: Arc<PackedWeights>, f: impl FnOnce() -> R) -> R {
    let _scope = super::context::Scope::packed(Some(weights));
    f()
}

/// Whether the product of `weight` with `x` runs through its packed form on this thread:
/// this thread runs [`with_packed`] weights that include it, and `x` is a flex inference
/// tensor of at most [`MAX_ROWS`] rows of the matrix's width (a decode step; prefill stays
/// on the f32 matmul, whose weights are the same QDQ values).
pub fn applies<const D: usize>(weight: ParamId, x: &Tensor<D>) -> bool {
    super::context::with(|c| {
        let Some(matrix) = c.packed.as_ref().and_then(|p| p.matrices.get(&weight)) else { return false };
        let dims = x.dims();
        let m: usize = dims[..D - 1].iter().product();
        m <= MAX_ROWS
            && dims[D - 1] == matrix.cols()
            && x.clone().try_into_primitive::<Flex>().ok().is_some_and(|p| p.as_slice::<f32>().is_some())
    })
}

/// `x @ W^T` for the weight `weight` (`x: [..., in]` -> `[..., out]`) through its packed
/// form, when it [`applies`].
pub fn packed_product<const D: usize>(weight: ParamId, x: &Tensor<D>) -> Option<Tensor<D>> {
    super::context::with(|c| {
        let matrix = c.packed.as_ref()?.matrices.get(&weight)?;
        let dims = x.dims();
        let m: usize = dims[..D - 1].iter().product();
        if m > MAX_ROWS || dims[D - 1] != matrix.cols() {
            return None;
        }
        let p = x.clone().try_into_primitive::<Flex>().ok()?;
        let xs = p.as_slice::<f32>()?;
        let mut out = vec![0f32; m * matrix.rows()];
        matrix.matmul(xs, m, &mut out);
        c.packed.as_ref()?.read.fetch_add(matrix.bytes() as u64, Ordering::Relaxed);
        let mut out_dims = dims;
        out_dims[D - 1] = matrix.rows();
        Some(Tensor::from_data(TensorData::new(out, out_dims), &x.device()))
    })
}
