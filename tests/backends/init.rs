//! `seed` means one model on every backend: the experiment's initial weights are drawn on
//! the CPU and moved, since each backend has its own generator (the same seed draws other
//! values on wgpu than on flex). Built with `--features wgpu` (lavapipe without a GPU).

use std::path::Path;

use autoneural_model::checkpoint::apply::{Identity, collect_tensors};
use autoneural_model::tokenizer::TextTokenizer;
use autoneural_train::config::ModelConfig;
use autoneural_train::train::init::build_model;
use burn::tensor::{Device, DeviceKind};

#[test]
fn a_seed_draws_the_same_model_on_flex_and_wgpu() {
    let config: ModelConfig = toml::from_str(
        r#"
        image_size = 64
        [vision]
        preset = "mobilenetv5_tiny"
        msfa_output_resolution = 4
        [language]
        preset = "lfm2-nano"
        hidden_size = 64
        intermediate_size = 128
        num_layers = 3
        attention_layers = 1
        "#,
    )
    .unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vision/autoneural-tiny");
    let tokenizer = TextTokenizer::from_dir(&dir, &[]).unwrap();
    let weights = |device: &Device| {
        let model = build_model(&config, &tokenizer, 11, device).unwrap();
        collect_tensors(&model, &Identity)
    };
    let (cpu, gpu) = (weights(&Device::flex()), weights(&Device::wgpu(DeviceKind::DefaultDevice)));
    assert_eq!(cpu.len(), gpu.len());
    for ((key, _, a), (key_b, _, b)) in cpu.iter().zip(&gpu) {
        assert_eq!(key, key_b);
        assert!(a == b, "{key}: the same seed gave other initial values on wgpu");
    }
    // and on the autodiff devices training uses, where the moved parameters stay trainable
    // leaves (a gradient reaches them)
    let device = Device::wgpu(DeviceKind::DefaultDevice).autodiff();
    let model = build_model(&config, &tokenizer, 11, &device).unwrap();
    let ad = collect_tensors(&model, &Identity);
    assert!(cpu.iter().zip(&ad).all(|((_, _, a), (_, _, b))| a == b));
    let table = model.language.model.embed_tokens.weight.val();
    let grads = (table.clone() * table.clone()).sum().backward();
    assert!(table.grad(&grads).is_some(), "the moved embedding table is not a trainable leaf on wgpu");
}
