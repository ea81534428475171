//! A small helper the analytic producers share: appends [`OpCost`]s for the layer shapes
//! the model code uses, with bytes at a [`Bits`] precision.

use super::ops::{Bits, FLOAT_PARAM_BITS, OpCost, OpKind};

/// A feature map `[c, h, w]` (batch 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fm {
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl Fm {
    pub fn elems(&self) -> u64 {
        (self.c * self.h * self.w) as u64
    }
}

/// The op list under construction.
pub struct Builder {
    pub ops: Vec<OpCost>,
    pub bits: Bits,
    /// What a Linear runs as: `Matmul`, or `Conv` when exported as a 1x1 Conv
    /// (`autoneural export --linear-as-conv`, Qualcomm's convention for LLMs).
    pub linear_kind: OpKind,
}

impl Builder {
    pub fn new(bits: Bits) -> Self {
        Self { ops: Vec::new(), bits, linear_kind: OpKind::Matmul }
    }

    /// An op reading `reads` and writing `writes` activation elements.
    pub fn simple(&mut self, name: &str, kind: OpKind, reads: u64, writes: u64) -> &mut OpCost {
        let mut op = OpCost::new(name, kind);
        op.act_read_bytes = self.bits.act(reads);
        op.act_write_bytes = self.bits.act(writes);
        self.ops.push(op);
        self.ops.last_mut().expect("just pushed")
    }

    /// `[rows, n_in] x [n_in, n_out]` (+ float bias) with the weight at `weight_bits`.
    pub fn linear(&mut self, name: &str, rows: usize, n_in: usize, n_out: usize, bias: bool, weight_bits: u32) {
        let (r, i, o) = (rows as u64, n_in as u64, n_out as u64);
        let kind = self.linear_kind;
        let op = self.simple(name, kind, r * i, r * o);
        op.macs = r * i * o;
        op.weight_bytes = Bits::bytes(i * o, weight_bits) + if bias { Bits::bytes(o, FLOAT_PARAM_BITS) } else { 0 };
    }

    /// A per-row norm over `rows x width` elements with `params` float parameters.
    pub fn norm(&mut self, name: &str, elems: u64, params: u64) {
        self.simple(name, OpKind::Norm, elems, elems).weight_bytes = Bits::bytes(params, FLOAT_PARAM_BITS);
    }

    /// A pointwise op over `elems` outputs reading `inputs` tensors of that size.
    pub fn pointwise(&mut self, name: &str, elems: u64, inputs: u64) {
        self.simple(name, OpKind::Elementwise, inputs * elems, elems);
    }

    /// A pointwise op with a float per-channel parameter of `params` values (layer scale).
    pub fn scale(&mut self, name: &str, elems: u64, params: u64) {
        self.simple(name, OpKind::Elementwise, elems, elems).weight_bytes = Bits::bytes(params, FLOAT_PARAM_BITS);
    }

    /// A 2-D convolution of `x` (padding already resolved into `out`): `kernel x kernel`,
    /// `groups`, weight at the builder's weight bits, optional float bias.
    pub fn conv(&mut self, name: &str, x: Fm, out: Fm, kernel: usize, groups: usize, bias: bool) {
        let kind = if groups > 1 && groups == x.c { OpKind::Depthwise } else { OpKind::Conv };
        let per_out = (x.c / groups * kernel * kernel) as u64;
        let wbits = self.bits.weight;
        let op = self.simple(name, kind, x.elems(), out.elems());
        op.macs = out.elems() * per_out;
        op.weight_bytes = Bits::bytes(out.c as u64 * per_out, wbits)
            + if bias { Bits::bytes(out.c as u64, FLOAT_PARAM_BITS) } else { 0 };
    }
}
