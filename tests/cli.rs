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
