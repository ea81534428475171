//! The fused activations used while training on flex (`kernels::silu`, `kernels::gelu_tanh`
//! on autodiff tensors) give the values and the gradients of Burn's composite ops, and
//! they stay differentiable when the input comes out of other ops.

use autoneural_model::kernels;
use burn::tensor::activation::{gelu_approximate, silu};
use burn::tensor::{Device, Distribution, Tensor};

/// `f(x)` and `d sum(w * f(x)) / dx` for a `[4, 300]` input spread over [-9, 9].
fn value_and_grad(f: impl Fn(Tensor<2>) -> Tensor<2>, x: &Tensor<2>, w: &Tensor<2>) -> (Vec<f32>, Vec<f32>) {
    let x = x.clone().require_grad();
    let y = f(x.clone() * 1.0);
    let grads = (y.clone() * w.clone()).sum().backward();
    let g = x.grad(&grads).expect("x gets a gradient");
    (y.into_data().try_to_vec::<f32>().unwrap(), g.into_data().try_to_vec::<f32>().unwrap())
}

fn close(name: &str, a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len());
    for (i, (&p, &q)) in a.iter().zip(b).enumerate() {
        assert!((p - q).abs() <= tol * (1.0 + q.abs()), "{name} element {i}: {p} vs {q}");
    }
}

#[test]
fn fused_training_activations_match_burns_ops() {
    let device = Device::flex().autodiff();
    device.seed(7);
    let x = Tensor::<2>::random([4, 300], Distribution::Uniform(-9.0, 9.0), &device);
    let w = Tensor::<2>::random([4, 300], Distribution::Uniform(-1.0, 1.0), &device);
    let (v, g) = value_and_grad(kernels::silu, &x, &w);
    let (rv, rg) = value_and_grad(silu, &x, &w);
    close("silu value", &v, &rv, 1e-6);
    close("silu gradient", &g, &rg, 1e-5);
    let (v, g) = value_and_grad(kernels::gelu_tanh, &x, &w);
    let (rv, rg) = value_and_grad(gelu_approximate, &x, &w);
    close("gelu value", &v, &rv, 1e-6);
    close("gelu gradient", &g, &rg, 1e-5);
}

#[test]
fn fused_inference_activations_match_burns_ops() {
    let device = Device::flex();
    let x = Tensor::<2>::random([3, 500], Distribution::Uniform(-12.0, 12.0), &device);
    let data = |t: Tensor<2>| t.into_data().try_to_vec::<f32>().unwrap();
    close("silu", &data(kernels::silu(x.clone())), &data(silu(x.clone())), 1e-6);
    close("gelu", &data(kernels::gelu_tanh(x.clone())), &data(gelu_approximate(x)), 1e-6);
}
