//! Precision policies: bits and granularity per module group, from a preset or a TOML file,
//! with per-layer overrides.
//!
//! ```toml
//! preset = "autoneural"          # optional base: fp32, w8a16, w4a16, autoneural
//! [language]
//! weights = { bits = 4, granularity = "lpbq", block_size = 64 }
//! activations = { bits = 16, calibration = "percentile", percentile = 99.99 }
//! [kv_cache]
//! bits = 8
//! [[override]]
//! layers = "language.model.layers.0.*"   # `*` matches any run of characters
//! weights = { bits = 8, granularity = "per_channel" }
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::encoding::Granularity;
use super::grid::{ACTIVATION_BITS, WEIGHT_BITS};
use crate::error::{ModelError, Result};

/// The module groups a policy sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    Vision,
    Connector,
    Language,
    LmHead,
    KvCache,
}

/// Weight quantization of a group or layer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct WeightScheme {
    pub bits: u32,
    pub granularity: Granularity,
}

/// How activation ranges are calibrated.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Calibration {
    MinMax,
    /// The `p`-th and `(100 - p)`-th percentiles.
    Percentile(f64),
}

/// Activation quantization (asymmetric, per tensor).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ActivationScheme {
    pub bits: u32,
    pub calibration: Calibration,
}

/// What one group or layer gets; `None` parts stay float.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Precision {
    pub weights: Option<WeightScheme>,
    pub activations: Option<ActivationScheme>,
}

/// A whole policy, resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PrecisionPolicy {
    pub name: String,
    pub vision: Precision,
    pub connector: Precision,
    pub language: Precision,
    pub lm_head: Precision,
    /// Bits of the KV cache (and conv state) entries, asymmetric per tensor.
    pub kv_cache_bits: Option<u32>,
    pub overrides: Vec<(String, Precision)>,
}

pub const PRESETS: [&str; 4] = ["fp32", "w8a16", "w4a16", "autoneural"];

fn per_channel(bits: u32) -> Option<WeightScheme> {
    Some(WeightScheme { bits, granularity: Granularity::PerChannel })
}

fn a16() -> Option<ActivationScheme> {
    Some(ActivationScheme { bits: 16, calibration: Calibration::MinMax })
}

impl PrecisionPolicy {
    /// `fp32`; `w8a16` and `w4a16` (every group, per-channel weights, int16 activations, LM
    /// head at the same bits); `autoneural`, the paper's deployment: vision and connector
    /// W8A16, language W4A16 with LPBQ blocks of 64, LM head 8-bit per channel, KV cache 8-bit.
    pub fn preset(name: &str) -> Option<Self> {
        let all = |bits| Precision { weights: per_channel(bits), activations: a16() };
        let base = |name: &str, p: Precision, kv| Self {
            name: name.into(),
            vision: p,
            connector: p,
            language: p,
            lm_head: p,
            kv_cache_bits: kv,
            overrides: Vec::new(),
        };
        match name {
            "fp32" => Some(base(name, Precision::default(), None)),
            "w8a16" => Some(base(name, all(8), None)),
            "w4a16" => Some(base(name, all(4), None)),
            "autoneural" => Some(Self {
                language: Precision {
                    weights: Some(WeightScheme {
                        bits: 4,
                        granularity: Granularity::Lpbq { block_size: 64, scale_bits: 4 },
                    }),
                    activations: a16(),
                },
                lm_head: all(8),
                ..base(name, all(8), Some(8))
            }),
            _ => None,
        }
    }

    /// A preset name, or a TOML file (see the module docs).
    pub fn load(name_or_path: &str) -> Result<Self> {
        if let Some(p) = Self::preset(name_or_path) {
            return Ok(p);
        }
        let path = Path::new(name_or_path);
        if !path.is_file() {
            return Err(ModelError::Invalid(format!(
                "precision {name_or_path:?}: neither a preset ({}) nor a policy file",
                PRESETS.join(", ")
            )));
        }
        let text = autoneural_io::read::read_to_string(path, autoneural_io::read::CONFIG)?;
        let name = path.file_stem().map_or("policy".into(), |s| s.to_string_lossy().into_owned());
        Self::from_toml(&text, &name).map_err(|e| ModelError::Invalid(format!("{}: {e}", path.display())))
    }

    /// Parses a policy file's text; errors name the key and what was expected.
    pub fn from_toml(text: &str, name: &str) -> std::result::Result<Self, String> {
        let file: PolicyFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut policy = match &file.preset {
            Some(p) => {
                Self::preset(p).ok_or_else(|| format!("preset = {p:?}: expected one of {}", PRESETS.join(", ")))?
            }
            None => Self::preset("fp32").expect("fp32 is a preset"),
        };
        policy.name = name.into();
        for (group, key, slot) in [
            (&file.vision, "vision", &mut policy.vision),
            (&file.connector, "connector", &mut policy.connector),
            (&file.language, "language", &mut policy.language),
            (&file.lm_head, "lm_head", &mut policy.lm_head),
        ] {
            if let Some(g) = group {
                if g.layers.is_some() {
                    return Err(format!("{key}.layers: only [[override]] tables name layers"));
                }
                *slot = g.resolve(key, *slot)?;
            }
        }
        if let Some(kv) = &file.kv_cache {
            // The cache is held as activations are (asymmetric, per tensor): int8 or int16.
            if ![8, 16].contains(&kv.bits) {
                return Err(format!("kv_cache.bits = {}: expected 8 or 16", kv.bits));
            }
            policy.kv_cache_bits = Some(kv.bits);
        }
        for (i, o) in file.overrides.iter().enumerate() {
            let layers = o.layers.clone().ok_or_else(|| format!("override[{i}]: needs layers = \"<pattern>\""))?;
            let p = o.resolve(&format!("override[{i}] ({layers:?})"), Precision::default())?;
            policy.overrides.push((layers, p));
        }
        Ok(policy)
    }

    /// The precision of the parameter or layer at `path` in `group`: the last matching
    /// override, else the group's.
    pub fn precision_of(&self, group: Group, path: &str) -> Precision {
        if let Some((_, p)) = self.overrides.iter().rev().find(|(pattern, _)| glob_match(pattern, path)) {
            return *p;
        }
        match group {
            Group::Vision => self.vision,
            Group::Connector => self.connector,
            Group::Language => self.language,
            Group::LmHead => self.lm_head,
            Group::KvCache => Precision::default(),
        }
    }
}

/// `*` matches any run of characters (dots included); everything else literally.
fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || !text[first.len()..].ends_with(last) || text.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(at) => rest = &rest[at + mid.len()..],
            None => return false,
        }
    }
    true
}

// ---- the file format ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    preset: Option<String>,
    vision: Option<GroupFile>,
    connector: Option<GroupFile>,
    language: Option<GroupFile>,
    lm_head: Option<GroupFile>,
    kv_cache: Option<KvFile>,
    #[serde(default, rename = "override")]
    overrides: Vec<GroupFile>,
}

/// A group's table, or an `[[override]]` (which names its `layers`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupFile {
    layers: Option<String>,
    weights: Option<WeightsFile>,
    activations: Option<ActivationsFile>,
    /// `true` leaves the group in float (over a preset).
    #[serde(default)]
    float: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KvFile {
    bits: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightsFile {
    bits: u32,
    #[serde(default = "default_granularity")]
    granularity: String,
    block_size: Option<usize>,
    scale_bits: Option<u32>,
}

fn default_granularity() -> String {
    "per_channel".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActivationsFile {
    bits: u32,
    #[serde(default = "default_calibration")]
    calibration: String,
    percentile: Option<f64>,
}

fn default_calibration() -> String {
    "min_max".into()
}

impl GroupFile {
    fn resolve(&self, key: &str, base: Precision) -> std::result::Result<Precision, String> {
        if self.float {
            return Ok(Precision::default());
        }
        let mut p = base;
        if let Some(w) = &self.weights {
            p.weights = Some(w.resolve(key)?);
        }
        if let Some(a) = &self.activations {
            p.activations = Some(a.resolve(key)?);
        }
        Ok(p)
    }
}

impl WeightsFile {
    fn resolve(&self, key: &str) -> std::result::Result<WeightScheme, String> {
        if !WEIGHT_BITS.contains(&self.bits) {
            return Err(format!("{key}.weights.bits = {}: expected 2 to 16", self.bits));
        }
        let block = |what: &str| {
            self.block_size
                .filter(|&b| b > 0)
                .ok_or_else(|| format!("{key}.weights: granularity {what:?} needs block_size (e.g. 64)"))
        };
        let granularity = match self.granularity.as_str() {
            "per_tensor" => Granularity::PerTensor,
            "per_channel" => Granularity::PerChannel,
            "per_block" => Granularity::PerBlock { block_size: block("per_block")? },
            "lpbq" => {
                let scale_bits = self.scale_bits.unwrap_or(4);
                if !(1..=8).contains(&scale_bits) {
                    return Err(format!("{key}.weights.scale_bits = {scale_bits}: expected 1 to 8"));
                }
                Granularity::Lpbq { block_size: block("lpbq")?, scale_bits }
            }
            other => {
                return Err(format!(
                    "{key}.weights.granularity = {other:?}: expected per_tensor, per_channel, per_block or lpbq"
                ));
            }
        };
        Ok(WeightScheme { bits: self.bits, granularity })
    }
}

impl ActivationsFile {
    fn resolve(&self, key: &str) -> std::result::Result<ActivationScheme, String> {
        if !ACTIVATION_BITS.contains(&self.bits) {
            return Err(format!("{key}.activations.bits = {}: expected 8 or 16", self.bits));
        }
        let calibration = match (self.calibration.as_str(), self.percentile) {
            ("min_max", None) => Calibration::MinMax,
            ("percentile", Some(p)) if p > 50.0 && p <= 100.0 => Calibration::Percentile(p),
            ("percentile", p) => {
                return Err(format!("{key}.activations.percentile = {p:?}: expected a value in (50, 100]"));
            }
            ("min_max", Some(_)) => {
                return Err(format!("{key}.activations: percentile needs calibration = \"percentile\""));
            }
            (other, _) => {
                return Err(format!("{key}.activations.calibration = {other:?}: expected min_max or percentile"));
            }
        };
        Ok(ActivationScheme { bits: self.bits, calibration })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets() {
        let p = PrecisionPolicy::preset("autoneural").unwrap();
        assert_eq!(p.vision.weights.unwrap().bits, 8);
        assert_eq!(p.vision.activations.unwrap().bits, 16);
        assert_eq!(p.language.weights.unwrap().granularity, Granularity::Lpbq { block_size: 64, scale_bits: 4 });
        assert_eq!(p.lm_head.weights.unwrap(), WeightScheme { bits: 8, granularity: Granularity::PerChannel });
        assert_eq!(p.kv_cache_bits, Some(8));
        assert_eq!(PrecisionPolicy::preset("fp32").unwrap().language, Precision::default());
        assert!(PrecisionPolicy::preset("int3").is_none());
    }

    #[test]
    fn files_override_presets_and_layers() {
        let text = r#"
preset = "w8a16"
[language]
weights = { bits = 4, granularity = "per_block", block_size = 32 }
[lm_head]
float = true
[[override]]
layers = "language.model.layers.0.*"
weights = { bits = 8 }
"#;
        let p = PrecisionPolicy::from_toml(text, "mine").unwrap();
        assert_eq!(p.name, "mine");
        assert_eq!(p.language.weights.unwrap().granularity, Granularity::PerBlock { block_size: 32 });
        assert_eq!(p.language.activations.unwrap().bits, 16, "kept from the preset");
        assert_eq!(p.lm_head, Precision::default());
        let first = p.precision_of(Group::Language, "language.model.layers.0.feed_forward.w1.weight");
        assert_eq!(first.weights.unwrap().bits, 8);
        let other = p.precision_of(Group::Language, "language.model.layers.1.feed_forward.w1.weight");
        assert_eq!(other.weights.unwrap().bits, 4);
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("[visoin]\nweights = { bits = 8 }", "visoin"),
            ("[vision]\nweights = { bits = 1 }", "vision.weights.bits = 1"),
            ("[vision]\nweights = { bits = 32 }", "expected 2 to 16"),
            ("[language]\nactivations = { bits = 12 }", "language.activations.bits = 12: expected 8 or 16"),
            ("[language]\nweights = { bits = 4, granularity = \"lpbq\" }", "needs block_size"),
            ("[language]\nweights = { bits = 4, granularity = \"rows\" }", "granularity = \"rows\""),
            ("preset = \"int3\"", "preset = \"int3\""),
            ("[kv_cache]\nbits = 0", "kv_cache.bits"),
            ("[kv_cache]\nbits = 4", "kv_cache.bits = 4: expected 8 or 16"),
            ("[vision]\nweights = { bits = 8, scale = 2 }", "scale"),
            ("[vision]\nlayers = \"x\"", "only [[override]]"),
            ("[[override]]\nweights = { bits = 8 }", "needs layers"),
        ];
        for (text, key) in cases {
            let err = PrecisionPolicy::from_toml(text, "t").unwrap_err();
            assert!(err.contains(key), "expected {key:?} in: {err}");
        }
        let err = PrecisionPolicy::load("no-such-policy.toml").unwrap_err().to_string();
        assert!(err.contains("neither a preset"), "{err}");
    }

    #[test]
    fn globs() {
        assert!(glob_match("a.*.w", "a.b.c.w"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("language.*", "language.x"));
        assert!(!glob_match("language.*.w1", "language.x.w2"));
        assert!(glob_match("exact", "exact") && !glob_match("exact", "exact2"));
        assert!(!glob_match("ab*ba", "aba"));
    }
}
