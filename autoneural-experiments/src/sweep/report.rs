//! The experiment report, rebuilt from the run directories alone (`<run>/result.json`):
//! `results.csv`, `results.jsonl`, `report.md` and SVG plots under `plots/`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use indicatif::ProgressBar;

use super::results::{RunResult, write_tables};
use autoneural_eval::plot::{LineChart, Series};

fn pct(x: Option<f64>) -> String {
    x.map(|v| format!("{:.1}%", 100.0 * v)).unwrap_or_else(|| "–".into())
}
fn f3(x: Option<f64>) -> String {
    x.map(|v| format!("{v:.4}")).unwrap_or_else(|| "–".into())
}
fn mib(bytes: usize) -> f64 {
    bytes as f64 / 1048576.0
}

/// Reads every finished run under `dir` and writes the tables, plots and `report.md`;
/// returns the report's path.
pub fn write(dir: &Path) -> Result<PathBuf> {
    let runs = super::finished_runs(dir)?;
    if runs.is_empty() {
        bail!("{}: no finished runs (no <run>/result.json)", dir.display());
    }
    let bar = if runs.len() > 8 { ProgressBar::new(runs.len() as u64) } else { ProgressBar::hidden() };
    let mut results = Vec::new();
    for r in &runs {
        results.push(RunResult::read(r)?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    write_tables(&results, dir)?;
    let plots = dir.join("plots");
    std::fs::create_dir_all(&plots)?;
    let mut md = String::new();
    let name = &results[0].experiment;
    let _ = writeln!(md, "# Experiment `{name}`: {} runs\n", results.len());
    let _ = writeln!(
        md,
        "Rebuilt from the run directories by `autoneural report {}`. Every row is one run \
         (`<run>/result.json`, its config in `<run>/config.toml`); the same figures are in \
         `results.csv` and `results.jsonl`. Speeds are measured on this machine (CPU); \
         **NPU figures are predicted by the roofline cost model**, not measured.\n",
        dir.display()
    );
    accuracy_section(&mut md, &results, &plots)?;
    decode_section(&mut md, &results, &plots)?;
    sqnr_section(&mut md, &results, &plots)?;
    latency_section(&mut md, &results, &plots)?;
    let path = dir.join("report.md");
    std::fs::write(&path, md)?;
    Ok(path)
}

/// Writes `plots/<file>.svg` and links it from the report; a chart that cannot be drawn
/// (no finite points) is noted instead of failing the report.
fn plot(md: &mut String, plots: &Path, file: &str, title: &str, x: &str, y: &str, series: Vec<Series>) {
    let chart = LineChart { title: title.into(), x_label: x.into(), y_label: y.into(), series };
    match chart.write_svg(&plots.join(format!("{file}.svg"))) {
        Ok(()) => {
            let _ = writeln!(md, "\n![{title}](plots/{file}.svg)\n");
        }
        Err(e) => {
            let _ = writeln!(md, "\n({title}: no plot, {e})\n");
        }
    }
}

/// Runs grouped by everything but the attention layout (encoder, precision, other axes), so
/// each line of a plot varies the attention ratio only.
fn group_key(r: &RunResult) -> String {
    let other: Vec<&str> = r.run_id.split(',').filter(|part| !part.starts_with("attention_layers=")).collect();
    if other.is_empty() || r.axes.is_empty() { r.model.encoder.clone() } else { other.join(",") }
}

fn accuracy_section(md: &mut String, results: &[RunResult], plots: &Path) -> Result<()> {
    let _ = writeln!(md, "## Accuracy\n");
    let _ = writeln!(
        md,
        "| run | encoder | layers (attention) | precision | val loss | val token acc | loss, images swapped | exact match | steps | train s |"
    );
    let _ = writeln!(md, "|---|---|---|---|---:|---:|---:|---:|---:|---:|");
    for r in results {
        let _ = writeln!(
            md,
            "| {} | {} | {} ({}) | {} | {} | {} | {} | {} | {} | {:.0} |",
            r.run_id,
            r.model.encoder,
            r.model.num_layers,
            r.model.attention_layers,
            r.precision.as_deref().unwrap_or("fp32"),
            f3(r.val_loss),
            pct(r.val_token_accuracy),
            f3(r.val_loss_images_rotated),
            pct(r.exact_match),
            r.steps,
            r.train_seconds
        );
    }
    let benches: std::collections::BTreeSet<&String> = results.iter().flat_map(|r| r.benchmarks.keys()).collect();
    if !benches.is_empty() {
        let names: Vec<&str> = benches.iter().map(|b| b.as_str()).collect();
        let _ =
            writeln!(md, "\nBenchmarks (`[eval] benchmarks`; each one's headline score, see docs/evaluation.md):\n");
        let _ = writeln!(md, "| run | {} |\n|---|{}", names.join(" | "), "---:|".repeat(names.len()));
        for r in results {
            let cells: Vec<String> = names
                .iter()
                .map(|b| r.benchmarks.get(*b).map(|v| format!("{v:.1}")).unwrap_or_else(|| "–".into()))
                .collect();
            let _ = writeln!(md, "| {} | {} |", r.run_id, cells.join(" | "));
        }
    }
    if results.iter().any(|r| r.qat_val_loss.is_some()) {
        let _ = writeln!(md, "\nQuantization-aware training (validation loss):\n");
        let _ = writeln!(md, "| run | precision | float | PTQ | QAT |\n|---|---|---:|---:|---:|");
        for r in results.iter().filter(|r| r.qat_val_loss.is_some()) {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} |",
                r.run_id,
                r.precision.as_deref().unwrap_or("?"),
                f3(r.float_val_loss),
                f3(r.ptq_val_loss),
                f3(r.qat_val_loss)
            );
        }
    }
    let mut groups: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for r in results {
        if let Some(a) = r.val_token_accuracy {
            groups.entry(group_key(r)).or_default().push((r.model.attention_ratio, 100.0 * a));
        }
    }
    if groups.values().any(|p| p.len() > 1) {
        let series = groups
            .into_iter()
            .map(|(k, mut p)| {
                p.sort_by(|a, b| a.0.total_cmp(&b.0));
                Series::line(k, p)
            })
            .collect();
        let (title, x, y) = (
            "Validation token accuracy against the attention ratio",
            "attention layers / all layers",
            "token accuracy (%)",
        );
        plot(md, plots, "accuracy_vs_attention_ratio", title, x, y, series);
    }
    md.push('\n');
    Ok(())
}

fn decode_section(md: &mut String, results: &[RunResult], plots: &Path) -> Result<()> {
    if results.iter().all(|r| r.decode.is_empty()) {
        return Ok(());
    }
    let contexts: Vec<usize> = results[0].decode.iter().map(|d| d.context).collect();
    let _ = writeln!(md, "## Decoding: speed and state memory against context (measured, this CPU)\n");
    let _ = writeln!(
        md,
        "Batch 1, f32, a synthetic past state of each length. State = KV cache of the attention \
         layers + the conv layers' windows; it grows with the context only in attention layers.\n"
    );
    let head: Vec<String> = contexts.iter().map(|c| format!("tok/s @{c}")).collect();
    let mem: Vec<String> = contexts.iter().map(|c| format!("state MiB @{c}")).collect();
    let _ = writeln!(md, "| run | attention layers | {} | {} |", head.join(" | "), mem.join(" | "));
    let _ = writeln!(md, "|---|---:|{}", "---:|".repeat(2 * contexts.len()));
    let mut sorted: Vec<&RunResult> = results.iter().collect();
    sorted.sort_by_key(|r| (group_key(r), r.model.attention_layers));
    for r in &sorted {
        let speeds: Vec<String> = r.decode.iter().map(|d| format!("{:.1}", d.tok_s)).collect();
        let states: Vec<String> = r.decode.iter().map(|d| format!("{:.3}", mib(d.state_bytes))).collect();
        let _ = writeln!(
            md,
            "| {} | {}/{} | {} | {} |",
            r.run_id,
            r.model.attention_layers,
            r.model.num_layers,
            speeds.join(" | "),
            states.join(" | ")
        );
    }
    let line = |r: &RunResult, f: &dyn Fn(&super::results::DecodePoint) -> f64| {
        Series::line(
            format!("{} ({} attn)", r.run_id, r.model.attention_layers),
            r.decode.iter().map(|d| (d.context as f64, f(d))).collect(),
        )
    };
    let speed = sorted.iter().map(|r| line(r, &|d| d.tok_s)).collect();
    plot(
        md,
        plots,
        "decode_speed_vs_context",
        "Decode speed against context (measured, CPU)",
        "context (tokens)",
        "tokens/s",
        speed,
    );
    let state = sorted.iter().map(|r| line(r, &|d| mib(d.state_bytes))).collect();
    let (title, x, y) = ("Decode state memory against context", "context (tokens)", "state (MiB, f32)");
    plot(md, plots, "state_memory_vs_context", title, x, y, state);
    Ok(())
}

fn sqnr_section(md: &mut String, results: &[RunResult], plots: &Path) -> Result<()> {
    if results.iter().all(|r| r.encoder_sqnr.is_empty()) {
        return Ok(());
    }
    let _ = writeln!(md, "## Encoder output SQNR against weight bits (measured)\n");
    let _ = writeln!(
        md,
        "Every weight per channel at the bit-width, activations in float, on test images; SQNR and \
         relative RMS error of the connector's output against the float model (paper at W8A16: ViT \
         28 dB / 3.98%, MobileNetV5 45 dB / 0.562%).\n"
    );
    let _ = writeln!(md, "| run | encoder | bits | SQNR (dB) | relative RMS |\n|---|---|---:|---:|---:|");
    for r in results {
        for s in &r.encoder_sqnr {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {:.1} | {:.3}% |",
                r.run_id,
                r.model.encoder,
                s.bits,
                s.sqnr_db,
                100.0 * s.relative_rms
            );
        }
    }
    let w8: Vec<&RunResult> = results.iter().filter(|r| r.encoder_w8a16.is_some()).collect();
    if !w8.is_empty() {
        let _ = writeln!(md, "\nAt W8A16 (16-bit op inputs too), the paper's measurement:\n");
        let _ = writeln!(md, "| run | encoder | SQNR (dB) | relative RMS |\n|---|---|---:|---:|");
        for r in &w8 {
            let s = r.encoder_w8a16.as_ref().expect("filtered");
            let _ = writeln!(
                md,
                "| {} | {} | {:.1} | {:.3}% |",
                r.run_id,
                r.model.encoder,
                s.sqnr_db,
                100.0 * s.relative_rms
            );
        }
        let rms = |enc: &str| {
            w8.iter()
                .filter(|r| r.model.encoder == enc)
                .filter_map(|r| r.encoder_w8a16.as_ref())
                .map(|s| s.relative_rms)
                .next()
        };
        if let (Some(vit), Some(mnv5)) = (rms("ViT"), rms("MobileNetV5")) {
            let _ = writeln!(
                md,
                "\nRelative RMS error, ViT / MobileNetV5: **{:.2}x** (paper: 3.98% / 0.562% = 7.1x).\n",
                vit / mnv5
            );
        }
    }
    let series = results
        .iter()
        .filter(|r| !r.encoder_sqnr.is_empty())
        .map(|r| {
            Series::line(
                format!("{} ({})", r.run_id, r.model.encoder),
                r.encoder_sqnr.iter().map(|s| (s.bits as f64, s.sqnr_db)).collect(),
            )
        })
        .chain([
            Series::markers("paper ViT (W8A16)", vec![(8.0, 28.0)]),
            Series::markers("paper MobileNetV5 (W8A16)", vec![(8.0, 45.0)]),
        ])
        .collect();
    let (title, x, y) = ("Encoder output SQNR against weight bits", "weight bits (per channel)", "SQNR (dB)");
    plot(md, plots, "sqnr_vs_bits", title, x, y, series);
    Ok(())
}

fn latency_section(md: &mut String, results: &[RunResult], plots: &Path) -> Result<()> {
    let with_npu: Vec<&RunResult> = results.iter().filter(|r| r.npu.is_some()).collect();
    if results.iter().all(|r| r.encoder_latency.is_empty()) && with_npu.is_empty() {
        return Ok(());
    }
    let _ = writeln!(md, "## Latency: encoder on this CPU (measured) and on the NPU (predicted)\n");
    if let Some(n) = with_npu.first().and_then(|r| r.npu.as_ref()) {
        let _ = writeln!(
            md,
            "NPU columns are **predicted by the roofline cost model with the `{}` profile** \
             (docs/npu_cost_model.md), at each run's deployed precision; prompt {} text tokens + the image's, decode at context {}.\n",
            n.profile, n.prompt_tokens, n.decode_context
        );
    }
    let _ = writeln!(
        md,
        "| run | encoder | CPU encoder ms (measured) | NPU encoder ms (predicted) | NPU TTFT ms (predicted) | NPU decode tok/s (predicted) | NPU max context (predicted) |"
    );
    let _ = writeln!(md, "|---|---|---|---|---:|---:|---:|");
    for r in results {
        let cpu: Vec<String> =
            r.encoder_latency.iter().map(|l| format!("{}px {:.1}", l.resolution, l.cpu_ms)).collect();
        let (enc, ttft, dec, ctx) = match &r.npu {
            Some(n) => (
                n.encoder_ms
                    .iter()
                    .map(|(res, ms)| match ms {
                        Some(ms) => format!("{res}px {ms:.1}"),
                        None => format!("{res}px does not fit"),
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                n.ttft_ms.map(|v| format!("{v:.1}")).unwrap_or_else(|| "–".into()),
                n.decode_tok_s.map(|v| format!("{v:.1}")).unwrap_or_else(|| "–".into()),
                n.max_context.to_string(),
            ),
            None => ("–".into(), "–".into(), "–".into(), "–".into()),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.run_id,
            r.model.encoder,
            cpu.join(", "),
            enc,
            ttft,
            dec,
            ctx
        );
    }
    if !with_npu.is_empty() {
        let series = with_npu
            .iter()
            .map(|r| {
                let n = r.npu.as_ref().expect("filtered");
                Series::line(
                    format!("{} ({})", r.run_id, r.model.encoder),
                    n.encoder_ms.iter().filter_map(|(res, ms)| ms.map(|ms| (*res as f64, ms))).collect(),
                )
            })
            .collect();
        let (title, x, y) = (
            "Encoder latency on the NPU (predicted by the cost model)",
            "input side (pixels)",
            "predicted latency (ms)",
        );
        plot(md, plots, "npu_predicted_encoder_latency", title, x, y, series);
    }
    Ok(())
}
