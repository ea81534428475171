//! Global gradient-norm clipping, as PyTorch's `clip_grad_norm_` does it: one norm over
//! every gradient of the model, and every gradient scaled by the same factor when that norm
//! exceeds the limit. (Burn's own `GradientClipping::Norm` clips each parameter on its own,
//! which changes the update's direction.)

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;

/// The L2 norm of all gradients in `grads` that belong to `model`'s parameters.
pub fn global_norm<M: Module>(model: &M, grads: &GradientsParams) -> f64 {
    struct SumSquares<'a> {
        grads: &'a GradientsParams,
        total: Option<Tensor<1>>,
    }
    impl ModuleVisitor for SumSquares<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.get::<D>(param.id) {
                let s = g.square().sum();
                self.total = Some(match self.total.take() {
                    Some(t) => t + s,
                    None => s,
                });
            }
        }
    }
    let mut v = SumSquares { grads, total: None };
    model.visit(&mut v);
    v.total.map_or(0.0, |t| f64::from(t.into_scalar::<f32>()).sqrt())
}

/// Scales every gradient by `factor`.
pub fn scale<M: Module>(model: &M, grads: &mut GradientsParams, factor: f64) {
    struct Scale<'a> {
        grads: &'a mut GradientsParams,
        factor: f64,
    }
    impl ModuleVisitor for Scale<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.remove::<D>(param.id) {
                self.grads.register(param.id, g.mul_scalar(self.factor));
            }
        }
    }
    model.visit(&mut Scale { grads, factor });
}

/// Clips to `max_norm` (0: no clipping) and returns the norm before clipping.
pub fn clip_global_norm<M: Module>(model: &M, grads: &mut GradientsParams, max_norm: f64) -> f64 {
    let norm = global_norm(model, grads);
    if max_norm > 0.0 && norm.is_finite() && norm > max_norm {
        scale(model, grads, max_norm / (norm + 1e-6));
    }
    norm
}

/// Moves the gradients of `module`'s parameters out of `grads` into their own set, so that
/// one part of a model can be stepped with its own learning rate.
pub fn take_grads<M: Module>(module: &M, grads: &mut GradientsParams) -> GradientsParams {
    struct Take<'a> {
        from: &'a mut GradientsParams,
        to: GradientsParams,
    }
    impl ModuleVisitor for Take<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.from.remove::<D>(param.id) {
                self.to.register(param.id, g);
            }
        }
    }
    let mut v = Take { from: grads, to: GradientsParams::new() };
    module.visit(&mut v);
    v.to
}
