//! `autoneural npu-cost`: the NPU cost model (a roofline, docs/npu_cost_model.md) of a
//! checkpoint's config, a paper configuration or an export directory on a device profile.
//! Every number it prints is a prediction, and says so.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use autoneural_model::checkpoint::read_vlm_config;
use autoneural_model::quant::PrecisionPolicy;
use autoneural_npu::export_dir::predict_export;
use autoneural_npu::{Bits, DeviceProfile, Scenario, paper, predict_vlm};
use clap::Args;

use super::Format;

#[derive(Args, Debug)]
pub struct NpuCostArgs {
    /// A VLM checkpoint directory (its config.json; no weights are read).
    #[arg(long, conflicts_with_all = ["preset", "onnx"], required_unless_present_any = ["preset", "onnx"])]
    pub model: Option<PathBuf>,
    /// A paper configuration: `paper-baseline` (InternViT-300M + InternLM2-1.8B shapes) or
    /// `autoneural-paper` (MobileNetV5-300M + LFM2-1.2B).
    #[arg(long, conflicts_with = "onnx")]
    pub preset: Option<String>,
    /// An export directory (manifest.json and its graphs, QDQ forms preferred).
    #[arg(long)]
    pub onnx: Option<PathBuf>,
    /// A built-in device profile (`sa8295p`) or a profile .toml file.
    #[arg(long, default_value = "sa8295p")]
    pub profile: String,
    /// Deployed precision policy (fp32, w8a16, w4a16, autoneural, or a policy .toml).
    #[arg(long, default_value = "autoneural")]
    pub precision: String,
    /// Encoder input sides to predict, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "256,512,768")]
    pub resolution: Vec<usize>,
    /// Cache slots of the decode graph.
    #[arg(long, default_value_t = 1024)]
    pub context: usize,
    /// Cost the language model's Linear layers as MatMul (default: as 1x1 Conv, how
    /// Qualcomm's LLM exports and `autoneural export --linear-as-conv` write them).
    #[arg(long)]
    pub linear_as_matmul: bool,
    /// Positions per prefill call (the static prefill graph's length, as `export
    /// --prefill-len`); 0: one call of exactly the prompt's length.
    #[arg(long, default_value_t = 128)]
    pub prefill_len: usize,
    /// Text tokens of the prompt besides the image's.
    #[arg(long, default_value_t = 32)]
    pub prompt_tokens: usize,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

pub fn run(args: NpuCostArgs) -> Result<()> {
    let profile = DeviceProfile::resolve(&args.profile).with_context(|| format!("--profile {}", args.profile))?;
    let policy = PrecisionPolicy::load(&args.precision).with_context(|| format!("--precision {}", args.precision))?;
    let (vision_bits, lm_bits): (Bits, Bits) = Bits::from_policy(&policy);
    if let Some(dir) = &args.onnx {
        let p = predict_export(dir, vision_bits, lm_bits, &profile)?;
        match args.format {
            Format::Json => println!("{}", serde_json::to_string_pretty(&p)?),
            Format::Text => print!("{}", p.markdown()),
        }
        return Ok(());
    }
    let vlm = match (&args.model, &args.preset) {
        (Some(dir), _) => read_vlm_config(dir).with_context(|| format!("--model {}", dir.display()))?,
        (None, Some(name)) => match paper::preset(name) {
            Some(v) => v,
            None => bail!("--preset {name:?}: expected one of {}", paper::PRESETS.join(", ")),
        },
        (None, None) => bail!("give --model DIR, --preset NAME or --onnx DIR"),
    };
    if args.resolution.contains(&0) {
        bail!("--resolution: sides must be positive");
    }
    let scenario = Scenario {
        resolutions: args.resolution.clone(),
        prompt_tokens: args.prompt_tokens,
        decode_context: args.context,
        linear_as_conv: !args.linear_as_matmul,
        prefill_len: args.prefill_len,
    };
    let p = predict_vlm(&vlm, vision_bits, lm_bits, &profile, &scenario);
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&p.to_json())?),
        Format::Text => print!("{}", p.markdown()),
    }
    Ok(())
}
