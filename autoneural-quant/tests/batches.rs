//! Batches for a processor that keeps each image's size (LFM3-VL's): every image gets the
//! token count of its own encoder input, and images of different sizes are refused in one
//! batch (the encoder takes them as one stack) with both records named, never a panic.

use std::path::Path;

use autoneural_data::{OnBadRecord, SourceSpec};
use autoneural_model::checkpoint::load_vlm;
use autoneural_quant::ptq::{batcher_for, calibration_records};
use burn::tensor::Device;

#[test]
fn each_image_counts_its_own_tokens_and_sizes_do_not_mix() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/vision/lfm3-vl-tiny");
    let model = load_vlm(&dir, &Device::flex()).unwrap();
    let batcher = batcher_for(&model, &dir).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let line = |image: &str| {
        format!(
            r#"{{"messages": [{{"role": "user", "content": "<image>What is it?"}}, {{"role": "assistant", "content": "a picture"}}], "images": ["{}"]}}"#,
            dir.join(image).display()
        )
    };
    let file = tmp.path().join("calib.jsonl");
    std::fs::write(&file, format!("{}\n{}\n", line("image.png"), line("image_tall.png"))).unwrap();
    let records = calibration_records(&[SourceSpec::file(&file, OnBadRecord::Fail).unwrap()], 2).unwrap();
    let image_tokens = |b: &autoneural_train::train::loss::DeviceBatch| {
        b.batch.inputs.iter().filter(|&&id| id == model.config.image_token_id).count()
    };
    // The processor's grids: 10 x 14 and 22 x 6 patches, merged 2x2.
    for (record, tokens) in records.iter().zip([35, 33]) {
        let b = batcher.batch(std::slice::from_ref(record)).unwrap();
        assert_eq!(image_tokens(&b), tokens);
    }
    let err = format!("{:#}", batcher.batch(&records).err().expect("refused"));
    assert!(err.contains("56x40") && err.contains("24x88") && err.contains("in one batch"), "{err}");
    assert!(err.contains("line 1") && err.contains("line 2"), "{err}");
}
