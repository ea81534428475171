//! MobileNetV5 as data: timm's block-string language parsed into typed blocks.
//!
//! A stage is a list of strings such as `er_r1_k3_s2_e4_c128` (EdgeResidual),
//! `uir_r1_a3_k5_s2_e6_c256` (UniversalInvertedResidual: `a` start depthwise kernel, `k`
//! middle depthwise kernel, `p` end depthwise kernel, 0 = absent) or
//! `mqa_r1_k3_h12_v2_s1_d64_c640` (MobileAttention with one shared key/value head: `h`
//! heads, `d` key dim, `v` key/value stride, `k` key/value downsample kernel). `r` repeats a
//! block, `noskip` drops its residual. As in timm, only the first block of a stage strides,
//! and strides past an output stride of 32 turn into dilation.

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// How convolutions pad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PadType {
    /// TensorFlow "same": output = ceil(input / stride); strided convs pad more at the end.
    #[serde(rename = "same")]
    Same,
    /// PyTorch symmetric padding `((stride - 1) + dilation * (k - 1)) / 2`.
    #[serde(rename = "")]
    Symmetric,
    /// No padding (patch embeddings).
    #[serde(rename = "valid")]
    Valid,
}

/// One block as its string says, before in/out channels are resolved.
#[derive(Debug, Clone, PartialEq)]
pub enum BlockKind {
    EdgeResidual { kernel: usize, exp_ratio: f64 },
    UniversalInvertedResidual { start_kernel: usize, mid_kernel: usize, end_kernel: usize, exp_ratio: f64 },
    MultiQueryAttention { kv_kernel: usize, num_heads: usize, key_dim: usize, kv_stride: usize },
}

/// A parsed block string (one repeat).
#[derive(Debug, Clone, PartialEq)]
pub struct BlockSpec {
    pub kind: BlockKind,
    pub stride: usize,
    pub out_chs: usize,
    pub noskip: bool,
}

/// A block with everything resolved: channels, stride, dilation, position in the network.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedBlock {
    pub spec: BlockSpec,
    pub in_chs: usize,
    pub dilation: usize,
}

/// Parses one block string into `(spec, repeats)`.
/// (A block string's own grammar: errors are the message, which callers place under the
/// config field that holds the string.)
pub fn parse_block(s: &str) -> std::result::Result<(BlockSpec, usize), String> {
    let mut parts = s.split('_');
    let kind = parts.next().unwrap_or_default();
    let mut opts = std::collections::BTreeMap::<String, String>::new();
    let mut noskip = false;
    for op in parts {
        match op {
            "noskip" => noskip = true,
            "skip" => {}
            _ => {
                // Letters then digits (`se0.25`, `k3`): the key is the leading letters.
                let split = op
                    .find(|c: char| c.is_ascii_digit())
                    .ok_or_else(|| format!("{s:?}: option {op:?} has no value"))?;
                let (k, v) = op.split_at(split);
                if k.is_empty() {
                    return Err(format!("{s:?}: option {op:?} has no name"));
                }
                opts.insert(k.to_string(), v.to_string());
            }
        }
    }
    let int = |k: &str| -> Result<usize, String> {
        let v = opts.get(k).ok_or_else(|| format!("{s:?}: missing `{k}`"))?;
        v.parse().map_err(|_| format!("{s:?}: `{k}{v}` is not a whole number"))
    };
    let int_or = |k: &str, d: usize| -> Result<usize, String> { if opts.contains_key(k) { int(k) } else { Ok(d) } };
    let float = |k: &str| -> Result<f64, String> {
        let v = opts.get(k).ok_or_else(|| format!("{s:?}: missing `{k}`"))?;
        v.parse().map_err(|_| format!("{s:?}: `{k}{v}` is not a number"))
    };
    if let Some(se) = opts.get("se").filter(|v| v.parse::<f64>().map(|x| x != 0.0).unwrap_or(true)) {
        return Err(format!("{s:?}: squeeze-excite (`se{se}`) is not used by MobileNetV5 and not supported"));
    }
    let kind = match kind {
        "er" => BlockKind::EdgeResidual { kernel: int("k")?, exp_ratio: float("e")? },
        "uir" => BlockKind::UniversalInvertedResidual {
            start_kernel: int_or("a", 0)?,
            mid_kernel: int("k")?,
            end_kernel: int_or("p", 0)?,
            exp_ratio: float("e")?,
        },
        "mqa" => BlockKind::MultiQueryAttention {
            kv_kernel: int("k")?,
            num_heads: int("h")?,
            key_dim: int("d")?,
            kv_stride: int_or("v", 1)?,
        },
        other => return Err(format!("{s:?}: unknown block type {other:?} (MobileNetV5 uses er, uir, mqa)")),
    };
    let stride = int("s")?;
    if !(1..=2).contains(&stride) {
        return Err(format!("{s:?}: stride must be 1 or 2"));
    }
    // Sizes a convolution or attention can have: zero-sized layers have no forward pass,
    // and absurd ones would allocate without bound.
    let kernels_ok = |ks: &[usize], least: usize| ks.iter().all(|&k| (least..=MAX_KERNEL).contains(&k));
    let ratio_ok = |e: f64| e.is_finite() && e > 0.0 && e <= 64.0;
    let fits = match kind {
        BlockKind::EdgeResidual { kernel, exp_ratio } => kernels_ok(&[kernel], 1) && ratio_ok(exp_ratio),
        BlockKind::UniversalInvertedResidual { start_kernel, mid_kernel, end_kernel, exp_ratio } => {
            kernels_ok(&[start_kernel, mid_kernel, end_kernel], 0) && ratio_ok(exp_ratio)
        }
        BlockKind::MultiQueryAttention { kv_kernel, num_heads, key_dim, kv_stride } => {
            kernels_ok(&[kv_kernel], 1)
                && (1..=1024).contains(&num_heads)
                && (1..=4096).contains(&key_dim)
                && (1..=8).contains(&kv_stride)
        }
    };
    if !fits {
        return Err(format!(
            "{s:?}: kernels must be 1 to {MAX_KERNEL} (uir's a/k/p may be 0: absent), expansion ratios in (0, 64], \
             heads 1 to 1024, key dims 1 to 4096, kv strides 1 to 8"
        ));
    }
    if let BlockKind::UniversalInvertedResidual { start_kernel: 0, mid_kernel: 0, end_kernel: 0, .. } = kind {
        if stride > 1 {
            return Err(format!("{s:?}: a strided uir block needs a depthwise conv (a, k or p)"));
        }
    }
    let repeats = int("r")?;
    if !(1..=256).contains(&repeats) {
        return Err(format!("{s:?}: repeats (`r`) must be 1 to 256"));
    }
    let out_chs = int("c")?;
    if !(1..=MAX_CHANNELS).contains(&out_chs) {
        return Err(format!("{s:?}: channels (`c`) must be 1 to {MAX_CHANNELS}"));
    }
    Ok((BlockSpec { kind, stride, out_chs, noskip }, repeats))
}

/// Bounds on what a MobileNetV5 may be, far above every published one: a zero or absurd
/// size in a config is an error naming it, not a panic or an allocation that never ends.
pub const MAX_CHANNELS: usize = 1 << 16;
pub const MAX_KERNEL: usize = 31;
/// The largest encoder input side (a 64 MP image is 8000 x 8000).
pub const MAX_IMAGE_SIDE: usize = 8192;
/// The largest token grid side (Gemma 3n's is 16: 256 tokens).
pub const MAX_GRID_SIDE: usize = 128;
/// The most blocks over all stages (Gemma 3n's 300M encoder has 85).
pub const MAX_BLOCKS: usize = 1024;

/// timm's `make_divisible`: nearest multiple of `divisor`, never below 90% of `v`.
pub fn make_divisible(v: f64, divisor: usize) -> usize {
    let d = divisor as f64;
    let mut new_v = (divisor).max(((v + d / 2.0) / d).floor() as usize * divisor);
    if (new_v as f64) < 0.9 * v {
        new_v += divisor;
    }
    new_v
}

/// The normalisation after every convolution (timm's `norm_layer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NormKind {
    /// `RmsNorm2d`: RMS over the channels of each pixel, as Gemma 3n's checkpoints.
    #[default]
    Rms,
    /// `BatchNorm2d`: per channel over the batch and the pixels, with running statistics
    /// for inference. Trains from scratch where `Rms` stalls (docs/training.md) and folds
    /// into the preceding convolution for deployment.
    Batch,
}

/// The whole encoder as data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MobileNetV5Arch {
    /// Stages of block strings.
    pub block_args: Vec<Vec<String>>,
    pub stem_size: usize,
    pub pad_type: PadType,
    /// Output grid side (the encoder yields `msfa_output_resolution^2` tokens).
    pub msfa_output_resolution: usize,
    /// Output channels of the fusion adapter.
    #[serde(default = "default_num_features")]
    pub num_features: usize,
    /// Input side the encoder is used at.
    pub image_size: usize,
    /// Layer scale init on UIR/MQA blocks (`None`: no layer scale parameters).
    #[serde(default = "default_layer_scale")]
    pub layer_scale_init_value: Option<f64>,
    /// The norm after convolutions and in the attention blocks.
    #[serde(default)]
    pub norm: NormKind,
}

fn default_num_features() -> usize {
    2048
}
fn default_layer_scale() -> Option<f64> {
    Some(1e-5)
}

/// Blocks grouped by stage, plus what the fusion adapter taps.
#[derive(Debug, Clone)]
pub struct ResolvedArch {
    pub stages: Vec<Vec<ResolvedBlock>>,
    /// Stage outputs the fusion adapter takes, as timm numbers them (0 = stem, s + 1 = stage s).
    pub msfa_taps: Vec<usize>,
    /// Sum of the tapped stages' channels.
    pub msfa_in_chs: usize,
}

impl MobileNetV5Arch {
    /// Every size within bounds and the blocks resolvable; the error names the field.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let within = |field: &'static str, v: usize, lo: usize, hi: usize| {
            if (lo..=hi).contains(&v) { Ok(()) } else { Err((field, format!("{v} is not between {lo} and {hi}"))) }
        };
        within("image_size", self.image_size, 32, MAX_IMAGE_SIDE)?;
        within("stem_size", self.stem_size, 1, MAX_CHANNELS)?;
        within("num_features", self.num_features, 1, MAX_CHANNELS)?;
        within("msfa_output_resolution", self.msfa_output_resolution, 1, MAX_GRID_SIDE.min(self.image_size))?;
        if let Some(v) = self.layer_scale_init_value
            && !v.is_finite()
        {
            return Err(("layer_scale_init_value", format!("{v} is not a number")));
        }
        let resolved = self.resolve().map_err(|e| ("block_args", e.to_string()))?;
        let blocks: usize = resolved.stages.iter().map(Vec::len).sum();
        within("block_args", blocks, 1, MAX_BLOCKS)
            .map_err(|(f, _)| (f, format!("{blocks} blocks in all, more than {MAX_BLOCKS}")))?;
        Ok(())
    }

    /// Resolves channels, strides, dilation and the fusion taps exactly as timm's builder does.
    pub fn resolve(&self) -> Result<ResolvedArch> {
        if self.block_args.is_empty() || self.block_args.iter().any(|s| s.is_empty()) {
            return Err(ModelError::Invalid("block_args needs at least one stage and no empty stage".into()));
        }
        let mut stages = Vec::new();
        let mut in_chs = self.stem_size;
        let (mut current_stride, mut dilation) = (2usize, 1usize);
        // feature_info: (tap number, channels)
        let mut features: Vec<(usize, usize)> = Vec::new();
        let first = parse_block(&self.block_args[0][0]).map_err(ModelError::Invalid)?.0;
        if first.stride > 1 {
            features.push((0, self.stem_size));
        }
        let parsed: Vec<Vec<BlockSpec>> = self
            .block_args
            .iter()
            .map(|stage| {
                let mut out = Vec::new();
                for s in stage {
                    let (spec, r) = parse_block(s).map_err(ModelError::Invalid)?;
                    out.extend(std::iter::repeat_n(spec, r));
                }
                Ok(out)
            })
            .collect::<Result<_>>()?;
        for (si, stage) in parsed.iter().enumerate() {
            let mut blocks = Vec::new();
            for (bi, spec) in stage.iter().enumerate() {
                let mut spec = spec.clone();
                if bi >= 1 {
                    spec.stride = 1;
                }
                let mut next_dilation = dilation;
                if spec.stride > 1 {
                    if current_stride * spec.stride > 32 {
                        next_dilation = dilation * spec.stride;
                        spec.stride = 1;
                    } else {
                        current_stride *= spec.stride;
                    }
                }
                let out = spec.out_chs;
                blocks.push(ResolvedBlock { spec, in_chs, dilation });
                dilation = next_dilation;
                in_chs = out;
            }
            let last_stage = si + 1 == parsed.len();
            if last_stage || parsed[si + 1][0].stride > 1 {
                features.push((si + 1, in_chs));
            }
            stages.push(blocks);
        }
        if features.len() < 2 {
            return Err(ModelError::Invalid(
                "the fusion adapter needs two feature levels (stages that end before a stride-2 stage)".into(),
            ));
        }
        let taps: Vec<(usize, usize)> = features[features.len() - 2..].to_vec();
        Ok(ResolvedArch {
            stages,
            msfa_taps: taps.iter().map(|t| t.0).collect(),
            msfa_in_chs: taps.iter().map(|t| t.1).sum(),
        })
    }

    /// Gemma 3n's MobileNetV5 family: two shared stages (EdgeResidual, then UIR), a third
    /// at `c2` channels (strided UIR, `s2_uir` repeats, a plain UIR, then `s2_pairs` x
    /// (`mqa2`, UIR)) and a fourth at `c3` (strided UIR, then `s3_pairs` x (`mqa3`, UIR)).
    fn gemma_family(
        c2: usize,
        s2_uir: &str,
        s2_pairs: usize,
        mqa2: &str,
        c3: usize,
        s3_pairs: usize,
        mqa3: &str,
    ) -> Vec<Vec<String>> {
        let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut s2 =
            vec![format!("uir_r1_a5_k5_s2_e6_c{c2}"), format!("{s2_uir}_c{c2}"), format!("uir_r1_a0_k0_s1_e1_c{c2}")];
        for _ in 0..s2_pairs {
            s2.push(format!("{mqa2}_c{c2}"));
            s2.push(format!("uir_r1_a0_k0_s1_e2_c{c2}"));
        }
        let mut s3 = vec![format!("uir_r1_a5_k5_s2_e6_c{c3}")];
        for _ in 0..s3_pairs {
            s3.push(format!("{mqa3}_c{c3}"));
            s3.push(format!("uir_r1_a0_k0_s1_e2_c{c3}"));
        }
        vec![
            own(&["er_r1_k3_s2_e4_c128", "er_r2_k3_s1_e4_c128"]),
            own(&[
                "uir_r1_a3_k5_s2_e6_c256",
                "uir_r1_a5_k0_s1_e4_c256",
                "uir_r1_a3_k0_s1_e4_c256",
                "uir_r1_a5_k0_s1_e4_c256",
                "uir_r1_a3_k0_s1_e4_c256",
            ]),
            s2,
            s3,
        ]
    }

    /// Named architectures, one constructor each: Gemma 3n's 300M encoder (with TensorFlow
    /// "same" padding, as the Gemma 3n checkpoints, or PyTorch's, as timm's), its base size,
    /// and a tiny one with every block kind for tests and CPU training (2x2 tokens at 64 px).
    pub const PRESETS: &'static [(&'static str, fn() -> Self)] = &[
        ("mobilenetv5_300m_enc", || Self::gemma_300m(PadType::Same)),
        ("mobilenetv5_300m", || Self::gemma_300m(PadType::Symmetric)),
        ("mobilenetv5_base", || {
            let stages = Self::gemma_family(
                512,
                "uir_r2_a5_k0_s1_e4",
                6,
                "mqa_r1_k3_h8_s2_d64",
                1024,
                7,
                "mqa_r1_k3_h16_s1_d64",
            );
            Self::gemma(stages, PadType::Symmetric, 256)
        }),
        ("mobilenetv5_tiny", || {
            let stage = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
            Self {
                block_args: vec![
                    stage(&["er_r1_k3_s2_e4_c16", "er_r1_k3_s1_e2_c16"]),
                    stage(&["uir_r1_a3_k5_s2_e4_c24", "uir_r1_a5_k0_s1_e2_c24"]),
                    stage(&["uir_r1_a3_k3_s2_e4_c32", "mqa_r1_k3_h2_v2_s1_d8_c32", "uir_r1_a0_k0_s1_e2_c32"]),
                    stage(&["uir_r1_a0_k3_p3_s2_e3_c48", "mqa_r1_k3_h4_s1_d12_c48", "uir_r1_a0_k0_s1_e2_c48"]),
                ],
                stem_size: 8,
                pad_type: PadType::Same,
                msfa_output_resolution: 2,
                num_features: 64,
                image_size: 64,
                layer_scale_init_value: Some(1e-5),
                norm: NormKind::Rms,
            }
        }),
    ];

    /// A preset by name.
    pub fn preset(name: &str) -> Option<Self> {
        Self::PRESETS.iter().find(|(n, _)| *n == name).map(|(_, make)| make())
    }

    pub fn preset_names() -> Vec<&'static str> {
        Self::PRESETS.iter().map(|(n, _)| *n).collect()
    }

    fn gemma_300m(pad_type: PadType) -> Self {
        let stages = Self::gemma_family(
            640,
            "uir_r7_a5_k0_s1_e4",
            14,
            "mqa_r1_k3_h12_v2_s1_d64",
            1280,
            19,
            "mqa_r1_k3_h16_s1_d96",
        );
        Self::gemma(stages, pad_type, 768)
    }

    /// Gemma 3n's stem, adapter and norm around `block_args`.
    fn gemma(block_args: Vec<Vec<String>>, pad_type: PadType, image_size: usize) -> Self {
        Self {
            block_args,
            stem_size: 64,
            pad_type,
            msfa_output_resolution: 16,
            num_features: 2048,
            image_size,
            layer_scale_init_value: Some(1e-5),
            norm: NormKind::Rms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind() {
        let (b, r) = parse_block("uir_r2_a3_k5_s2_e6_c256").unwrap();
        assert_eq!(r, 2);
        assert_eq!(b.stride, 2);
        assert_eq!(
            b.kind,
            BlockKind::UniversalInvertedResidual { start_kernel: 3, mid_kernel: 5, end_kernel: 0, exp_ratio: 6.0 }
        );
        let (b, _) = parse_block("mqa_r1_k3_h12_v2_s1_d64_c640").unwrap();
        assert_eq!(b.kind, BlockKind::MultiQueryAttention { kv_kernel: 3, num_heads: 12, key_dim: 64, kv_stride: 2 });
        let (b, _) = parse_block("er_r1_k3_s2_e4_c128_noskip").unwrap();
        assert!(b.noskip);
        assert!(parse_block("xx_r1_k3_s1_c8").unwrap_err().contains("unknown block type"));
        assert!(parse_block("er_r1_s1_e4_c8").unwrap_err().contains("missing `k`"));
        assert!(parse_block("uir_r1_a0_k0_s2_e4_c8").is_err());
    }

    #[test]
    fn make_divisible_matches_timm() {
        assert_eq!(make_divisible(640.0 * 4.0, 8), 2560);
        assert_eq!(make_divisible(20.0, 8), 24);
        assert_eq!(make_divisible(12.0, 8), 16);
        assert_eq!(make_divisible(4.0, 8), 8);
    }

    #[test]
    fn presets_resolve() {
        for name in MobileNetV5Arch::preset_names() {
            let a = MobileNetV5Arch::preset(name).unwrap().resolve().unwrap();
            assert_eq!(a.msfa_taps, vec![3, 4], "{name}");
        }
        let a = MobileNetV5Arch::preset("mobilenetv5_300m_enc").unwrap().resolve().unwrap();
        assert_eq!(a.stages.iter().map(|s| s.len()).sum::<usize>(), 84);
        assert_eq!(a.msfa_in_chs, 640 + 1280);
    }
}
