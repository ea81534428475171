//! Rotary position embedding in the rotate-half (NeoX) form that LFM2 uses.
//!
//! Burn's `RotaryEncoding` rotates interleaved pairs, which is a different permutation of
//! the head dimension, so checkpoints trained with rotate-half need this one.

use burn::tensor::{Device, Tensor, TensorData};

#[derive(Debug, Clone)]
pub struct Rope {
    inv_freq: Vec<f64>,
}

impl Rope {
    pub fn new(head_dim: usize, theta: f64) -> Self {
        let half = head_dim / 2;
        let inv_freq = (0..half).map(|i| 1.0 / theta.powf((2 * i) as f64 / head_dim as f64)).collect();
        Self { inv_freq }
    }

    /// `cos` and `sin` tables `[1, 1, len, head_dim]` for positions `start..start + len`,
    /// each frequency repeated over both halves as transformers does. The angle is computed
    /// in f32 like transformers (`position * inv_freq` in float32) so long contexts agree.
    pub fn tables(&self, start: usize, len: usize, device: &Device) -> (Tensor<4>, Tensor<4>) {
        let hd = self.inv_freq.len() * 2;
        let half = self.inv_freq.len();
        let mut cos = vec![0f32; len * hd];
        let mut sin = vec![0f32; len * hd];
        for t in 0..len {
            let pos = (start + t) as f32;
            for (i, f) in self.inv_freq.iter().enumerate() {
                let angle = pos * (*f as f32);
                let (s, c) = angle.sin_cos();
                cos[t * hd + i] = c;
                cos[t * hd + half + i] = c;
                sin[t * hd + i] = s;
                sin[t * hd + half + i] = s;
            }
        }
        (
            Tensor::from_data(TensorData::new(cos, [1, 1, len, hd]), device),
            Tensor::from_data(TensorData::new(sin, [1, 1, len, hd]), device),
        )
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
