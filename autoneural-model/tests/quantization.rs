//! Post-training weight quantization of a whole VLM by policy: what is quantized, that the
//! error falls with the bit-width, and that the model still computes nearly the same.

mod common;

use autoneural_model::checkpoint::apply::{Identity, collect_tensors};
use autoneural_model::images::Preprocess;
use autoneural_model::quant::activations::{observe, quantize_with};
use autoneural_model::quant::apply::{activation_encodings, quantize_weights};
use autoneural_model::quant::kv::cache_entries;
use autoneural_model::quant::policy::{Group, PrecisionPolicy};
use autoneural_model::quant::saved::QuantizationFile;
use autoneural_model::quant::{Encoding, Granularity, sqnr_db};
use autoneural_model::text::{LayerKind, Lfm2Config, Logits};
use autoneural_model::vision::EncoderConfig;
use autoneural_model::vlm::{VisionLanguageModel, VlmConfig};
use burn::tensor::{Device, Tensor, TensorData};
use common::{ids, rel_err, values};

fn tiny_vlm(device: &Device) -> VisionLanguageModel {
    let encoder = EncoderConfig::preset("mobilenetv5_tiny").unwrap();
    let text = Lfm2Config::preset("lfm2-nano").unwrap();
    let config = VlmConfig::autoneural(encoder, text, Preprocess::Fixed { size: 64, mean: [0.0; 3], std: [1.0; 3] });
    // One seed, one generator for the process: build and draw every weight under a lock so
    // that the two tests get the same model.
    static SEEDED: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = SEEDED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    device.seed(11);
    let model = config.init(device).unwrap();
    collect_tensors(&model, &Identity); // parameters draw their values on first use
    model
}

#[test]
fn fp32_changes_nothing_and_autoneural_follows_its_groups() {
    let device = Device::flex();
    let model = tiny_vlm(&device);
    let before = collect_tensors(&model, &Identity);
    let (same, reports) = quantize_weights(model.clone(), &PrecisionPolicy::preset("fp32").unwrap()).unwrap();
    assert!(reports.is_empty());
    assert_eq!(collect_tensors(&same, &Identity), before);

    let (_, reports) = quantize_weights(model, &PrecisionPolicy::preset("autoneural").unwrap()).unwrap();
    let of = |g: Group| reports.iter().filter(move |r| r.group == g);
    assert!(of(Group::Vision).count() > 10 && of(Group::Vision).all(|r| r.bits == 8));
    assert!(of(Group::Connector).count() == 2 && of(Group::Connector).all(|r| r.bits == 8));
    assert!(of(Group::Language).all(|r| r.bits == 4));
    let lpbq = of(Group::Language).filter(|r| matches!(r.granularity, Granularity::Lpbq { .. })).count();
    let fallback = of(Group::Language).filter(|r| r.granularity == Granularity::PerChannel).count();
    assert!(lpbq > 0 && lpbq + fallback == of(Group::Language).count());
    // Depthwise conv kernels [hidden, 1, 3] have no block of 64: per channel.
    assert!(of(Group::Language).filter(|r| r.shape.len() == 3).all(|r| r.granularity == Granularity::PerChannel));
    let head: Vec<_> = of(Group::LmHead).collect();
    assert_eq!(head.len(), 1);
    assert_eq!(head[0].key, "language.model.embed_tokens.weight");
    // Norms, biases and layer scales stay float.
    assert!(reports.iter().all(|r| r.shape.len() >= 2));
}

#[test]
fn error_falls_with_bits_and_the_model_still_agrees() {
    let device = Device::flex();
    let model = tiny_vlm(&device);
    let waves: Vec<f32> = (0..2 * 3 * 64 * 64).map(|i| 0.5 + 0.5 * (i as f32 * 0.013).sin()).collect();
    let pixels = Tensor::<4>::from_data(TensorData::new(waves, [2, 3, 64, 64]), &device);
    let tokens = ids(&[1, 5, 9, 42, 7, 3], &device);
    let float_features = values(model.image_features(pixels.clone()));
    let float_logits = values(model.language.forward(tokens.clone(), None, Logits::All));
    let mut last = (0.0, f64::NEG_INFINITY, f64::NEG_INFINITY);
    for preset in ["w4a16", "w8a16"] {
        let (q, reports) = quantize_weights(model.clone(), &PrecisionPolicy::preset(preset).unwrap()).unwrap();
        let mean = reports.iter().map(|r| r.sqnr_db).sum::<f64>() / reports.len() as f64;
        let features = sqnr_db(&float_features, &values(q.image_features(pixels.clone())));
        let logits = sqnr_db(&float_logits, &values(q.language.forward(tokens.clone(), None, Logits::All)));
        eprintln!("{preset}: weights {mean:.1} dB, image features {features:.1} dB, logits {logits:.1} dB");
        assert!(mean > last.0 + 15.0 && features > last.1 + 10.0 && logits > last.2 + 10.0, "{preset}");
        last = (mean, features, logits);
    }
    // 8-bit per-channel weights: ~6 dB per bit, less the crest of each channel.
    assert!(last.0 > 35.0 && last.1 > 20.0 && last.2 > 20.0, "{last:?}");
}

#[test]
fn activations_are_calibrated_then_quantized_at_every_weight_input() {
    let device = Device::flex();
    let model = tiny_vlm(&device);
    let waves: Vec<f32> = (0..3 * 64 * 64).map(|i| 0.5 + 0.5 * (i as f32 * 0.007).cos()).collect();
    let pixels = Tensor::<4>::from_data(TensorData::new(waves, [1, 3, 64, 64]), &device);
    let float = values(model.image_features(pixels.clone()));
    let ((), ranges) = observe(|| {
        model.image_features(pixels.clone());
    });
    // Every convolution of the encoder and both connector layers saw an input.
    let convs = collect_tensors(&model.vision_tower, &Identity).iter().filter(|(_, s, _)| s.len() == 4).count();
    assert_eq!(ranges.len(), convs + 2);
    let mut sqnr = Vec::new();
    for bits in [8, 16] {
        let text =
            format!("[vision]\nactivations = {{ bits = {bits} }}\n[connector]\nactivations = {{ bits = {bits} }}\n");
        let policy = PrecisionPolicy::from_toml(&text, "a").unwrap();
        let encodings = activation_encodings(&model, &policy, &ranges).unwrap();
        assert_eq!(encodings.len(), ranges.len());
        let q = quantize_with(encodings, || values(model.image_features(pixels.clone())));
        sqnr.push(sqnr_db(&float, &q));
    }
    // Activations only (float weights): 8 more bits buy tens of dB.
    assert!(sqnr[0] > 10.0 && sqnr[1] > sqnr[0] + 30.0, "{sqnr:?}");
}

/// The KV cache at the policy's `kv_cache_bits`: calibration records every attention
/// layer's keys and values as they enter the cache; quantized, cached decoding (prefill,
/// then one token at a time) equals the uncached forward, since the cache holds the values
/// the full pass quantizes; 8-bit caches move the logits more than 16-bit ones; and
/// `quantization.json` names the caches.
#[test]
fn kv_cache_is_calibrated_and_quantized_consistently_with_cached_decoding() {
    let device = Device::flex();
    let model = tiny_vlm(&device);
    let lm = &model.language;
    let seq = [1u32, 5, 9, 42, 7, 3, 11, 2];
    let ((), ranges) = observe(|| {
        lm.forward(ids(&seq, &device), None, Logits::All);
    });
    let caches = cache_entries(&model);
    let attention = lm.config.layer_types.iter().filter(|k| **k == LayerKind::Attention).count();
    assert!(attention > 0 && caches.len() == 2 * attention, "{caches:?}");
    assert!(caches.iter().all(|(name, id)| name.ends_with("_cache") && ranges.contains_key(id)));
    let float = values(lm.forward(ids(&seq, &device), None, Logits::All));
    let mut err = Vec::new();
    for bits in [16, 8] {
        let policy = PrecisionPolicy::from_toml(&format!("[kv_cache]\nbits = {bits}\n"), "kv").unwrap();
        let encodings = activation_encodings(&model, &policy, &ranges).unwrap();
        assert_eq!(encodings.len(), caches.len(), "only the caches: this policy keeps op inputs float");
        let (full, cached) = quantize_with(encodings, || {
            let full = values(lm.forward(ids(&seq, &device), None, Logits::All));
            let mut state = lm.new_state(1, 4, &device);
            let mut cached = values(lm.forward(ids(&seq[..3], &device), Some(&mut state), Logits::All));
            for &t in &seq[3..] {
                cached.extend(values(lm.forward(ids(&[t], &device), Some(&mut state), Logits::All)));
            }
            (full, cached)
        });
        let e = rel_err(&cached, &full);
        assert!(e < 1e-5, "{bits}-bit cache: cached against uncached {e:e}");
        err.push(rel_err(&full, &float));
    }
    assert!(err[0] > 0.0 && err[1] > 10.0 * err[0], "logit error at 16 and 8 bits: {err:?}");
    let mut file = QuantizationFile::new(&PrecisionPolicy::preset("autoneural").unwrap());
    let (name, id) = &caches[0];
    file.activations.insert(name.clone(), Encoding::activation(-1.0, 1.0, 8).unwrap());
    assert!(file.activation_encodings(&model).unwrap().contains_key(id));
}

/// Decoding on packed int8/int4 weights (the low-bit CPU path) computes the fake-quantized
/// model: the same logits as the model whose f32 weights are their QDQ values, to the int16
/// rounding of the activations the kernels take (stated tolerance: 1e-3 relative).
/// The small language models the policy tests run on: LFM2's conv + attention, and LFM3's
/// conv + sliding (over 3 positions, so the prompts cross it) + full attention with sandwich
/// norms and attention gates.
fn nano_models() -> [(&'static str, Lfm2Config); 2] {
    let mut lfm3 = Lfm2Config::preset("lfm3-nano").unwrap();
    lfm3.lfm3.as_mut().unwrap().sliding_window = 3;
    [("lfm2-nano", Lfm2Config::preset("lfm2-nano").unwrap()), ("lfm3-nano", lfm3)]
}

#[test]
fn packed_low_bit_decoding_matches_the_fake_quantized_model() {
    for (label, config) in nano_models() {
        packed_decoding_matches(label, &config);
    }
}

fn packed_decoding_matches(label: &str, config: &Lfm2Config) {
    use autoneural_model::quant::packed::{quantize_and_pack, with_packed};
    use autoneural_model::text::Lfm2ForCausalLM;
    use burn::module::Module;
    use std::sync::Arc;

    let device = Device::flex();
    device.seed(5);
    let model = config.init(&device).materialize();
    let seq = [3u32, 17, 400, 9, 250, 77, 1];
    // a prompt of three positions (within the kernels' eight rows), then one at a time
    let logits = |m: &Lfm2ForCausalLM| {
        let mut state = m.new_state(1, 16, &device);
        let mut out = values(m.forward(ids(&seq[..3], &device), Some(&mut state), Logits::All));
        for &t in &seq[3..] {
            out.extend(values(m.forward(ids(&[t], &device), Some(&mut state), Logits::Last)));
        }
        out
    };
    for name in ["w8a16", "w4a16", "autoneural"] {
        let policy = PrecisionPolicy::preset(name).unwrap();
        let (quantized, packed) = quantize_and_pack(model.clone(), &policy).unwrap();
        // every projection (LFM3's attention gates too) and the tied head; the short
        // convolutions' depthwise kernels stay on the float path
        let layers = config.num_layers();
        assert!(packed.len() >= layers * 3 + 1, "{label} {name}: {} packed", packed.len());
        if config.lfm3.is_some() {
            // MLPs, q/k/v/o and the gate, conv in/out projections, the tied head
            let attention = config.attention_layers().len();
            let want = layers * 3 + attention * 5 + (layers - attention) * 2 + 1;
            assert_eq!(packed.len(), want, "{label} {name}");
        }
        assert!(packed.unpacked.iter().all(|k| k.ends_with("conv.conv.weight")), "{name}: {:?}", packed.unpacked);
        let ratio = packed.packed_bytes as f64 / packed.float_bytes as f64;
        let want = logits(&quantized);
        let got = with_packed(Arc::new(packed), || logits(&quantized));
        let err = common::rel_err(&got, &want);
        assert!(err < 1e-3, "{label} {name}: packed logits differ from the fake-quantized model's by {err:e}");
        // int8 reads about a quarter of f32's bytes, int4 about an eighth (plus scales and
        // padding); autoneural keeps the head at 8 bits
        let limit = if name == "w4a16" { 0.16 } else { 0.27 };
        assert!(ratio < limit, "{label} {name}: packed/f32 bytes {ratio}");
        println!("{label} {name}: relative error {err:e}, packed/f32 bytes {ratio:.3}");
    }
}

/// Under a QAT context the forward pass is the fake-quantized model: once a step's ranges
/// are committed, the logits equal those of the PTQ-style model (QDQ weights, op inputs
/// fake-quantized with the same encodings), and gradients reach every quantized weight
/// through the straight-through estimator.
#[test]
fn qat_forward_is_the_fake_quantized_model_and_gradients_reach_the_weights() {
    for (_, config) in nano_models() {
        qat_is_the_fake_quantized_model(&config);
    }
}

fn qat_is_the_fake_quantized_model(config: &Lfm2Config) {
    use autoneural_model::checkpoint::apply::param_keys;
    use autoneural_model::quant::activations::with_qat;
    use autoneural_model::quant::qat::Qat;

    use burn::module::Module;
    use std::sync::Arc;

    let device = Device::flex().autodiff();
    device.seed(9);
    let model = config.init(&device).materialize();
    let policy = PrecisionPolicy::preset("w4a16").unwrap();
    let qat = Arc::new(Qat::new(&model, policy.clone(), 0.9));
    let (weights, inputs) = qat.counts();
    assert!(weights > 10 && inputs > 10, "{weights} weights, {inputs} inputs");
    let seq = [5u32, 77, 300, 2, 41];

    // A training step: ranges calibrate on this batch; gradients flow to the float weights.
    let logits = with_qat(Some(qat.clone()), || model.forward(ids(&seq, &device), None, Logits::All));
    let grads = logits.sum().backward();
    let mut reached = 0;
    for (key, _) in param_keys(&model, &Identity) {
        if key.ends_with("proj.weight") || key.contains("feed_forward.w") {
            reached += 1;
        }
    }
    let grads = burn::optim::GradientsParams::from_grads(grads, &model);
    assert!(reached > 10 && grads.len() >= reached, "{} gradients for {reached} projections", grads.len());
    qat.commit_step();

    // Validation: QAT's forward equals the quantized model's with the same encodings.
    let inference = model.valid();
    let got = with_qat(Some(qat.clone()), || values(inference.forward(ids(&seq, &Device::flex()), None, Logits::All)));
    let (quantized, _) = quantize_weights(inference.clone(), &policy).unwrap();
    let encodings = qat.activation_encodings().unwrap();
    let want = quantize_with(encodings, || values(quantized.forward(ids(&seq, &Device::flex()), None, Logits::All)));
    let err = common::rel_err(&got, &want);
    assert!(err == 0.0, "QAT's logits differ from the quantized model's by {err:e}");
    let float = values(inference.forward(ids(&seq, &Device::flex()), None, Logits::All));
    assert!(common::rel_err(&got, &float) > 1e-4, "W4 must change the logits");
}
