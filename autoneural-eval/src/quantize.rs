//! `autoneural quantize`: post-training quantization of a checkpoint by policy. The
//! calibration conversations run through the whole model (images, connector, language
//! model) while every weight op's input range is recorded; then the weights are replaced by
//! their QDQ values and the directory is written with `quantization.json` (every weight's
//! and every op input's encoding), which `generate`, `eval` and the exporter read.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use autoneural_model::checkpoint::apply::{Identity, param_keys};
use autoneural_model::checkpoint::load_vlm;
use autoneural_model::quant::activations::observe;
use autoneural_model::quant::apply::{WeightReport, activation_encodings, quantize_weights};
use autoneural_model::quant::saved::QuantizationFile;
use autoneural_model::quant::{Encoding, PrecisionPolicy};
use autoneural_model::tokenizer::TextTokenizer;
use autoneural_model::vlm::VisionLanguageModel;
use autoneural_train::data::OnBadRecord;
use autoneural_train::data::records::JsonlRecords;
use autoneural_train::train::Batcher;
use autoneural_train::train::loss::forward_loss;
use autoneural_train::train::save_model_dir;
use burn::module::ParamId;
use burn::tensor::Device;

/// What a quantization run did.
pub struct PtqOutcome {
    pub weights: Vec<WeightReport>,
    pub activations: usize,
    pub calibration_records: usize,
}

/// Records the input range of every weight op over the first `samples` conversations of
/// each file of `calib`, run through `model` one at a time.
fn calibrate(
    model: &VisionLanguageModel,
    model_dir: &Path,
    calib: &[PathBuf],
    samples: usize,
) -> Result<(autoneural_model::quant::activations::Ranges, usize)> {
    let device = model.language.device();
    let size = model.config.encoder.image_size();
    let batcher = Batcher {
        tokenizer: TextTokenizer::from_dir(model_dir, &model.config.text.eos_token_ids)?,
        image_tokens: model.image_tokens(),
        tokens_per_image: model.config.tokens_per_image(size, size),
        preprocess: model.config.preprocess.clone(),
        pad_id: model.language.config.pad_token_id.unwrap_or(0),
        device,
    };
    let mut records = Vec::new();
    for file in calib {
        let before = records.len();
        for r in JsonlRecords::open(file, OnBadRecord::Fail)?.take(samples) {
            records.push((file, ("calibration".to_string(), r?)));
        }
        if records.len() == before {
            bail!("{}: no calibration conversations", file.display());
        }
    }
    let (result, ranges) = observe(|| -> Result<()> {
        for (file, r) in &records {
            let b = batcher.batch(std::slice::from_ref(r))?;
            forward_loss(model, &b).with_context(|| format!("{}, line {}", file.display(), r.1.line))?;
        }
        Ok(())
    });
    result?;
    Ok((ranges, records.len()))
}

/// Quantizes the checkpoint in `model_dir` by `policy` into `out`.
pub fn quantize_checkpoint(
    model_dir: &Path,
    policy: &PrecisionPolicy,
    calib: &[PathBuf],
    samples: usize,
    out: &Path,
    device: &Device,
) -> Result<PtqOutcome> {
    // The output directory is replaced as a whole: never the input, never a directory
    // that is not an earlier quantization's output.
    let same = match (out.canonicalize(), model_dir.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same || (out.exists() && !out.join(autoneural_model::quant::saved::FILE).is_file()) {
        bail!(
            "--out {} exists and is not an earlier `autoneural quantize` output; choose a new directory",
            out.display()
        );
    }
    let model = load_vlm(model_dir, device).with_context(|| format!("loading {}", model_dir.display()))?;
    let (ranges, calibration_records) = calibrate(&model, model_dir, calib, samples)?;
    let activations: HashMap<ParamId, Encoding> = activation_encodings(&model, policy, &ranges)?;
    let (quantized, weights) = quantize_weights(model, policy)?;
    save_model_dir(&quantized, model_dir, out)?;
    let mut file = QuantizationFile::new(policy);
    for w in &weights {
        file.weights.insert(w.key.clone(), w.encoding.clone());
    }
    let keys: HashMap<ParamId, String> = param_keys(&quantized, &Identity).into_iter().map(|(k, id)| (id, k)).collect();
    for (id, enc) in &activations {
        file.activations.insert(keys[id].clone(), enc.clone());
    }
    file.write(out)?;
    Ok(PtqOutcome { weights, activations: activations.len(), calibration_records })
}
