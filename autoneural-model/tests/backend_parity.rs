//! One model definition, every backend: the same checkpoint gives the same logits on flex
//! (CPU) and wgpu (GPU; Mesa's lavapipe on machines without one). Built with `--features wgpu`.
#![cfg(feature = "wgpu")]

mod common;

use autoneural_model::checkpoint::load_lfm2;
use autoneural_model::text::Logits;
use burn::tensor::{Device, DeviceKind};
use common::*;

#[test]
fn flex_and_wgpu_agree() {
    let cpu = Device::flex();
    let gpu = Device::wgpu(DeviceKind::DefaultDevice);
    for name in ["hybrid-hub-bf16", "attention-only-f16", "conv-only-hub-f32"] {
        let g = golden(name);
        let dir = fixtures().join(name);
        let a = load_lfm2(&dir, &cpu).unwrap();
        let b = load_lfm2(&dir, &gpu).unwrap();
        let la = values(a.forward(ids(&g.prompt_ids, &cpu), None, Logits::All));
        let lb = values(b.forward(ids(&g.prompt_ids, &gpu), None, Logits::All));
        let err = rel_err(&lb, &la);
        assert!(err < 1e-4, "{name}: flex vs wgpu relative error {err:e}");
        // and the cached path, one token at a time after a prefill
        let mut sa = a.new_state(1, 8, &cpu);
        let mut sb = b.new_state(1, 8, &gpu);
        let (head, tail) = g.prompt_ids.split_at(g.prompt_ids.len() / 2);
        let _ = a.forward(ids(head, &cpu), Some(&mut sa), Logits::Last);
        let _ = b.forward(ids(head, &gpu), Some(&mut sb), Logits::Last);
        for &t in tail {
            let x = values(a.forward(ids(&[t], &cpu), Some(&mut sa), Logits::Last));
            let y = values(b.forward(ids(&[t], &gpu), Some(&mut sb), Logits::Last));
            let err = rel_err(&y, &x);
            assert!(err < 1e-4, "{name}: cached step, relative error {err:e}");
        }
    }
}

#[test]
fn vlms_agree_on_flex_and_wgpu() {
    use autoneural_model::checkpoint::load_vlm;
    use autoneural_model::images::load_image;
    let cpu = Device::flex();
    let gpu = Device::wgpu(DeviceKind::DefaultDevice);
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/vision");
    for name in ["autoneural-tiny", "lfm2-vl-tiny"] {
        let dir = root.join(name);
        let image = load_image(&dir.join("image.png")).unwrap();
        let a = load_vlm(&dir, &cpu).unwrap();
        let b = load_vlm(&dir, &gpu).unwrap();
        let fa = values(a.image_features(a.config.preprocess.apply(&image, &cpu)));
        let fb = values(b.image_features(b.config.preprocess.apply(&image, &gpu)));
        let err = rel_err(&fb, &fa);
        assert!(err < 1e-4, "{name}: image features, flex vs wgpu relative error {err:e}");
    }
    // LFM2-VL's tiles: each on its own patch grid (position table resized per grid).
    let dir = root.join("lfm2-vl-tiles");
    let images: Vec<_> =
        ["large", "wide"].iter().map(|n| load_image(&dir.join(format!("images/{n}.png"))).unwrap()).collect();
    let (fa, la) = load_vlm(&dir, &cpu).unwrap().features_of(&images);
    let (fb, lb) = load_vlm(&dir, &gpu).unwrap().features_of(&images);
    assert_eq!(la, lb);
    let err = rel_err(&values(fb.unwrap()), &values(fa.unwrap()));
    assert!(err < 1e-4, "lfm2-vl-tiles: tiled image features, flex vs wgpu relative error {err:e}");
}
