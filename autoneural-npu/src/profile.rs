//! A device profile: the handful of numbers the roofline needs, from a TOML file
//! (`profiles/*.toml`; unknown keys are errors naming the file and key).

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::ops::OpKind;

/// Sustained fraction of the peak MAC rate per op kind (0 < e <= 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Efficiency {
    pub matmul: f64,
    pub conv: f64,
    pub depthwise: f64,
    pub attention: f64,
}

/// What the cost model knows about an NPU. Units are in the key names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceProfile {
    /// Shown in every prediction.
    pub name: String,
    /// Peak integer throughput with 8-bit weights and activations, tera-ops/s (1 MAC = 2 ops).
    pub int8_tops: f64,
    /// Fraction of `int8_tops` with 16-bit integer activations (W8A16 and W4A16: 4-bit
    /// weights are widened to 8 bits on the fly, so they compute as W8A16).
    pub a16_rate: f64,
    /// Fraction of `int8_tops` for activation x activation products (attention) with
    /// 16-bit activations on both sides.
    pub a16xa16_rate: f64,
    /// Fraction of `int8_tops` with float activations (more than 16 bits).
    pub float_rate: f64,
    pub efficiency: Efficiency,
    /// Sustained DRAM bandwidth, GB/s (1e9 bytes/s).
    pub dram_gb_s: f64,
    /// On-chip memory (VTCM/TCM) that holds one op's activations, bytes.
    pub on_chip_bytes: u64,
    /// Bandwidth of activation traffic that stays on chip, GB/s.
    pub on_chip_gb_s: f64,
    /// Fixed cost of dispatching one op, microseconds.
    pub op_overhead_us: f64,
    /// Memory one session may hold, bytes: see [`super::roofline::footprint`].
    pub session_memory_bytes: u64,
}

/// Profiles shipped with the code: `(name, TOML)`.
pub const BUILTIN: &[(&str, &str)] = &[("sa8295p", include_str!("../../profiles/sa8295p.toml"))];

impl DeviceProfile {
    /// Parses a profile's text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self> {
        let p: Self = toml::from_str(text).map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        p.validate().with_context(|| origin.to_string())?;
        Ok(p)
    }

    /// Reads a profile file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = autoneural_io::read::read_to_string(path, autoneural_io::read::CONFIG)?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// A built-in profile by name (`sa8295p`).
    pub fn builtin(name: &str) -> Result<Self> {
        match BUILTIN.iter().find(|(n, _)| *n == name) {
            Some((n, text)) => Self::from_toml(text, &format!("built-in profile {n}")),
            None => {
                let known: Vec<&str> = BUILTIN.iter().map(|(n, _)| *n).collect();
                bail!("unknown device profile {name:?} (built in: {}; or give a .toml file)", known.join(", "))
            }
        }
    }

    /// A built-in name or a path to a `.toml` file.
    pub fn resolve(name_or_path: &str) -> Result<Self> {
        if BUILTIN.iter().any(|(n, _)| *n == name_or_path) {
            return Self::builtin(name_or_path);
        }
        let path = Path::new(name_or_path);
        if path.extension().is_some_and(|e| e == "toml") || path.exists() {
            return Self::load(path);
        }
        Self::builtin(name_or_path)
    }

    fn validate(&self) -> Result<()> {
        let e = &self.efficiency;
        let positive = [
            ("int8_tops", self.int8_tops),
            ("a16_rate", self.a16_rate),
            ("a16xa16_rate", self.a16xa16_rate),
            ("float_rate", self.float_rate),
            ("dram_gb_s", self.dram_gb_s),
            ("on_chip_gb_s", self.on_chip_gb_s),
            ("efficiency.matmul", e.matmul),
            ("efficiency.conv", e.conv),
            ("efficiency.depthwise", e.depthwise),
            ("efficiency.attention", e.attention),
        ];
        for (key, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                bail!("{key} = {v}: must be a positive number");
            }
        }
        for (key, v) in
            [("a16_rate", self.a16_rate), ("a16xa16_rate", self.a16xa16_rate), ("float_rate", self.float_rate)]
                .into_iter()
                .chain([
                    ("efficiency.matmul", e.matmul),
                    ("efficiency.conv", e.conv),
                    ("efficiency.depthwise", e.depthwise),
                ])
                .chain([("efficiency.attention", e.attention)])
        {
            if v > 1.0 {
                bail!("{key} = {v}: a fraction of the peak cannot exceed 1");
            }
        }
        if !(self.op_overhead_us.is_finite() && self.op_overhead_us >= 0.0) {
            bail!("op_overhead_us = {}: must be zero or positive", self.op_overhead_us);
        }
        if self.session_memory_bytes == 0 {
            bail!("session_memory_bytes: must be positive");
        }
        Ok(())
    }

    /// Multiply-accumulates per second of `kind` at `activation_bits`:
    /// `int8_tops * 1e12 / 2 * rate * efficiency[kind]`, where `rate` is 1 for 8-bit
    /// activations, `a16_rate` for 16-bit ones (`a16xa16_rate` for attention, whose both
    /// operands are activations) and `float_rate` above 16 bits.
    pub fn macs_per_s(&self, kind: OpKind, activation_bits: u32) -> f64 {
        let rate = match activation_bits {
            ..=8 => 1.0,
            9..=16 if kind == OpKind::Attention => self.a16xa16_rate,
            9..=16 => self.a16_rate,
            _ => self.float_rate,
        };
        let e = &self.efficiency;
        let eff = match kind {
            OpKind::Matmul => e.matmul,
            OpKind::Conv => e.conv,
            OpKind::Depthwise => e.depthwise,
            OpKind::Attention => e.attention,
            // No MACs in the others; a MAC-free op never divides by this.
            _ => 1.0,
        };
        self.int8_tops * 1e12 / 2.0 * rate * eff
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_profile_parses_and_bad_keys_are_named() {
        let p = DeviceProfile::builtin("sa8295p").unwrap();
        assert!(p.name.contains("SA8295P"));
        let text = BUILTIN[0].1.replace("dram_gb_s", "dram_gbs");
        let e = DeviceProfile::from_toml(&text, "x.toml").unwrap_err().to_string();
        assert!(e.contains("x.toml") && e.contains("dram_gbs"), "{e}");
        let text = BUILTIN[0].1.replace("a16_rate = ", "a16_rate = 2.0 # ");
        let e = format!("{:#}", DeviceProfile::from_toml(&text, "y.toml").unwrap_err());
        assert!(e.contains("y.toml") && e.contains("a16_rate"), "{e}");
        assert!(DeviceProfile::builtin("nope").unwrap_err().to_string().contains("sa8295p"));
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.toml");
        assert!(DeviceProfile::resolve(missing.to_str().unwrap()).unwrap_err().to_string().contains("missing.toml"));
    }
}
