//! `autoneural quantize`: post-training quantization of a checkpoint by policy. The
//! calibration conversations run through the whole model (images, connector, language
//! model) while every weight op's input range is recorded; then the weights are replaced by
//! their QDQ values and the directory is written with `quantization.json` (every weight's
//! and every op input's encoding), which `generate`, `eval` and the exporter read.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use autoneural_data::OnBadRecord;
use autoneural_data::SourceSpec;
use autoneural_data::records::Record;
use autoneural_io::output::{Output, Spec};
use autoneural_model::checkpoint::{load_vlm, save_vlm};
use autoneural_model::quant::activations::{Ranges, observe};
use autoneural_model::quant::apply::{WeightReport, activation_encodings, quantize_weights};
use autoneural_model::quant::kv::activation_keys;
use autoneural_model::quant::saved::QuantizationFile;
use autoneural_model::quant::{Encoding, PrecisionPolicy};
use autoneural_model::tokenizer::TextTokenizer;
use autoneural_model::vlm::VisionLanguageModel;
use autoneural_train::train::Batcher;
use autoneural_train::train::copy_tokenizer;
use autoneural_train::train::loss::forward_loss;
use burn::module::ParamId;
use burn::tensor::Device;

/// What a quantization run did.
pub struct PtqOutcome {
    pub weights: Vec<WeightReport>,
    pub activations: usize,
    pub calibration_records: usize,
}

/// The first `samples` conversations of each source of `calib`, each with where it came
/// from (`file, line N`; `row N` in Parquet, `sample N` in WebDataset).
pub fn calibration_records(calib: &[SourceSpec], samples: usize) -> Result<Vec<(String, Record)>> {
    let mut records = Vec::new();
    for source in calib {
        let before = records.len();
        let name = source.files.first().map(|f| f.display().to_string()).unwrap_or_default();
        let mut stream = SourceSpec { shuffle: 0, ..source.clone() }.open()?;
        while records.len() - before < samples {
            let Some(r) = stream.next_record() else { break };
            let r = r?;
            records.push((format!("{name}, {}", r.place()), r));
        }
        if records.len() == before {
            bail!("{name}: no calibration conversations");
        }
    }
    Ok(records)
}

/// Records the input range of every weight op over `records`, run through `model` (its
/// image, connector and language model) one at a time.
fn calibrate(model: &VisionLanguageModel, batcher: &Batcher, records: &[(String, Record)]) -> Result<Ranges> {
    let (result, ranges) = observe(|| -> Result<()> {
        for (origin, r) in records {
            let b = batcher.batch(&[("calibration".to_string(), r.clone())])?;
            forward_loss(model, &b).with_context(|| origin.clone())?;
        }
        Ok(())
    });
    result?;
    Ok(ranges)
}

/// Post-training quantization in memory: `model` calibrated on `records`, then its weights
/// replaced by their QDQ values. Returns the quantized model and its `quantization.json`.
pub fn post_training_quantize(
    model: VisionLanguageModel,
    batcher: &Batcher,
    records: &[(String, Record)],
    policy: &PrecisionPolicy,
) -> Result<(VisionLanguageModel, QuantizationFile, Vec<WeightReport>)> {
    let ranges = calibrate(&model, batcher, records)?;
    let activations = activation_encodings(&model, policy, &ranges)?;
    let (quantized, weights) = quantize_weights(model, policy)?;
    let file = quantization_file(&quantized, policy, &weights, &activations);
    Ok((quantized, file, weights))
}

/// The `quantization.json` of a model quantized by `policy`: its weights' encodings and its
/// op inputs' (by the ids of `model`).
pub fn quantization_file(
    model: &VisionLanguageModel,
    policy: &PrecisionPolicy,
    weights: &[WeightReport],
    activations: &HashMap<ParamId, Encoding>,
) -> QuantizationFile {
    let mut file = QuantizationFile::new(policy);
    for w in weights {
        file.weights.insert(w.key.clone(), w.encoding.clone());
    }
    let keys: HashMap<ParamId, String> = activation_keys(model).into_iter().map(|(k, id)| (id, k)).collect();
    for (id, enc) in activations {
        file.activations.insert(keys[id].clone(), enc.clone());
    }
    file
}

/// A batcher for `model` with the tokenizer of `model_dir`.
pub fn batcher_for(model: &VisionLanguageModel, model_dir: &Path) -> Result<Batcher> {
    Ok(Batcher {
        tokenizer: TextTokenizer::from_dir(model_dir, &model.config.text.eos_token_ids)?,
        image_tokens: model.image_tokens(),
        tokens_per_image: model.config.image_token_count(),
        preprocess: model.config.preprocess.clone(),
        pad_id: model.language.config.pad_token_id.unwrap_or(0),
        device: model.language.device(),
        max_seq_len: model.language.config.max_position_embeddings,
    })
}

/// What a quantization's output is made from, as its directory's marker records it.
fn ownership_inputs(
    model_dir: &Path,
    policy: &PrecisionPolicy,
    calib: &[PathBuf],
    samples: usize,
) -> serde_json::Map<String, serde_json::Value> {
    let policy = serde_json::to_value(policy).unwrap_or_default();
    let v = serde_json::json!({
        "model": autoneural_io::output::canonical(model_dir),
        "policy": policy,
        "calib": calib.iter().map(|p| autoneural_io::output::canonical(p)).collect::<Vec<_>>(),
        "samples": samples,
    });
    v.as_object().cloned().unwrap_or_default()
}

/// Quantizes the checkpoint in `model_dir` by `policy` into `out`, which this command
/// owns (`autoneural_io::output`): a directory that is not an earlier quantization of the
/// same inputs is refused unless `force`, and only the files a quantization writes are
/// replaced there.
pub fn quantize_checkpoint(
    model_dir: &Path,
    policy: &PrecisionPolicy,
    calib: &[PathBuf],
    samples: usize,
    out: &Path,
    force: bool,
    device: &Device,
) -> Result<PtqOutcome> {
    let same = match (out.canonicalize(), model_dir.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        bail!("--out {} is the input checkpoint; choose a new directory", out.display());
    }
    let spec = Spec {
        command: "quantize",
        inputs: ownership_inputs(model_dir, policy, calib, samples),
        force,
        way_out: "choose another --out, or pass --force to write there anyway (files of the same names are \
                  replaced, the others kept)",
        legacy: None,
    };
    let mut owned = Output::claim(out, spec)?;
    let staging = owned.staging()?;
    let model = load_vlm(model_dir, device).with_context(|| format!("loading {}", model_dir.display()))?;
    let calib = calib.iter().map(|p| SourceSpec::file(p, OnBadRecord::Fail)).collect::<Result<Vec<_>, _>>()?;
    let records = calibration_records(&calib, samples)?;
    let batcher = batcher_for(&model, model_dir)?;
    let (quantized, file, weights) = post_training_quantize(model, &batcher, &records, policy)?;
    save_vlm(&quantized, &staging)?;
    copy_tokenizer(model_dir, &staging)?;
    file.write(&staging)?;
    owned.commit()?;
    Ok(PtqOutcome { weights, activations: file.activations.len(), calibration_records: records.len() })
}
