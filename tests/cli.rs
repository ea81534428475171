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
    }
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
