//! The unit of the cost model: one operator's work and traffic, and the precision that
//! turns element counts into bytes.

use autoneural_model::quant::PrecisionPolicy;
use autoneural_model::quant::policy::Precision;
use serde::Serialize;

/// What an operator is, as far as the NPU's throughput is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// Activations times a weight matrix (Linear, Gemm, 1x1 conv written as MatMul).
    Matmul,
    /// A dense (groups = 1) convolution with a kernel, including 1x1.
    Conv,
    /// A grouped convolution with one input channel per group.
    Depthwise,
    /// Activations times activations: attention scores `q k^T` and `probs v`.
    Attention,
    /// Softmax over the last axis.
    Softmax,
    /// RMS, layer or batch norm (and their parts when a graph spells them out).
    Norm,
    /// Pointwise arithmetic and activations: add, mul, GELU, SiLU, RoPE.
    Elementwise,
    /// Row lookups (embedding, RoPE tables).
    Gather,
    /// Layout only: concat, slice, split, transpose, resize, pooling.
    DataMovement,
}

impl OpKind {
    pub const ALL: [OpKind; 9] = [
        Self::Matmul,
        Self::Conv,
        Self::Depthwise,
        Self::Attention,
        Self::Softmax,
        Self::Norm,
        Self::Elementwise,
        Self::Gather,
        Self::DataMovement,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Matmul => "matmul",
            Self::Conv => "conv",
            Self::Depthwise => "depthwise",
            Self::Attention => "attention",
            Self::Softmax => "softmax",
            Self::Norm => "norm",
            Self::Elementwise => "elementwise",
            Self::Gather => "gather",
            Self::DataMovement => "data_movement",
        }
    }
}

/// One operator of a graph (batch 1).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpCost {
    pub name: String,
    pub kind: OpKind,
    /// Multiply-accumulates (0 for ops without a reduction).
    pub macs: u64,
    /// Parameter bytes the op reads, at their stored precision (read from DRAM every run).
    pub weight_bytes: u64,
    /// Persistent state read: KV cache and conv state (lives in DRAM between runs).
    pub state_bytes: u64,
    /// Activation bytes read (elements x activation bits / 8).
    pub act_read_bytes: u64,
    /// Activation bytes written.
    pub act_write_bytes: u64,
}

impl OpCost {
    pub fn new(name: impl Into<String>, kind: OpKind) -> Self {
        Self {
            name: name.into(),
            kind,
            macs: 0,
            weight_bytes: 0,
            state_bytes: 0,
            act_read_bytes: 0,
            act_write_bytes: 0,
        }
    }

    /// Activation bytes moved (read + written): the op's live working set.
    pub fn act_bytes(&self) -> u64 {
        self.act_read_bytes + self.act_write_bytes
    }
}

/// Totals of a graph.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Totals {
    pub ops: usize,
    pub macs: u64,
    pub weight_bytes: u64,
    pub state_bytes: u64,
    /// The largest activation working set of one op (bytes).
    pub peak_act_bytes: u64,
}

/// Sums of an op list.
pub fn totals(ops: &[OpCost]) -> Totals {
    Totals {
        ops: ops.len(),
        macs: ops.iter().map(|o| o.macs).sum(),
        weight_bytes: ops.iter().map(|o| o.weight_bytes).sum(),
        state_bytes: ops.iter().map(|o| o.state_bytes).sum(),
        peak_act_bytes: ops.iter().map(OpCost::act_bytes).max().unwrap_or(0),
    }
}

/// Bits per element of one part of the model as deployed: weights (matmul and conv
/// weights; the LM head and a tied embedding use [`Bits::head_weight`]), activations
/// (every op input and output), KV cache and conv state. 32 means float32, 16 with
/// `activation` means int16 ("A16" in Qualcomm's terms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Bits {
    pub weight: u32,
    pub activation: u32,
    pub kv: u32,
}

/// Biases, norm weights and layer scales are stored as float32, as the exporter writes them.
pub const FLOAT_PARAM_BITS: u32 = 32;

impl Bits {
    pub const FP32: Bits = Bits { weight: 32, activation: 32, kv: 32 };
    /// W8A16 with an int8 KV cache.
    pub const W8A16: Bits = Bits { weight: 8, activation: 16, kv: 8 };
    /// W4A16 with an int8 KV cache.
    pub const W4A16: Bits = Bits { weight: 4, activation: 16, kv: 8 };

    /// The LM head and a tied embedding table: never below 8 bits (Qualcomm's recipes and
    /// the `autoneural` policy keep the head at 8-bit per channel).
    pub fn head_weight(&self) -> u32 {
        self.weight.max(8)
    }

    /// Bytes of `n` elements at `bits` (4-bit values pack two per byte).
    pub fn bytes(n: u64, bits: u32) -> u64 {
        (n * bits as u64).div_ceil(8)
    }

    pub fn act(&self, n: u64) -> u64 {
        Self::bytes(n, self.activation)
    }

    /// `(vision, language)` bits of a policy: vision from its `vision` group, language from
    /// `language`, the KV cache from `kv_cache_bits` (else the activations'). A float part
    /// counts 32 bits.
    pub fn from_policy(policy: &PrecisionPolicy) -> (Bits, Bits) {
        let of = |p: &Precision, kv: Option<u32>| {
            let activation = p.activations.map_or(32, |a| a.bits);
            Bits { weight: p.weights.map_or(32, |w| w.bits), activation, kv: kv.unwrap_or(activation) }
        };
        (of(&policy.vision, None), of(&policy.language, policy.kv_cache_bits))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_of_the_paper_policy() {
        let (v, l) = Bits::from_policy(&PrecisionPolicy::preset("autoneural").unwrap());
        assert_eq!(v, Bits { weight: 8, activation: 16, kv: 16 });
        assert_eq!(l, Bits::W4A16);
        assert_eq!(l.head_weight(), 8);
        assert_eq!(Bits::from_policy(&PrecisionPolicy::preset("fp32").unwrap()).1, Bits::FP32);
        assert_eq!(Bits::bytes(3, 4), 2);
    }
}
