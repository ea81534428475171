//! The `autoneural` binary end to end: the README's first command, JSON output, bench, and
//! a clear error (never a panic) for a bad checkpoint directory.

use std::process::Command;

fn autoneural(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_autoneural")).args(args).env("XDG_RUNTIME_DIR", "/tmp").output().unwrap()
}

fn golden_ids() -> Vec<u64> {
    let text = std::fs::read_to_string("tests/fixtures/lfm2/hybrid-hub-bf16/golden.json").unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["greedy_new_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect()
}

fn generate_json(device: &str) -> serde_json::Value {
    let out = autoneural(&[
        "generate",
        "--model",
        "tests/fixtures/lfm2/hybrid-hub-bf16",
        "--prompt",
        "Which parking level is the car on?",
        "--max-new-tokens",
        "12",
        "--ignore-eos",
        "--format",
        "json",
        "--device",
        device,
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn generate_json_reproduces_transformers_greedy_ids() {
    let v = generate_json("flex");
    let ids: Vec<u64> = v["new_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
    assert_eq!(ids, golden_ids());
    for key in ["prompt_ids", "text", "ttft_ms", "prefill_tok_s", "decode_tok_s"] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
}

#[cfg(feature = "wgpu")]
#[test]
fn generate_on_wgpu_gives_the_same_tokens() {
    let ids: Vec<u64> =
        generate_json("wgpu")["new_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
    assert_eq!(ids, golden_ids());
}

#[test]
fn text_generation_streams_and_bench_reports() {
    let out =
        autoneural(&["generate", "--model", "tests/fixtures/lfm2/conv-only-hub-f32", "--prompt", "Hello", "--raw"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = autoneural(&[
        "bench",
        "lm",
        "--preset",
        "lfm2-nano",
        "--attention-layers",
        "1",
        "--prompt-len",
        "8",
        "--new-tokens",
        "4",
        "--no-bandwidth",
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["attention_layers"], serde_json::json!([3]));
    assert!(v["decode_tok_s"].as_f64().unwrap() > 0.0);
    assert!(v["state_kv_bytes"].as_u64().unwrap() > 0 && v["state_conv_bytes"].as_u64().unwrap() > 0);
    assert_kernel_path(&v["host"]);
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let out = autoneural(&["generate", "--model", "does/not/exist", "--prompt", "hi"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does/not/exist/config.json") && !err.contains("panicked"), "{err}");
    let out = autoneural(&["bench", "lm", "--preset", "lfm2-9000b"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown preset"));
    let out = autoneural(&["bench", "lm", "--preset", "lfm2-nano", "--attention-layers", "9"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("more than the 4 layers"));
}

fn vision_golden(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(format!("tests/fixtures/vision/{name}/golden.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn generate_with_an_image_reproduces_the_pytorch_assembly() {
    // An AutoNeural checkpoint assembled in PyTorch (timm MobileNetV5 + MLP + transformers LFM2).
    for name in ["autoneural-tiny", "lfm2-vl-tiny"] {
        let g = vision_golden(name);
        let dir = format!("tests/fixtures/vision/{name}");
        let image = format!("{dir}/image.png");
        // The golden prompt starts with `<image>`; without the tag the image goes first too.
        let prompt = g["prompt"].as_str().unwrap().trim_start_matches("<image>").to_string();
        let n = g["greedy_ids"].as_array().unwrap().len().to_string();
        let out = autoneural(&[
            "generate",
            "--model",
            &dir,
            "--image",
            &image,
            "--prompt",
            &prompt,
            "--max-new-tokens",
            &n,
            "--ignore-eos",
            "--format",
            "json",
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["new_ids"], g["greedy_ids"], "{name}");
        assert_eq!(v["prompt_ids"], g["prompt_ids"], "{name}");
        assert!(v["vision_ms"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn bench_vision_reports_each_resolution() {
    let out = autoneural(&[
        "bench",
        "vision",
        "--encoder",
        "mobilenetv5_tiny,vit_tiny",
        "--resolution",
        "64,96",
        "--runs",
        "1",
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 4);
    for r in &rows {
        assert!(r["latency_ms"].as_f64().unwrap() > 0.0);
        assert!(r["peak_activation_mib"].as_f64().is_some(), "the counting allocator is installed");
        assert!(r["latency_vs_first"].as_f64().is_some());
        assert_kernel_path(&r["host"]);
    }
}

/// Every benchmark figure says what produced it: the CPU, threads, and the kernel paths
/// chosen at run time (this project's own kernels, and the f32 GEMM's).
fn assert_kernel_path(host: &serde_json::Value) {
    let (ours, gemm) = (host["kernels"].as_str().unwrap(), host["gemm"].as_str().unwrap());
    let avx2 = host["flags"].as_array().unwrap().iter().any(|f| f == "avx2");
    assert_eq!(ours, if avx2 { "avx2+fma" } else { "portable" }, "{host}");
    assert!(gemm.starts_with(ours) && gemm.contains("gemm"), "{host}");
    assert!(host["threads"].as_u64().unwrap() >= 1, "{host}");
}

#[test]
fn bench_train_reads_the_experiment_as_run_does() {
    // `extends` and `--set` apply, as for `run`: the quickstart's model with a 2x2 token grid.
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::canonicalize("experiments/quickstart.toml").unwrap();
    let file = dir.path().join("wider.toml");
    std::fs::write(&file, format!("extends = {:?}\nname = \"wider\"\n", base.to_str().unwrap())).unwrap();
    let out = autoneural(&[
        "bench",
        "train",
        "--experiment",
        file.to_str().unwrap(),
        "--set",
        "model.vision.msfa_output_resolution=2",
        "--batch",
        "2",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["experiment"], "wider");
    assert_eq!(v["image_tokens"], 4);
    assert_kernel_path(&v["host"]);
    // A sweep needs one of its runs named.
    let out = autoneural(&["bench", "train", "--experiment", "experiments/ablation_attention_ratio.toml"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--only") && !err.contains("panicked"), "{err}");
}

#[test]
fn image_errors_name_the_file_and_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.jpg");
    std::fs::write(&bad, b"\xff\xd8\xff\xe0 definitely not a whole jpeg").unwrap();
    let out = autoneural(&[
        "generate",
        "--model",
        "tests/fixtures/vision/autoneural-tiny",
        "--image",
        bad.to_str().unwrap(),
        "--prompt",
        "hi",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("broken.jpg") && !err.contains("panicked"), "{err}");
    // Images for a text-only model.
    let out = autoneural(&[
        "generate",
        "--model",
        "tests/fixtures/lfm2/hybrid-hub-bf16",
        "--image",
        "tests/fixtures/vision/autoneural-tiny/image.png",
        "--prompt",
        "hi",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("text-only"));
    // More `<image>` tags than images.
    let out = autoneural(&[
        "generate",
        "--model",
        "tests/fixtures/vision/autoneural-tiny",
        "--image",
        "tests/fixtures/vision/autoneural-tiny/image.png",
        "--prompt",
        "<image><image> two?",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("2 `<image>` tags but 1 images"));
}

/// The research loop through the CLI on a tiny model: synthesize data, train a tokenizer,
/// run an experiment, evaluate and generate with its final checkpoint.
#[test]
fn data_run_eval_generate_loop() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let data_s = data.to_str().unwrap();
    let out = autoneural(&[
        "data",
        "synth",
        "--out",
        data_s,
        "--samples",
        "6",
        "--image-size",
        "64",
        "--seed",
        "1",
        "--families",
        "ocr,vqa",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(data.join("manifest.json").is_file());
    let tok = tmp.path().join("tok");
    let out =
        autoneural(&["data", "tokenizer", "--data", data_s, "--vocab-size", "300", "--out", tok.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let exp = tmp.path().join("exp.toml");
    std::fs::write(
        &exp,
        format!(
            r#"name = "cli"
out_dir = "runs"
[data]
dir = "{data_s}"
tokenizer = "tok"
[model.vision]
preset = "mobilenetv5_tiny"
[model.language]
preset = "lfm2-nano"
[[stage]]
name = "all"
train = ["vision", "projector", "language"]
steps = 2
lr = 1e-3
micro_batch = 2
mixture = {{ ocr = 1, vqa = 1 }}
[eval]
max_per_task = 2
max_new_tokens = 4
"#
        ),
    )
    .unwrap();
    let exp_s = exp.to_str().unwrap();
    let out = autoneural(&["run", exp_s]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("| ocr |") && stdout.contains("majority baseline"), "{stdout}");
    let run_dir = tmp.path().join("runs").join("cli");
    for f in ["experiment.json", "metrics.jsonl", "stages.json", "eval.json", "eval.md", "report.md"] {
        assert!(run_dir.join(f).is_file(), "missing {f}");
    }
    // A second run refuses to overwrite the first.
    let out = autoneural(&["run", exp_s]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--resume"));

    let final_dir = run_dir.join("final");
    let final_s = final_dir.to_str().unwrap();
    let test_file = data.join("ocr").join("test.jsonl");
    let out = autoneural(&[
        "eval",
        "--model",
        final_s,
        "--data",
        test_file.to_str().unwrap(),
        "--max-per-task",
        "3",
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["tasks"]["ocr"]["answers"], 3);
    let image = data.join("ocr").join("images").join("test-0.png");
    let out = autoneural(&[
        "generate",
        "--model",
        final_s,
        "--image",
        image.to_str().unwrap(),
        "--prompt",
        "What word is written?",
        "--max-new-tokens",
        "4",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Quantization error of the trained model: per group, at the encoder output, swept.
    let report_dir = tmp.path().join("quant");
    let out = autoneural(&[
        "quant-report",
        "--model",
        final_s,
        "--precision",
        "autoneural",
        "--data",
        test_file.to_str().unwrap(),
        "--samples",
        "3",
        "--out",
        report_dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("| Vision |") && stdout.contains("Encoder output") && stdout.contains("| 16 |"),
        "{stdout}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report_dir.join("quant_report.json")).unwrap()).unwrap();
    assert_eq!(v["encoder"]["images"], 3);
    assert!(v["weights"].as_array().unwrap().iter().all(|w| w["sqnr_db"].as_f64().unwrap() > 10.0));
    // Post-training quantization, then the quantized checkpoint through eval and generate.
    let qdir = tmp.path().join("w8a16");
    let quantize = |out_dir: &str| {
        let calib = test_file.to_str().unwrap();
        autoneural(&[
            "quantize",
            "--model",
            final_s,
            "--precision",
            "w8a16",
            "--calib",
            calib,
            "--samples",
            "3",
            "--out",
            out_dir,
        ])
    };
    let out = quantize(qdir.to_str().unwrap());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let q: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(qdir.join("quantization.json")).unwrap()).unwrap();
    // Never over the input checkpoint.
    let out = quantize(final_s);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("choose a new directory"));
    assert!(final_dir.join("model.safetensors").is_file());
    assert!(q["weights"].as_object().unwrap().len() > 10 && q["activations"].as_object().unwrap().len() > 10);
    let out = autoneural(&[
        "eval",
        "--model",
        qdir.to_str().unwrap(),
        "--data",
        test_file.to_str().unwrap(),
        "--max-per-task",
        "2",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let generate = |model: &str, precision: Option<&str>| {
        let mut a = vec!["generate", "--model", model, "--image", image.to_str().unwrap()];
        a.extend(["--prompt", "What word is written?", "--max-new-tokens", "2"]);
        a.extend(precision.map(|p| ["--precision", p]).into_iter().flatten());
        autoneural(&a)
    };
    // The quantized checkpoint decodes from its packed int8 weights; so does the float one
    // with --precision; a quantized checkpoint refuses a second quantization.
    for (model, precision) in [(qdir.to_str().unwrap(), None), (final_s, Some("w4a16"))] {
        let out = generate(model, precision);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && err.contains("decode from int8/int4"), "{err}");
    }
    let out = generate(qdir.to_str().unwrap(), Some("w4a16"));
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("quantized already"));
    // The quantized checkpoint exports in both deployment forms (QDQ graphs; float graphs
    // with AIMET encodings), which verify_onnx.py checks when a Python with onnxruntime is
    // named.
    let onnx_dir = tmp.path().join("onnx-w8a16");
    let onnx_s = onnx_dir.to_str().unwrap();
    let args = ["export", "--model", qdir.to_str().unwrap(), "--out", onnx_s, "--prefill-len", "8", "--context", "64"];
    let out = autoneural(&[&args[..], &["--reference-tokens", "4"]].concat());
    let err = String::from_utf8_lossy(&out.stderr);
    // Without --calib the quantizers Qualcomm's tools add are calibrated on the reference
    // inputs only, and the export says so.
    assert!(out.status.success() && err.contains("give --calib"), "{err}");
    for file in ["vision_encoder.qdq.onnx", "decode.qdq.onnx", "decode.encodings", "reference.qdq.safetensors"] {
        assert!(onnx_dir.join(file).is_file(), "{file}");
    }
    verify_onnx(onnx_s, "QDQ generation with the image");
    // With --calib, on conversations too (images and text through every graph).
    let cal_dir = tmp.path().join("onnx-w8a16-calib");
    let cal_s = cal_dir.to_str().unwrap();
    let args_c = ["export", "--model", qdir.to_str().unwrap(), "--out", cal_s, "--prefill-len", "8", "--context", "64"];
    let calib_c = ["--calib", test_file.to_str().unwrap(), "--samples", "2", "--reference-tokens", "3"];
    let out = autoneural(&[&args_c[..], &calib_c[..]].concat());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !err.contains("give --calib"), "{err}");
    verify_onnx(cal_s, "QDQ generation with the image");
    // The same quantized VLM in the Genie layout (2.0.0 encodings per part graph): its parts
    // chain to the Burn model's tokens on the reference's image features.
    let genie_dir = tmp.path().join("onnx-genie");
    let genie_s = genie_dir.to_str().unwrap();
    let genie = ["--layout", "genie", "--part-max-mb", "1", "--encodings-version", "2.0.0", "--reference-tokens", "4"];
    let args = ["export", "--model", qdir.to_str().unwrap(), "--out", genie_s, "--prefill-len", "8", "--context", "64"];
    let out = autoneural(&[&args[..], &genie].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(genie_dir.join("part0_ar8.encodings").is_file() && genie_dir.join("part0.data").is_file());
    // The embedding part's table keeps an encoding: the 16-bit activation AIMET takes it for.
    let part0 = std::fs::read_to_string(genie_dir.join("part0_ar8.encodings")).unwrap();
    assert!(part0.contains("\"language.model.embed_tokens.weight\"") && part0.contains("uint16"), "{part0}");
    verify_onnx(genie_s, "Genie layout chained in onnxruntime: 4 greedy tokens equal");
    // AIMET's reading of the same encodings, when a Python with aimet-onnx is named (not in
    // CI: AIMET pulls in torch): every graph loads with strict=True, no quantizer differing,
    // and AIMET's output lands within 1e-2 of the QDQ graph's (docs/deployment.md has the
    // figures, and why AIMET's own rounding keeps them near 1e-3).
    if let Ok(python) = std::env::var("AUTONEURAL_AIMET_PYTHON") {
        let o = Command::new(python)
            .args(["scripts/verify_aimet.py", onnx_s, "--strict", "--tol", "1e-2"])
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(o.status.success() && text.matches(": 0 quantizers differ").count() == 4, "{text}");
    }
    // Or in one step from the float checkpoint: --precision POLICY --calib quantizes first
    // (as `quantize` does); an already quantized checkpoint refuses a second policy.
    let ptq_dir = tmp.path().join("onnx-ptq");
    let ptq_s = ptq_dir.to_str().unwrap();
    let calib = ["--precision", "w8a16", "--calib", test_file.to_str().unwrap(), "--samples", "3"];
    let args_f = ["export", "--model", final_s, "--out", ptq_s, "--prefill-len", "8", "--context", "64"];
    let out = autoneural(&[&args_f[..], &calib[..], &["--reference-tokens", "3"]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(ptq_dir.join("vision_encoder.qdq.onnx").is_file() && ptq_dir.join("prefill.encodings").is_file());
    verify_onnx(ptq_s, "QDQ generation with the image");
    let out = autoneural(&[&args[..], &calib[..]].concat());
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("already quantized"));
    // quant-report measures against the float model: a quantized checkpoint is refused.
    let out = autoneural(&["quant-report", "--model", qdir.to_str().unwrap()]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("quantized already"));
    // Several models in one report (as the ViT-vs-MobileNetV5 comparison): each, then side
    // by side, with the two plots.
    let compare_dir = tmp.path().join("compare");
    let out = autoneural(&[
        "quant-report",
        "--model",
        final_s,
        "--model",
        final_s,
        "--precision",
        "w8a16",
        "--data",
        test_file.to_str().unwrap(),
        "--samples",
        "2",
        "--sweep",
        "4,8",
        "--out",
        compare_dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let md = std::fs::read_to_string(compare_dir.join("quant_report.md")).unwrap();
    assert!(md.contains("Quantization error compared at w8a16") && md.contains("| 1.00x |"), "{md}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(compare_dir.join("quant_report.json")).unwrap()).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    for svg in ["quant_report_sweep.svg", "quant_report_layers.svg"] {
        assert!(std::fs::read_to_string(compare_dir.join(svg)).unwrap().starts_with("<svg"), "{svg}");
    }

    let policy = tmp.path().join("bad.toml");
    std::fs::write(&policy, "[visoin]\nweights = { bits = 8 }\n").unwrap();
    let out = autoneural(&["quant-report", "--model", final_s, "--precision", policy.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("bad.toml") && err.contains("visoin"), "{err}");
}

#[test]
fn a_malformed_experiment_is_an_error_naming_file_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = tmp.path().join("bad.toml");
    std::fs::write(&exp, "name = \"x\"\nseed = \"zero\"\n").unwrap();
    let out = autoneural(&["run", exp.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml") && err.contains("seed") && !err.contains("panicked"), "{err}");
}

/// Runs `scripts/verify_onnx.py` on the export in `dir` when `AUTONEURAL_PYTHON` names a
/// Python with onnx, onnxruntime, safetensors and numpy (CI sets it); its output must say
/// `expect`.
fn verify_onnx(dir: &str, expect: &str) {
    match std::env::var("AUTONEURAL_PYTHON") {
        Ok(python) => {
            let o = Command::new(python).args(["scripts/verify_onnx.py", dir]).output().unwrap();
            let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
            assert!(o.status.success() && text.contains(expect), "{dir}: {text}");
            eprintln!("{dir}: {text}");
        }
        Err(_) => eprintln!("AUTONEURAL_PYTHON is not set: scripts/verify_onnx.py not run on {dir}"),
    }
}

/// `export` on the hybrid fixture; then, when `AUTONEURAL_PYTHON` names a Python with onnx,
/// onnxruntime, safetensors and numpy (CI sets it), `scripts/verify_onnx.py`: onnx.checker
/// and strict shape inference on every graph, and the Burn model's greedy generation
/// replayed through onnxruntime (logits within 1e-4 relative, the same tokens).
#[test]
fn export_writes_graphs_that_onnxruntime_runs_like_the_burn_model() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("onnx");
    let out_s = out.to_str().unwrap();
    let fixture = "tests/fixtures/lfm2/hybrid-hub-bf16";
    let args = ["export", "--model", fixture, "--out", out_s, "--prefill-len", "4", "--context", "32"];
    let o = autoneural(&[&args[..], &["--reference-tokens", "8"]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for file in ["embed_tokens.onnx", "prefill.onnx", "decode.onnx", "manifest.json", "reference.safetensors"] {
        assert!(out.join(file).is_file(), "{file}");
    }
    // --precision POLICY quantizes a float VLM first, on --calib conversations; --calib
    // alone has nothing to calibrate in a float export.
    let o = autoneural(&[&args[..], &["--precision", "w8a16"]].concat());
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("give --calib"));
    let o = autoneural(&[&args[..], &["--calib", "x.jsonl"]].concat());
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("calibrates a quantized export"));
    let o = autoneural(&[&args[..], &["--precision", "w8a16", "--calib", "x.jsonl"]].concat());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("vision-language checkpoints"), "{err}");
    verify_onnx(out_s, "greedy tokens equal");
}

/// LFM3's graphs: sliding layers with window-sized ring states and their own mask and RoPE,
/// sandwich norms, attention gates. Prefill chunks of 12 positions (more than the window of
/// 8) and of 5 (three chunks, the later ones over a ring that has wrapped), then 16
/// reference tokens past the window: onnxruntime must replay the Burn model's greedy tokens
/// as for LFM2 (`scripts/verify_onnx.py`, when `AUTONEURAL_PYTHON` is set).
#[test]
fn lfm3_exports_sliding_layers_as_ring_states() {
    for prefill in ["12", "5"] {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("onnx");
        let out_s = out.to_str().unwrap();
        let args = ["export", "--model", "tests/fixtures/lfm2/lfm3-f32", "--out", out_s, "--prefill-len", prefill];
        let o = autoneural(&[&args[..], &["--context", "96", "--reference-tokens", "16"]].concat());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
        assert_eq!(manifest["sliding_window"], 8);
        let sliding: Vec<&serde_json::Value> =
            manifest["state"].as_array().unwrap().iter().filter(|s| s["kind"] == "sliding_attention").collect();
        assert_eq!(sliding.len(), 2);
        assert_eq!(sliding[0]["shape"], serde_json::json!([1, 2, 8, 16]));
        let inputs = &manifest["graphs"]["prefill"]["inputs"];
        assert!(inputs.as_array().unwrap().iter().any(|p| p["name"] == "sliding_attention_mask"), "{inputs}");
        verify_onnx(out_s, "greedy tokens equal");
    }
}

#[test]
fn npu_cost_predicts_the_paper_configurations_and_says_so() {
    let o = autoneural(&["npu-cost", "--preset", "paper-baseline", "--format", "json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["kind"].as_str().unwrap().starts_with("predicted (roofline model, "), "{v}");
    assert!(v["encoder_ms"][2][1].is_null(), "InternViT at 768^2 does not fit: {v}");
    let o = autoneural(&["npu-cost", "--preset", "autoneural-paper", "--resolution", "256"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && text.contains("predicted (roofline model") && text.contains("256x256"), "{text}");
    let o = autoneural(&["npu-cost", "--preset", "autoneural-paper", "--profile", "missing.toml"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("missing.toml"));
}
