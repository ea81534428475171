//! SwiGLU feed-forward: `w2(silu(w1(x)) * w3(x))`.

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use crate::kernels::silu;
use crate::nn::{Linear, LinearConfig};

/// Keys: `feed_forward.{w1,w2,w3}.weight`.
#[derive(Module, Debug)]
pub struct Mlp {
    pub w1: Linear,
    pub w2: Linear,
    pub w3: Linear,
}

/// An [`Mlp`] from `hidden` through `width` back to `hidden`.
#[derive(Debug, Clone, Copy)]
pub struct MlpConfig {
    pub hidden: usize,
    pub width: usize,
}

impl MlpConfig {
    pub fn new(hidden: usize, width: usize) -> Self {
        Self { hidden, width }
    }

    pub fn init(&self, device: &Device) -> Mlp {
        let (hidden, width) = (self.hidden, self.width);
        let lin = |i, o| LinearConfig::new(i, o).with_bias(false).init(device);
        Mlp { w1: lin(hidden, width), w2: lin(width, hidden), w3: lin(hidden, width) }
    }
}

impl Mlp {
    /// `[b, t, hidden] -> [b, t, hidden]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let gate = silu(self.w1.forward(x.clone()));
        let up = self.w3.forward(x);
        self.w2.forward(gate * up)
    }
}
