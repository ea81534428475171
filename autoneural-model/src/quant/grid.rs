//! Integer grids and ONNX's QuantizeLinear / DequantizeLinear arithmetic, element by element:
//! `q = saturate(round_half_even(x / scale) + zero_point)` and `x' = (q - zero_point) * scale`,
//! in f32 as onnxruntime computes them, so that exported QDQ graphs give the same numbers as
//! the fake quantization here.

use serde::{Deserialize, Serialize};

/// An integer type: `bits` wide, signed (two's complement range) or unsigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grid {
    pub bits: u32,
    pub signed: bool,
}

impl Grid {
    /// Weights: symmetric, signed (int2..int16).
    pub fn signed(bits: u32) -> Self {
        Self { bits, signed: true }
    }

    /// `[-2^(b-1), 2^(b-1) - 1]` signed, `[0, 2^b - 1]` unsigned.
    pub fn range(self) -> (f32, f32) {
        if self.signed {
            let h = (1i64 << (self.bits - 1)) as f32;
            (-h, h - 1.0)
        } else {
            (0.0, ((1i64 << self.bits) - 1) as f32)
        }
    }

    /// The largest magnitude a symmetric encoding maps to: `2^(b-1) - 1` (the grid's
    /// negative end, one step further, is never produced from `|x| <= absmax`).
    pub fn symmetric_max(self) -> f32 {
        ((1i64 << (self.bits - 1)) - 1) as f32
    }
}

/// ONNX QuantizeLinear of one value (round half to even, then saturate to the grid).
#[inline]
pub fn quantize(x: f32, scale: f32, zero_point: f32, grid: Grid) -> f32 {
    let (lo, hi) = grid.range();
    // Saturating before rounding is the same (the bounds and the zero point are integers)
    // and keeps the value where `round_half_even` is exact.
    round_half_even((x / scale).clamp(lo - zero_point, hi - zero_point)) + zero_point
}

/// Round half to even of `|v| <= 2^22`: adding and subtracting 1.5 * 2^23 leaves the nearest
/// integer, ties to even, under IEEE round-to-nearest-even. Without SSE4.1 in the target,
/// `f32::round_ties_even` is a call to libm's `rintf` per value, which made it most of
/// the time of quantizing a model.
#[inline(always)]
fn round_half_even(v: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (v + MAGIC) - MAGIC
}

/// ONNX DequantizeLinear of one value.
#[inline]
pub fn dequantize(q: f32, scale: f32, zero_point: f32) -> f32 {
    (q - zero_point) * scale
}

/// Quantize then dequantize: what a QDQ pair computes.
#[inline]
pub fn qdq(x: f32, scale: f32, zero_point: f32, grid: Grid) -> f32 {
    dequantize(quantize(x, scale, zero_point, grid), scale, zero_point)
}

/// Bit-widths this codebase quantizes to.
pub const WEIGHT_BITS: std::ops::RangeInclusive<u32> = 2..=16;
pub const ACTIVATION_BITS: [u32; 2] = [8, 16];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(Grid::signed(8).range(), (-128.0, 127.0));
        assert_eq!(Grid::signed(4).range(), (-8.0, 7.0));
        assert_eq!(Grid { bits: 16, signed: false }.range(), (0.0, 65535.0));
        assert_eq!(Grid::signed(4).symmetric_max(), 7.0);
    }

    #[test]
    fn ties_go_to_even_and_values_saturate() {
        let g = Grid::signed(8);
        // x / scale = 2.5 -> 2, 3.5 -> 4, -2.5 -> -2
        assert_eq!(quantize(0.25, 0.1, 0.0, g), 2.0);
        assert_eq!(quantize(0.7, 0.2, 0.0, g), 4.0);
        assert_eq!(quantize(-0.5, 0.2, 0.0, g), -2.0);
        assert_eq!(quantize(1e6, 0.1, 0.0, g), 127.0);
        assert_eq!(quantize(-1e6, 0.1, 0.0, g), -128.0);
        // Asymmetric uint8 with a zero point.
        let u = Grid { bits: 8, signed: false };
        assert_eq!(quantize(-1.0, 0.5, 10.0, u), 8.0);
        assert_eq!(quantize(-100.0, 0.5, 10.0, u), 0.0);
        assert_eq!(qdq(0.26, 0.1, 0.0, g), 0.3);
    }
}
