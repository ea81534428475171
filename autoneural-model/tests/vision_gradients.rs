//! Gradients reach every parameter of each encoder and of both connectors (one SGD step on
//! the autodiff backend changes all of them), and they are right (finite differences).

mod common;

use autoneural_model::connector::ProjectorConfig;
use autoneural_model::vision::EncoderConfig;
use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Device, Distribution, Gradients, Tensor};
use common::{snapshot, step_changes_everything, weighted_sum};

#[test]
fn encoders_train_end_to_end() {
    let device = Device::flex().autodiff();
    for (name, res) in [("mobilenetv5_tiny", 64), ("vit_tiny", 32)] {
        let config = EncoderConfig::preset(name).unwrap();
        let model = config.init(&device).unwrap();
        step_changes_everything(model, |m| {
            let x = Tensor::<4>::random([2, 3, res, res], Distribution::Uniform(0.0, 1.0), &device);
            weighted_sum(m.tokens(x))
        });
    }
}

/// Every parameter's gradient is finite after `loss`.
fn finite_gradients<M: Module>(model: &M, grads: &Gradients) -> Vec<String> {
    struct Check<'a> {
        grads: &'a Gradients,
        path: Vec<String>,
        bad: Vec<String>,
    }
    impl burn::module::ModuleVisitor for Check<'_> {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.into());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            if let Some(g) = p.val().grad(self.grads) {
                let v: Vec<f32> = g.into_data().try_into_vec_as::<f32>().unwrap();
                if v.iter().any(|x| !x.is_finite()) {
                    self.bad.push(self.path.join("."));
                }
            }
        }
    }
    let mut c = Check { grads, path: Vec::new(), bad: Vec::new() };
    model.visit(&mut c);
    c.bad
}

/// An all-black image (alone in its batch) makes whole feature maps exactly 0, where each norm
/// multiplies the gradient by 1 / sqrt(eps): through the encoder that once reached inf and
/// NaN at the first step. Those maps now pass no gradient; every gradient stays finite, for
/// both norms, and a constant grey image trains as any other.
#[test]
fn a_black_or_constant_image_gives_finite_gradients() {
    let device = Device::flex().autodiff();
    for norm in [autoneural_model::vision::NormKind::Rms, autoneural_model::vision::NormKind::Batch] {
        let EncoderConfig::MobileNetV5(mut arch) = EncoderConfig::preset("mobilenetv5_tiny").unwrap() else {
            unreachable!("a MobileNetV5 preset")
        };
        arch.norm = norm;
        let enc = EncoderConfig::MobileNetV5(arch).init(&device).unwrap();
        for value in [0.0, 0.5] {
            let x = Tensor::<4>::full([1, 3, 64, 64], value, &device);
            let grads = weighted_sum(enc.tokens(x)).backward();
            let bad = finite_gradients(&enc, &grads);
            assert!(bad.is_empty(), "{norm:?}, constant {value}: non-finite gradients in {bad:?}");
        }
    }
}

#[test]
fn connectors_train() {
    let device = Device::flex().autodiff();
    for (downsample, layer_norm) in [(1, false), (2, true)] {
        let cfg = ProjectorConfig {
            vision_dim: 8,
            hidden: 12,
            text_dim: 6,
            bias: true,
            downsample,
            layer_norm,
            merge_blocks: false,
        };
        let proj = cfg.init(&device);
        step_changes_everything(proj, |p| {
            let x = Tensor::<3>::random([1, 16, 8], Distribution::Normal(0.0, 1.0), &device);
            weighted_sum(p.forward(x, 4, 4))
        });
    }
}

/// The encoders' backward agrees with finite differences: d(sum(w * tokens)) / d(pixel) at a
/// few pixels, autodiff against central differences of the same forward.
#[test]
fn encoder_gradients_match_finite_differences() {
    let device = Device::flex().autodiff();
    device.seed(3);
    for (name, res) in [("mobilenetv5_tiny", 64), ("vit_tiny", 32)] {
        let enc = EncoderConfig::preset(name).unwrap().init(&device).unwrap();
        let x = Tensor::<4>::random([1, 3, res, res], Distribution::Uniform(0.0, 1.0), &device);
        let values: Vec<f32> = x.clone().into_data().try_into_vec_as::<f32>().unwrap();
        let w = Tensor::<3>::random(enc.tokens(x.clone()).dims(), Distribution::Normal(0.0, 1.0), &device).inner();
        let objective = |v: &[f32]| -> f64 {
            let t = Tensor::<4>::from_data(burn::tensor::TensorData::new(v.to_vec(), [1, 3, res, res]), &device);
            f64::from((enc.tokens(t).inner() * w.clone()).sum().into_scalar::<f32>())
        };
        let xg = x.inner().autodiff().require_grad();
        let grads = (enc.tokens(xg.clone()) * w.clone().autodiff()).sum().backward();
        let g: Vec<f32> = xg.grad(&grads).unwrap().into_data().try_into_vec_as::<f32>().unwrap();
        // f32 rounding of the objective sets a floor on what differences resolve; it scales with
        // the largest pixel gradient (a fixed 2e-3 failed on one unseeded CI draw).
        let floor = 1e-2 * g.iter().fold(0f64, |m, v| m.max(f64::from(v.abs())));
        for i in [5usize, 100, 777, 1234, 2000, 3000].map(|i| i % values.len()) {
            let eps = 1e-3f32;
            let (mut plus, mut minus) = (values.clone(), values.clone());
            plus[i] += eps;
            minus[i] -= eps;
            let fd = (objective(&plus) - objective(&minus)) / (2.0 * f64::from(eps));
            let ad = f64::from(g[i]);
            assert!(
                (fd - ad).abs() <= 0.05 * fd.abs().max(ad.abs()) + floor,
                "{name} pixel {i}: autodiff {ad}, finite differences {fd}"
            );
        }
    }
}

/// Adds `eps` to element `index` of the `target`-th float parameter (visiting order).
struct Nudge {
    target: usize,
    index: usize,
    eps: f32,
    seen: usize,
}

impl ModuleMapper for Nudge {
    fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
        self.seen += 1;
        if self.seen - 1 != self.target {
            return p;
        }
        let id = p.id;
        let v = p.val();
        let (shape, device) = (v.shape(), v.device());
        let mut values: Vec<f32> = v.into_data().try_into_vec_as::<f32>().unwrap();
        values[self.index] += self.eps;
        Param::initialized(id, Tensor::from_data(burn::tensor::TensorData::new(values, shape), &device).require_grad())
    }
}

/// Every float parameter's gradient (flattened), in visiting order.
struct Grads<'a> {
    grads: &'a Gradients,
    out: Vec<Vec<f32>>,
}

impl ModuleMapper for Grads<'_> {
    fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let g = p.val().grad(self.grads).map(|g| g.into_data().try_into_vec_as::<f32>().unwrap());
        self.out.push(g.unwrap_or_default());
        p
    }
}

/// The quickstart's encoder as it trains (batch norm on the batch's statistics, layer scale
/// 1.0, four images): autodiff's weight gradients of every kind of layer (the stem, depthwise
/// and pointwise convolutions, batch-norm scales, attention, the MSFA) agree with central
/// differences. Input gradients alone would not reach the weight-gradient kernels.
#[test]
fn batch_norm_encoder_weight_gradients_match_finite_differences() {
    use autoneural_model::vision::NormKind;
    let device = Device::flex().autodiff();
    device.seed(3);
    let Some(EncoderConfig::MobileNetV5(mut arch)) = EncoderConfig::preset("mobilenetv5_tiny") else { unreachable!() };
    arch.norm = NormKind::Batch;
    arch.layer_scale_init_value = Some(1.0);
    let enc = EncoderConfig::MobileNetV5(arch).init(&device).unwrap();
    let x = Tensor::<4>::random([4, 3, 64, 64], Distribution::Uniform(0.0, 1.0), &device);
    let w = Tensor::<3>::random(enc.tokens(x.clone()).dims(), Distribution::Normal(0.0, 1.0), &device);
    let objective = |m: &_| -> f64 {
        let m: &autoneural_model::vision::VisionEncoder = m;
        f64::from((m.tokens(x.clone()) * w.clone()).sum().into_scalar::<f32>())
    };
    let grads = (enc.tokens(x.clone()) * w.clone()).sum().backward();
    let mut collect = Grads { grads: &grads, out: Vec::new() };
    let enc = enc.map(&mut collect);
    let keys: Vec<String> = snapshot(&enc).into_iter().map(|(k, _)| k).collect();
    // f32 rounding of the objective sets a floor on what differences can resolve; it scales
    // with the largest gradient of the model.
    let largest = collect.out.iter().flatten().fold(0f32, |m, g| m.max(g.abs()));
    let mut checked = 0;
    for (p, g) in collect.out.iter().enumerate() {
        if g.is_empty() {
            continue; // running statistics
        }
        // The largest gradient of the tensor, where f32 differences are well above noise.
        let i = (0..g.len()).max_by(|&a, &b| g[a].abs().total_cmp(&g[b].abs())).unwrap();
        let eps = 1e-3f32;
        let at = |e: f32| objective(&enc.clone().map(&mut Nudge { target: p, index: i, eps: e, seen: 0 }));
        let fd = (at(eps) - at(-eps)) / (2.0 * f64::from(eps));
        let ad = f64::from(g[i]);
        assert!(
            (fd - ad).abs() <= 0.05 * fd.abs().max(ad.abs()) + 1e-3 * f64::from(largest),
            "{}[{i}]: autodiff {ad}, finite differences {fd}",
            keys.get(p).map_or("?", |k| k.as_str())
        );
        checked += 1;
    }
    assert!(checked > 20, "only {checked} parameters checked");
}
