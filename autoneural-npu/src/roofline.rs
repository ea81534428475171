//! The roofline: time of one op and of a graph on a [`DeviceProfile`], and the memory a
//! session holds.
//!
//! Per op (seconds):
//! ```text
//! compute = macs / (int8_tops * 1e12 / 2 * rate(activation bits) * efficiency[kind])
//! spill   = act_read + act_write > on_chip_bytes
//! dram    = weight_bytes + state_bytes + (spill ? act_read + act_write : 0)
//! on_chip = spill ? 0 : act_read + act_write
//! time    = max(compute, dram / (dram_gb_s * 1e9) + on_chip / (on_chip_gb_s * 1e9))
//!           + op_overhead_us * 1e-6
//! ```
//! A graph's time is the sum of its ops' (one op at a time, no overlap between ops).

use serde::Serialize;

use super::ops::{OpCost, OpKind, totals};
use super::profile::DeviceProfile;

/// Where one op's time goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct OpTime {
    pub compute_s: f64,
    pub memory_s: f64,
    pub overhead_s: f64,
    /// Its activations did not fit on chip and went through DRAM.
    pub spilled: bool,
}

impl OpTime {
    pub fn total_s(&self) -> f64 {
        self.compute_s.max(self.memory_s) + self.overhead_s
    }
}

/// The time of `op` with activations of `activation_bits`.
pub fn op_time(op: &OpCost, activation_bits: u32, p: &DeviceProfile) -> OpTime {
    let compute_s = if op.macs == 0 { 0.0 } else { op.macs as f64 / p.macs_per_s(op.kind, activation_bits) };
    let act = op.act_bytes();
    let spilled = act > p.on_chip_bytes;
    let dram = op.weight_bytes + op.state_bytes + if spilled { act } else { 0 };
    let on_chip = if spilled { 0 } else { act };
    let memory_s = dram as f64 / (p.dram_gb_s * 1e9) + on_chip as f64 / (p.on_chip_gb_s * 1e9);
    OpTime { compute_s, memory_s, overhead_s: p.op_overhead_us * 1e-6, spilled }
}

/// A graph's time, in total and by op kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GraphTime {
    pub total_s: f64,
    /// `(kind, seconds, ops)` for the kinds present.
    pub by_kind: Vec<(OpKind, f64, usize)>,
    /// Ops whose activations spilled to DRAM.
    pub spilled_ops: usize,
}

pub fn graph_time(ops: &[OpCost], activation_bits: u32, p: &DeviceProfile) -> GraphTime {
    let mut g = GraphTime::default();
    for kind in OpKind::ALL {
        let mine: Vec<OpTime> = ops.iter().filter(|o| o.kind == kind).map(|o| op_time(o, activation_bits, p)).collect();
        if mine.is_empty() {
            continue;
        }
        let s: f64 = mine.iter().map(OpTime::total_s).sum();
        g.spilled_ops += mine.iter().filter(|t| t.spilled).count();
        g.by_kind.push((kind, s, mine.len()));
        g.total_s += s;
    }
    g
}

/// Run-time memory a session holds while it runs a graph, bytes: its persistent state
/// (`state_bytes`: the KV cache at its full static size, conv state) and the largest
/// activation working set of one op (inputs and output live together; earlier activations
/// are freed or reused). Weights are read-only, mapped from the context binary and
/// streamed from DRAM: they do not count (see [`weights_bytes`]).
pub fn footprint(ops: &[OpCost], state_bytes: u64) -> u64 {
    state_bytes + totals(ops).peak_act_bytes
}

/// The weights a graph streams, bytes.
pub fn weights_bytes(ops: &[OpCost]) -> u64 {
    totals(ops).weight_bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_op_is_bound_by_compute_or_memory_plus_overhead() {
        let p = DeviceProfile::builtin("sa8295p").unwrap();
        let mut op = OpCost::new("mm", OpKind::Matmul);
        op.macs = 1_000_000_000;
        let t = op_time(&op, 16, &p);
        let expect = 1e9 / (p.int8_tops * 1e12 / 2.0 * p.a16_rate * p.efficiency.matmul);
        assert!((t.compute_s - expect).abs() < 1e-12 && t.memory_s == 0.0);
        op.weight_bytes = 1_000_000_000;
        let t = op_time(&op, 16, &p);
        assert!((t.total_s() - (1.0 / p.dram_gb_s).max(expect) - p.op_overhead_us * 1e-6).abs() < 1e-9);
        op.act_read_bytes = p.on_chip_bytes + 1;
        assert!(op_time(&op, 16, &p).spilled);
    }
}
