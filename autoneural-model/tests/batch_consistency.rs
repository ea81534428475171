//! A batch is the same as its rows run one at a time: for each encoder and for the language
//! model, on the inference path (flex fast kernels) and the training path (autodiff).

use autoneural_model::text::Lfm2Config;
use autoneural_model::vision::EncoderConfig;
use burn::tensor::{Device, Distribution, Tensor};

fn max_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    (a - b).abs().max().into_scalar::<f32>()
}

fn check_rows<const D: usize>(what: &str, batched: Tensor<D>, rows: Vec<Tensor<D>>) {
    let singles = Tensor::cat(rows, 0);
    let scale = singles.clone().abs().max().into_scalar::<f32>().max(1e-6);
    let d = max_diff(batched, singles);
    assert!(d / scale < 1e-4, "{what}: batched rows differ from single rows by {d} (scale {scale})");
}

#[test]
fn encoders_batch_rows_independently() {
    for device in [Device::flex(), Device::flex().autodiff()] {
        for (name, res) in [("mobilenetv5_tiny", 64), ("vit_tiny", 32)] {
            let enc = EncoderConfig::preset(name).unwrap().init(&device).unwrap();
            let x = Tensor::<4>::random([3, 3, res, res], Distribution::Uniform(0.0, 1.0), &device);
            let batched = enc.tokens(x.clone());
            let rows = (0..3).map(|i| enc.tokens(x.clone().slice([i..i + 1]))).collect();
            check_rows(name, batched, rows);
        }
    }
}

#[test]
fn language_model_batch_rows_independently() {
    for device in [Device::flex(), Device::flex().autodiff()] {
        let config = Lfm2Config::preset("lfm2-nano").unwrap();
        let lm = config.init(&device);
        let x = Tensor::<3>::random([3, 9, config.hidden_size], Distribution::Normal(0.0, 1.0), &device);
        let batched = lm.hidden_states(x.clone(), None);
        let rows = (0..3).map(|i| lm.hidden_states(x.clone().slice([i..i + 1]), None)).collect();
        check_rows("lfm2", batched, rows);
    }
}
