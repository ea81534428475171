//! Rotary position embedding in the rotate-half (NeoX) form that LFM2 uses.
//!
//! Burn's `RotaryEncoding` rotates interleaved pairs, which is a different permutation of
//! the head dimension, so checkpoints trained with rotate-half need this one.

use burn::tensor::{Device, Tensor, TensorData};

use crate::text::config::{RopeSpec, RopeType};

#[derive(Debug, Clone)]
pub struct Rope {
    inv_freq: Vec<f64>,
}

impl Rope {
    pub fn new(head_dim: usize, theta: f64) -> Self {
        Self::from_spec(head_dim, &RopeSpec::default_theta(theta))
    }

    /// The frequencies of `spec` over heads of `head_dim`. `Proportional` (LFM3's full
    /// attention) keeps the default frequencies `theta^(-2i/head_dim)` for the first
    /// `floor(partial_rotary_factor * head_dim / 2)` pairs, divided by `factor`, and gives
    /// the other pairs frequency 0: cos 1, sin 0, those dimensions carry no position.
    pub fn from_spec(head_dim: usize, spec: &RopeSpec) -> Self {
        let half = head_dim / 2;
        let rotated = match spec.rope_type {
            RopeType::Default => half,
            RopeType::Proportional => ((spec.partial_rotary_factor * head_dim as f64) / 2.0).floor() as usize,
        };
        let inv_freq =
            (0..half)
                .map(|i| {
                    if i < rotated {
                        1.0 / spec.theta.powf((2 * i) as f64 / head_dim as f64) / spec.factor
                    } else {
                        0.0
                    }
                })
                .collect();
        Self { inv_freq }
    }

    /// `cos` and `sin` tables `[1, 1, len, head_dim]` for positions `start..start + len`,
    /// each frequency repeated over both halves as transformers does. The angle is computed
    /// in f32 like transformers (`position * inv_freq` in float32) so long contexts agree.
    pub fn tables(&self, start: usize, len: usize, device: &Device) -> (Tensor<4>, Tensor<4>) {
        let hd = self.inv_freq.len() * 2;
        let (cos, sin) = self.values(start..start + len);
        (
            Tensor::from_data(TensorData::new(cos, [1, 1, len, hd]), device),
            Tensor::from_data(TensorData::new(sin, [1, 1, len, hd]), device),
        )
    }

    /// Per-row tables `[rows, 1, len, head_dim]` for slots `start..start + len` of rows
    /// left-padded by `pads[r]` slots: slot `p` of row `r` is position `p - pads[r]` (pad
    /// slots, whose queries and keys are zero, get position 0).
    pub fn padded_tables(&self, start: usize, len: usize, pads: &[usize], device: &Device) -> (Tensor<4>, Tensor<4>) {
        let hd = self.inv_freq.len() * 2;
        let (mut cos, mut sin) = (Vec::with_capacity(pads.len() * len * hd), Vec::with_capacity(pads.len() * len * hd));
        for &pad in pads {
            let (c, s) = self.values((0..len).map(|t| (start + t).saturating_sub(pad)));
            cos.extend(c);
            sin.extend(s);
        }
        let shape = [pads.len(), 1, len, hd];
        (Tensor::from_data(TensorData::new(cos, shape), device), Tensor::from_data(TensorData::new(sin, shape), device))
    }

    /// The cos and sin rows of `positions`, each frequency over both halves.
    fn values(&self, positions: impl Iterator<Item = usize>) -> (Vec<f32>, Vec<f32>) {
        let half = self.inv_freq.len();
        let (mut cos, mut sin) = (Vec::new(), Vec::new());
        for p in positions {
            let pos = p as f32;
            let row: Vec<(f32, f32)> = self.inv_freq.iter().map(|f| (pos * (*f as f32)).sin_cos()).collect();
            for k in 0..2 * half {
                let (s, c) = row[k % half];
                cos.push(c);
                sin.push(s);
            }
        }
        (cos, sin)
    }

    /// `x * cos + rotate_half(x) * sin` for `x: [batch, heads, len, head_dim]`.
    pub fn apply(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
        let [b, h, t, hd] = x.dims();
        let x1 = x.clone().slice([0..b, 0..h, 0..t, 0..hd / 2]);
        let x2 = x.clone().slice([0..b, 0..h, 0..t, hd / 2..hd]);
        let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
        x * cos.clone() + rotated * sin.clone()
    }
}
