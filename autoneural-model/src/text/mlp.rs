//! SwiGLU feed-forward: `w2(silu(w1(x)) * w3(x))`.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Tensor};

use crate::kernels::silu;
use crate::text::linear::project;

/// Keys: `feed_forward.{w1,w2,w3}.weight`.
#[derive(Module, Debug)]
pub struct Mlp {
    pub w1: Linear,
    pub w2: Linear,
    pub w3: Linear,
}

impl Mlp {
    pub fn new(hidden: usize, width: usize, device: &Device) -> Self {
        let lin = |i, o| LinearConfig::new(i, o).with_bias(false).init(device);
        Self { w1: lin(hidden, width), w2: lin(width, hidden), w3: lin(hidden, width) }
    }

    /// `[b, t, hidden] -> [b, t, hidden]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let gate = silu(project(&self.w1, x.clone()));
        let up = project(&self.w3, x);
        project(&self.w2, gate * up)
    }
}
