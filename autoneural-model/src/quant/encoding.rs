//! Encodings: the scales and zero points of one tensor, computed from its values (weights:
//! symmetric, per tensor, per output channel, per block or LPBQ) or from a calibrated range
//! (activations: asymmetric per tensor), and applied element by element with the exact
//! QDQ arithmetic of [`super::grid`].

use serde::{Deserialize, Serialize};

use super::grid::{Grid, qdq};
use crate::error::{ModelError, Result};

/// How the values of a weight share scales.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "granularity", rename_all = "snake_case")]
pub enum Granularity {
    PerTensor,
    /// One scale per output channel.
    PerChannel,
    /// One scale per output channel and run of `block_size` input values.
    PerBlock {
        block_size: usize,
    },
    /// Qualcomm's low-power blockwise quantization: per block, an integer multiplier in
    /// `1..=2^scale_bits` of a float per-channel scale.
    Lpbq {
        block_size: usize,
        scale_bits: u32,
    },
}

/// Where a weight's output channels and input blocks lie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Axes {
    pub channel: usize,
    pub block: usize,
}

impl Axes {
    /// Burn's `Linear` weight, `[in, out]`.
    pub const LINEAR: Axes = Axes { channel: 1, block: 0 };
    /// A convolution weight `[out, in / groups, kh, kw]`, or an `[out, in]` matrix.
    pub const OUT_IN: Axes = Axes { channel: 0, block: 1 };
}

/// The quantization parameters of one tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Encoding {
    pub grid: Grid,
    pub granularity: Granularity,
    pub shape: Vec<usize>,
    pub axes: Axes,
    /// One per group: 1 per tensor; `channels` per channel; `channels * blocks` per block
    /// and LPBQ (channel-major).
    pub scales: Vec<f32>,
    /// On the grid, one per group (all 0 for symmetric encodings).
    pub zero_points: Vec<f32>,
    /// LPBQ only: the float per-channel scales and the per-block integer multipliers
    /// (`scales` holds their products, the effective block scales).
    pub lpbq: Option<Lpbq>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lpbq {
    pub channel_scales: Vec<f32>,
    pub block_multipliers: Vec<u32>,
}

/// `absmax / qmax`, or 1 for an all-zero group (any scale represents it exactly).
fn symmetric_scale(absmax: f32, grid: Grid) -> f32 {
    if absmax > 0.0 { absmax / grid.symmetric_max() } else { 1.0 }
}

impl Encoding {
    /// Symmetric signed encoding of weight `values` (row-major, `shape`).
    pub fn weights(values: &[f32], shape: &[usize], bits: u32, granularity: Granularity, axes: Axes) -> Result<Self> {
        if !super::grid::WEIGHT_BITS.contains(&bits) {
            return Err(ModelError::Invalid(format!("weight bit-width {bits}: expected 2 to 16")));
        }
        let grid = Grid::signed(bits);
        let mut enc = Self {
            grid,
            granularity,
            shape: shape.to_vec(),
            axes,
            scales: Vec::new(),
            zero_points: Vec::new(),
            lpbq: None,
        };
        enc.check_layout(values.len())?;
        let mut absmax = vec![0f32; enc.groups()];
        match enc.run() {
            Some(run) => {
                for (m, chunk) in absmax.iter_mut().zip(values.chunks(run)) {
                    *m = chunk.iter().fold(0f32, |a, &v| a.max(v.abs()));
                }
            }
            None => {
                for (i, &v) in values.iter().enumerate() {
                    let g = enc.group_of(i);
                    absmax[g] = absmax[g].max(v.abs());
                }
            }
        }
        enc.scales = match granularity {
            Granularity::Lpbq { scale_bits, .. } => {
                let (scales, lpbq) = lpbq_scales(&absmax, enc.blocks_per_channel(), scale_bits, grid);
                enc.lpbq = Some(lpbq);
                scales
            }
            _ => absmax.iter().map(|&m| symmetric_scale(m, grid)).collect(),
        };
        enc.zero_points = vec![0.0; enc.scales.len()];
        Ok(enc)
    }

    /// Asymmetric unsigned encoding of an activation range (widened to contain 0, so that
    /// zero is exact), per tensor: AIMET's and QNN's activation convention.
    pub fn activation(min: f32, max: f32, bits: u32) -> Result<Self> {
        if !super::grid::ACTIVATION_BITS.contains(&bits) {
            return Err(ModelError::Invalid(format!("activation bit-width {bits}: expected 8 or 16")));
        }
        if !(min.is_finite() && max.is_finite()) || min > max {
            return Err(ModelError::Invalid(format!("activation range [{min}, {max}] is not a finite interval")));
        }
        let grid = Grid { bits, signed: false };
        let (lo, hi) = (min.min(0.0), max.max(0.0));
        let (_, qmax) = grid.range();
        let scale = if hi > lo { (hi - lo) / qmax } else { 1.0 };
        let zero_point = (-lo / scale).round_ties_even().clamp(0.0, qmax);
        Ok(Self {
            grid,
            granularity: Granularity::PerTensor,
            shape: Vec::new(),
            axes: Axes::OUT_IN,
            scales: vec![scale],
            zero_points: vec![zero_point],
            lpbq: None,
        })
    }

    fn check_layout(&self, len: usize) -> Result<()> {
        let n: usize = self.shape.iter().product();
        if n != len {
            return Err(ModelError::Invalid(format!("{len} values for a shape {:?}", self.shape)));
        }
        if self.granularity == Granularity::PerTensor {
            return Ok(());
        }
        let rank = self.shape.len();
        if self.axes.channel >= rank || self.axes.block >= rank {
            return Err(ModelError::Invalid(format!("axes {:?} outside a shape {:?}", self.axes, self.shape)));
        }
        if let Some(b) = self.block_size() {
            let along = self.shape[self.axes.block];
            if b == 0 || !along.is_multiple_of(b) {
                return Err(ModelError::Invalid(format!(
                    "block size {b} does not divide the {along} values along axis {} of a {:?} weight",
                    self.axes.block, self.shape
                )));
            }
        }
        Ok(())
    }

    /// Whether this encoding, read from a file, can be applied to a tensor of `shape`
    /// (`None`: an op input, any shape): its bit-width, axes, block size, and one finite
    /// scale and zero point per group. Says what does not fit; every later use of the
    /// encoding (QDQ, packing, export) relies on this holding.
    pub fn check_fits(&self, shape: Option<&[usize]>) -> std::result::Result<(), String> {
        if !(2..=16).contains(&self.grid.bits) {
            return Err(format!("{}-bit integers are not supported (2 to 16 are)", self.grid.bits));
        }
        if let Some(shape) = shape {
            let (n, m) = (shape.iter().product::<usize>(), self.shape.iter().product::<usize>());
            if n != m || shape.len() != self.shape.len() {
                return Err(format!("an encoding of shape {:?} does not fit the weight's shape {shape:?}", self.shape));
            }
        }
        if self.granularity != Granularity::PerTensor {
            let rank = self.shape.len();
            if self.axes.channel >= rank || self.axes.block >= rank {
                return Err(format!("axes {:?} lie outside its shape {:?}", self.axes, self.shape));
            }
            if let Some(b) = self.block_size() {
                let along = self.shape[self.axes.block];
                if b == 0 || !along.is_multiple_of(b) {
                    return Err(format!(
                        "block size {b} does not divide the {along} values along axis {}",
                        self.axes.block
                    ));
                }
            }
        }
        let groups = self.groups();
        if self.scales.len() != groups || self.zero_points.len() != groups {
            return Err(format!(
                "{} scales and {} zero points where its granularity needs {groups}",
                self.scales.len(),
                self.zero_points.len()
            ));
        }
        if let Some(s) = self.scales.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(format!("scale {s} is not a positive number"));
        }
        if let Some(z) = self.zero_points.iter().find(|z| !z.is_finite()) {
            return Err(format!("zero point {z} is not a number"));
        }
        if let (Granularity::Lpbq { .. }, Some(l)) = (self.granularity, &self.lpbq) {
            let channels = self.shape[self.axes.channel];
            if l.channel_scales.len() != channels || l.block_multipliers.len() != groups {
                return Err(format!(
                    "LPBQ: {} channel scales and {} block multipliers for {channels} channels and {groups} blocks",
                    l.channel_scales.len(),
                    l.block_multipliers.len()
                ));
            }
        }
        Ok(())
    }

    pub fn block_size(&self) -> Option<usize> {
        match self.granularity {
            Granularity::PerBlock { block_size } | Granularity::Lpbq { block_size, .. } => Some(block_size),
            _ => None,
        }
    }

    fn blocks_per_channel(&self) -> usize {
        self.block_size().map_or(1, |b| self.shape[self.axes.block] / b)
    }

    /// Number of scales.
    pub fn groups(&self) -> usize {
        match self.granularity {
            Granularity::PerTensor => 1,
            _ => self.shape[self.axes.channel] * self.blocks_per_channel(),
        }
    }

    /// The group of the element at flat (row-major) index `i`.
    pub fn group_of(&self, i: usize) -> usize {
        if self.granularity == Granularity::PerTensor {
            return 0;
        }
        let coord = |axis: usize| (i / self.shape[axis + 1..].iter().product::<usize>()) % self.shape[axis];
        let c = coord(self.axes.channel);
        match self.block_size() {
            Some(b) => c * self.blocks_per_channel() + coord(self.axes.block) / b,
            None => c,
        }
    }

    /// When the groups are consecutive runs of values in group order (per tensor, or the
    /// channel the first axis and blocks along the second, as in PyTorch's layout), the
    /// run length.
    pub fn run(&self) -> Option<usize> {
        let len: usize = self.shape.iter().product();
        match self.granularity {
            Granularity::PerTensor => Some(len.max(1)),
            _ if self.axes == Axes::OUT_IN => Some(len / self.groups().max(1)).filter(|&r| r > 0),
            _ => None,
        }
    }

    /// Applies `f(value, group)` to every value (row-major, this encoding's shape).
    pub fn map_groups<T>(&self, values: &[f32], f: impl Fn(f32, usize) -> T) -> Vec<T> {
        match self.run() {
            // A per-tensor activation encoding applies to any number of values.
            Some(_) if self.granularity == Granularity::PerTensor => values.iter().map(|&v| f(v, 0)).collect(),
            Some(run) => values
                .chunks(run)
                .enumerate()
                .flat_map(|(g, c)| c.iter().map(move |&v| (v, g)))
                .map(|(v, g)| f(v, g))
                .collect(),
            None => values.iter().enumerate().map(|(i, &v)| f(v, self.group_of(i))).collect(),
        }
    }

    /// Quantize-dequantize every value (row-major, this encoding's shape).
    pub fn fake_quant(&self, values: &[f32]) -> Vec<f32> {
        self.map_groups(values, |v, g| qdq(v, self.scales[g], self.zero_points[g], self.grid))
    }

    /// Each element's scale and zero point, row-major over `len` elements (`len` = the
    /// shape's size, or any length for a per-tensor encoding).
    pub fn expanded(&self, len: usize) -> (Vec<f32>, Vec<f32>) {
        (0..len).map(|i| self.group_of(i)).map(|g| (self.scales[g], self.zero_points[g])).unzip()
    }
}

/// LPBQ: the per-channel scale is the largest block scale divided by `2^scale_bits`; each
/// block's multiplier is the smallest integer whose scale still covers the block's absmax
/// (clamped to `1..=2^scale_bits`).
fn lpbq_scales(absmax: &[f32], blocks: usize, scale_bits: u32, grid: Grid) -> (Vec<f32>, Lpbq) {
    let levels = 1u32 << scale_bits;
    let mut scales = Vec::with_capacity(absmax.len());
    let mut channel_scales = Vec::new();
    let mut block_multipliers = Vec::with_capacity(absmax.len());
    for channel in absmax.chunks(blocks) {
        let top = channel.iter().fold(0f32, |m, &v| m.max(v));
        let s = symmetric_scale(top, grid) / levels as f32;
        channel_scales.push(s);
        for &m in channel {
            let k = ((m / grid.symmetric_max() / s).ceil() as u32).clamp(1, levels);
            block_multipliers.push(k);
            scales.push(s * k as f32);
        }
    }
    (scales, Lpbq { channel_scales, block_multipliers })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_channel_and_per_block_groups() {
        // Burn Linear weight [in = 4, out = 2]: channels along axis 1, blocks along axis 0.
        let w = [1.0, -8.0, 2.0, 4.0, -3.0, 0.5, 0.25, 1.0];
        let e = Encoding::weights(&w, &[4, 2], 4, Granularity::PerChannel, Axes::LINEAR).unwrap();
        assert_eq!(e.scales, vec![3.0 / 7.0, 8.0 / 7.0]);
        let e = Encoding::weights(&w, &[4, 2], 4, Granularity::PerBlock { block_size: 2 }, Axes::LINEAR).unwrap();
        // channel 0: blocks {1, 2} and {-3, 0.25}; channel 1: {-8, 4} and {0.5, 1}
        assert_eq!(e.scales, vec![2.0 / 7.0, 3.0 / 7.0, 8.0 / 7.0, 1.0 / 7.0]);
        assert_eq!((0..8).map(|i| e.group_of(i)).collect::<Vec<_>>(), vec![0, 2, 0, 2, 1, 3, 1, 3]);
        let err = Encoding::weights(&w, &[4, 2], 4, Granularity::PerBlock { block_size: 3 }, Axes::LINEAR);
        assert!(err.unwrap_err().to_string().contains("does not divide"));
        assert!(Encoding::weights(&w, &[4, 2], 1, Granularity::PerTensor, Axes::LINEAR).is_err());
    }

    /// Hand-worked QDQ values on power-of-two scales, where ties are exact.
    #[test]
    fn qdq_values_follow_the_onnx_formula() {
        // int4 blocks of 2: scales 1.75 / 7 = 0.25 and 3.5 / 7 = 0.5.
        let w = [1.75, 0.375, -0.25, 3.5];
        let e = Encoding::weights(&w, &[1, 4], 4, Granularity::PerBlock { block_size: 2 }, Axes::OUT_IN).unwrap();
        assert_eq!(e.scales, vec![0.25, 0.5]);
        // 0.375 / 0.25 = 1.5 -> 2 (to even); -0.25 / 0.5 = -0.5 -> -0
        assert_eq!(e.fake_quant(&w), vec![1.75, 0.5, 0.0, 3.5]);
        // int16 per tensor: scale 2^-10.
        let k = 1.0 / 1024.0;
        let w = [32767.0 * k, 1.5 * k, -0.5 * k, -2.5 * k];
        let e = Encoding::weights(&w, &[4], 16, Granularity::PerTensor, Axes::OUT_IN).unwrap();
        assert_eq!(e.scales, vec![k]);
        assert_eq!(e.fake_quant(&w), vec![32767.0 * k, 2.0 * k, 0.0, -2.0 * k]);
        // int8 asymmetric activation: [-1, 3] over 255 steps, zero point 64.
        let a = Encoding::activation(-1.0, 3.0, 8).unwrap();
        assert_eq!(a.zero_points, vec![64.0]);
        let s = 4.0f32 / 255.0;
        assert_eq!(a.fake_quant(&[10.0, -5.0, 0.0]), vec![(255.0 - 64.0) * s, (0.0 - 64.0) * s, 0.0]);
    }

    #[test]
    fn lpbq_multipliers_cover_each_block() {
        let w = [7.0, 0.7, 3.5, -0.1]; // one channel [1, 4] (OUT_IN), two blocks of 2
        let e = Encoding::weights(&w, &[1, 4], 4, Granularity::Lpbq { block_size: 2, scale_bits: 4 }, Axes::OUT_IN)
            .unwrap();
        let l = e.lpbq.as_ref().unwrap();
        assert_eq!(l.channel_scales, vec![1.0 / 16.0]);
        assert_eq!(l.block_multipliers, vec![16, 8]);
        assert_eq!(e.scales, vec![1.0, 0.5]);
        assert_eq!(e.fake_quant(&w), vec![7.0, 1.0, 3.5, 0.0]);
    }

    #[test]
    fn activation_ranges_contain_zero() {
        let e = Encoding::activation(0.5, 2.0, 8).unwrap();
        assert_eq!(e.zero_points, vec![0.0]);
        assert_eq!(e.scales, vec![2.0 / 255.0]);
        let e = Encoding::activation(-1.0, 3.0, 16).unwrap();
        assert_eq!(e.zero_points, vec![(1.0f32 / (4.0 / 65535.0)).round_ties_even()]);
        assert!(Encoding::activation(1.0, 0.0, 8).is_err());
        assert!(Encoding::activation(0.0, 1.0, 4).unwrap_err().to_string().contains("8 or 16"));
    }
}
