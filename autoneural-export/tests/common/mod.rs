//! What the export tests share: `scripts/verify_onnx.py` on an export directory.

use std::path::Path;
use std::process::Command;

/// Runs `scripts/verify_onnx.py` on `dir` when `AUTONEURAL_PYTHON` names a Python with
/// onnx and onnxruntime (CI sets it): it must pass and print every one of `expects`.
pub fn verify_onnx(dir: &Path, label: &str, expects: &[&str]) {
    let Ok(python) = std::env::var("AUTONEURAL_PYTHON") else {
        eprintln!("AUTONEURAL_PYTHON is not set: scripts/verify_onnx.py not run on {label}");
        return;
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/verify_onnx.py");
    let o = Command::new(python).arg(script).arg(dir).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success() && expects.iter().all(|e| text.contains(e)), "{label}: {text}");
    eprintln!("{label}: {text}");
}
