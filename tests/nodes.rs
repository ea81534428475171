//! One run across two processes, as across two machines (`launch::nodes`): rank 1 serves its
//! CPU through Burn's remote backend on localhost, rank 0 trains on its own CPU and on rank
//! 1's. That equals one process with two replicas (`device = "flex,flex"`) within float
//! tolerance, and after rank 0 is killed both ranks started again with `--resume` reach the
//! uninterrupted run's weights bit for bit. Built with `--features remote`.
#![cfg(feature = "remote")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn autoneural() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_autoneural"));
    c.env("XDG_RUNTIME_DIR", "/tmp");
    for var in ["SLURM_PROCID", "SLURM_NTASKS", "SLURM_JOB_NODELIST"] {
        c.env_remove(var);
    }
    c
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A tiny experiment whose one stage checkpoints every step; its data is generated into
/// `tmp/data` by the first run.
fn experiment(tmp: &Path) -> PathBuf {
    let path = tmp.join("exp.toml");
    std::fs::write(
        &path,
        format!(
            r#"
name = "nodes"
seed = 1
out_dir = "runs"
device = "flex"
[data]
dir = "{data}"
vocab_size = 320
[data.synth]
samples = 12
image_size = 64
seed = 0
[model]
image_size = 64
[model.vision]
preset = "mobilenetv5_tiny"
norm = "rms"
msfa_output_resolution = 4
[model.language]
preset = "lfm2-nano"
hidden_size = 64
intermediate_size = 128
num_layers = 3
attention_layers = 1
[eval]
max_per_task = 1
max_new_tokens = 4
[[stage]]
name = "full"
train = ["vision", "projector", "language"]
steps = 6
lr = 1e-3
micro_batch = 4
checkpoint_every = 1
mixture = {{ ocr = 1, vqa = 1 }}
"#,
            data = tmp.join("data").display()
        ),
    )
    .unwrap();
    path
}

/// A free base port for this test's ranks (rank r uses base + 2r and base + 2r + 1).
fn base_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    port.min(u16::MAX - 8)
}

/// `autoneural run` as `rank` of two on localhost, the runs under `out`.
fn rank(exp: &Path, out: &Path, rank: usize, port: u16, extra: &[&str]) -> Command {
    let mut c = autoneural();
    c.args(["run", exp.to_str().unwrap(), "--no-dashboard", "--set"])
        .arg(format!("out_dir=\"{}\"", out.display()))
        .args(extra)
        .env("AUTONEURAL_RANK", rank.to_string())
        .env("AUTONEURAL_WORLD_SIZE", "2")
        .env("AUTONEURAL_HOSTS", "127.0.0.1,127.0.0.1")
        .env("AUTONEURAL_PORT", port.to_string())
        .env("AUTONEURAL_CONNECT_TIMEOUT", "60");
    c
}

fn server(exp: &Path, out: &Path, port: u16, extra: &[&str]) -> Child {
    rank(exp, out, 1, port, extra).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap()
}

/// Waits for a server rank to end on its own (rank 0 closed its control connection).
fn ends(mut server: Child) {
    let t0 = Instant::now();
    while server.try_wait().unwrap().is_none() {
        assert!(t0.elapsed() < Duration::from_secs(60), "rank 1 did not stop after rank 0 ended");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = server.wait_with_output().unwrap();
    let said = text(&out);
    assert!(out.status.success(), "rank 1: {said}");
    assert!(said.contains("rank 0 connected") && said.contains("rank 0 has finished"), "rank 1: {said}");
    println!("rank 1 said: {said}");
}

fn weights(run: &Path) -> Vec<(String, Vec<f32>)> {
    let device = burn::tensor::Device::flex();
    let model = autoneural_model::checkpoint::load_vlm(&run.join("final"), &device).unwrap();
    autoneural_model::checkpoint::apply::collect_tensors(&model, &autoneural_model::checkpoint::apply::Identity)
        .into_iter()
        .map(|(k, _, v)| (k, v))
        .collect()
}

/// The model the run started from: drawn from the experiment's seed on the CPU, as the run
/// drew it (with the tokenizer the run trained, which `final/` holds).
fn initial_weights(exp: &Path, final_dir: &Path) -> Vec<(String, Vec<f32>)> {
    let text = std::fs::read_to_string(exp).unwrap();
    let exp = autoneural_experiments::experiment::Experiment::from_toml(&text).unwrap();
    let tokenizer = autoneural_model::tokenizer::TextTokenizer::from_dir(final_dir, &[]).unwrap();
    let device = burn::tensor::Device::flex().autodiff();
    let model = autoneural_train::train::build_model(&exp.model, &tokenizer, exp.seed, &device).unwrap();
    autoneural_model::checkpoint::apply::collect_tensors(&model, &autoneural_model::checkpoint::apply::Identity)
        .into_iter()
        .map(|(k, _, v)| (k, v))
        .collect()
}

#[test]
fn two_processes_train_as_two_replicas_and_resume_exactly_after_a_kill() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = experiment(tmp.path());

    // One process, two replicas (generates the data and the tokenizer the others reuse).
    let one = autoneural()
        .args(["run", exp.to_str().unwrap(), "--no-dashboard", "--device", "flex,flex", "--set"])
        .arg(format!("out_dir=\"{}\"", tmp.path().join("one").display()))
        .output()
        .unwrap();
    assert!(one.status.success(), "{}", text(&one));

    // Two processes: rank 1 serves, rank 0 trains on both.
    let port = base_port();
    let two = tmp.path().join("two");
    let served = server(&exp, &two, port, &[]);
    let trained = rank(&exp, &two, 0, port, &[]).output().unwrap();
    assert!(trained.status.success(), "{}", text(&trained));
    assert!(text(&trained).contains("1 device(s) of rank 1"), "{}", text(&trained));
    ends(served);

    // Per part (vision, projector, language), how far the two runs land apart relative to
    // how far training moved the part: AdamW's first steps are close to `lr` times the
    // gradient's sign, so an element whose gradient is within rounding of zero steps the
    // other way; per part that is noise, per tensor it can be most of a small tensor's update.
    let (a, b) = (weights(&tmp.path().join("one/nodes")), weights(&two.join("nodes")));
    let init = initial_weights(&exp, &tmp.path().join("one/nodes/final"));
    assert_eq!(a.len(), b.len());
    for part in ["vision_tower", "multi_modal_projector", "language"] {
        let (mut apart, mut moved) = (0f64, 0f64);
        for (((key, x), (_, y)), (_, w0)) in a.iter().zip(&b).zip(&init) {
            if key.starts_with(part) {
                apart += x.iter().zip(y).map(|(p, q)| f64::from(p - q).powi(2)).sum::<f64>();
                moved += x.iter().zip(w0).map(|(p, q)| f64::from(p - q).powi(2)).sum::<f64>();
            }
        }
        let ratio = (apart / moved).sqrt();
        println!("{part}: two processes vs two replicas {ratio:.2e} of the update");
        assert!(moved > 0.0 && ratio < 1e-2, "{part}: two processes and two replicas {ratio:.2e} apart");
    }

    // Killed after its second checkpoint, then both ranks again with --resume: the weights of
    // the uninterrupted two-process run, bit for bit.
    let port = base_port();
    let three = tmp.path().join("three");
    let served = server(&exp, &three, port, &[]);
    let mut trainer = rank(&exp, &three, 0, port, &[]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let t0 = Instant::now();
    let checkpoints = three.join("nodes/checkpoints");
    let second = || {
        std::fs::read_dir(&checkpoints)
            .map(|d| d.flatten().any(|e| e.file_name().to_string_lossy().as_ref() >= "step-000002"))
            .unwrap_or(false)
    };
    while !second() {
        assert!(t0.elapsed() < Duration::from_secs(300), "no second checkpoint after 5 minutes");
        assert!(trainer.try_wait().unwrap().is_none(), "rank 0 ended before it could be killed");
        std::thread::sleep(Duration::from_millis(20));
    }
    trainer.kill().unwrap();
    trainer.wait().unwrap();
    ends(served);
    assert!(!three.join("nodes/final").exists());
    let port = base_port();
    let served = server(&exp, &three, port, &["--resume"]);
    let resumed = rank(&exp, &three, 0, port, &["--resume"]).output().unwrap();
    assert!(resumed.status.success(), "{}", text(&resumed));
    ends(served);
    let c = weights(&three.join("nodes"));
    for ((key, x), (_, y)) in b.iter().zip(&c) {
        assert!(x == y, "{key}: the resumed two-process run differs from the uninterrupted one");
    }
}
