//! The run's one-page markdown report: model, stages, accuracy against the baseline.

use std::fmt::Write;
use std::path::Path;

use crate::experiment::Experiment;
use autoneural_model::vlm::VisionLanguageModel;
use autoneural_train::train::StageReport;
use burn::module::Module;

use autoneural_eval::evaluate::EvalReport;
use autoneural_quant::compare::QuantComparison;

pub fn render(
    exp: &Experiment,
    model: &VisionLanguageModel,
    stages: &[StageReport],
    eval: Option<&EvalReport>,
    quantization: Option<&QuantComparison>,
    final_dir: &Path,
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Run report: {}\n", exp.name);
    let c = &model.config;
    let size = c.encoder.image_size();
    let _ = writeln!(
        s,
        "Model: vision {} ({} parameters), connector {} parameters, language {} layers ({} attention{}) of width {} \
         ({} parameters); {size}x{size} images give {} tokens each. Device `{}`.\n",
        exp.model.vision.preset,
        model.vision_tower.num_params(),
        model.multi_modal_projector.num_params(),
        c.text.num_layers(),
        c.text.attention_layers().len(),
        match c.text.count(autoneural_model::text::LayerKind::SlidingAttention) {
            0 => String::new(),
            n => format!(", {n} of them sliding over {} positions", c.text.sliding_window().unwrap_or(0)),
        },
        c.text.hidden_size,
        model.language.num_params(),
        c.tokens_per_image(size, size),
        exp.device,
    );
    s.push_str("## Stages\n\n| stage | steps | batch | trained params | frozen params | final train loss | val loss | val loss, images rotated | val token acc | samples/s | time |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in stages {
        let (vl, vr, va) = r.val.as_ref().map_or(("-".into(), "-".into(), "-".into()), |v| {
            let rotated = v.loss_images_rotated.map_or("-".into(), |x| format!("{x:.4}"));
            (format!("{:.4}", v.loss), rotated, format!("{:.1}%", 100.0 * v.token_accuracy))
        });
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {vl} | {vr} | {va} | {:.1} | {:.0} s |",
            r.name,
            r.steps,
            r.effective_batch,
            r.trainable_params,
            r.frozen_params,
            train_loss(r),
            r.samples_per_s,
            r.seconds
        );
    }
    let skipped: Vec<&StageReport> = stages.iter().filter(|r| r.skipped.count > 0).collect();
    if !skipped.is_empty() {
        let _ = writeln!(
            s,
            "\n## Skipped records\n\n`data.on_bad_record = \"skip\"` passed over records that could not be used; the \
             stages trained on the rest.\n"
        );
        for r in skipped {
            let _ = writeln!(s, "- stage `{}`: {} record(s), first:", r.name, r.skipped.count);
            for reason in &r.skipped.first {
                let _ = writeln!(s, "  - {reason}");
            }
        }
    }
    match eval {
        Some(e) => {
            let _ = writeln!(s, "\n## Held-out accuracy ({} split)\n\n{}", exp.eval.split, e.markdown());
            let below: Vec<&str> =
                e.tasks.iter().filter(|(_, t)| t.exact_match <= t.majority_baseline).map(|(k, _)| k.as_str()).collect();
            if below.is_empty() {
                s.push_str("Every task family is above its majority-answer baseline.\n");
            } else {
                let _ = writeln!(s, "Not above the majority-answer baseline: {}.", below.join(", "));
            }
            let blind: Vec<&str> =
                e.tasks.iter().filter(|(_, t)| t.exact_match <= t.blind_baseline).map(|(k, _)| k.as_str()).collect();
            if !blind.is_empty() {
                let _ = writeln!(
                    s,
                    "Not above the blind baseline (each question's most frequent answer, no image): {}.",
                    blind.join(", ")
                );
            }
            s.push_str("\n### Examples\n\n| task | question | reference | answer |\n|---|---|---|---|\n");
            for x in &e.examples {
                let _ =
                    writeln!(s, "| {} | {} | {} | {} |", x.task, x.question, x.gold, x.predicted.replace('|', "\\|"));
            }
        }
        None => s.push_str("\nNo held-out split was found; nothing was evaluated.\n"),
    }
    if let Some(q) = quantization {
        let _ = writeln!(
            s,
            "\n## Quantization: PTQ against QAT at {}\n\nExact match on the {} split. PTQ quantizes the model \
             before the QAT stage (ranges calibrated on {} training conversations per family); QAT is the final \
             model, quantized with the ranges it trained with. Both run quantized weights and activations \
             (`final/quantization.json`). The last two rows are teacher-forced on the QAT stage's validation \
             batches: loss and next-token accuracy over every answer token, a finer measure than exact match. \
             The float model before QAT is in `before_qat/`.\n\n{}",
            q.policy,
            exp.eval.split,
            autoneural_quant::compare::CALIBRATION_SAMPLES,
            q.markdown()
        );
    }
    let _ = writeln!(
        s,
        "\n## Use it\n\n```\ncargo run --release -- generate --model {} --image IMAGE.png --prompt \"What word is written?\"\n```",
        final_dir.display()
    );
    s
}

/// A stage's last training loss: the language model's, the alignment's, or both.
fn train_loss(r: &StageReport) -> String {
    match (r.final_train_loss, r.final_align_loss) {
        (Some(l), None) => format!("{l:.4}"),
        (Some(l), Some(a)) => format!("{l:.4} (align {a:.4})"),
        (None, Some(a)) => format!("align {a:.4}"),
        (None, None) => "-".into(),
    }
}
