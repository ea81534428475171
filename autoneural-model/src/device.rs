//! Backend selection at run time: the model code is the same on every device.

use burn::tensor::Device;

use crate::error::{ModelError, Result};

/// `flex` (pure-Rust CPU, always built) or `wgpu` (GPU; lavapipe on machines without one,
/// needs the `wgpu` cargo feature).
pub fn parse_device(name: &str) -> Result<Device> {
    match name {
        "flex" | "cpu" => Ok(Device::flex()),
        #[cfg(feature = "wgpu")]
        "wgpu" => Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)),
        #[cfg(not(feature = "wgpu"))]
        "wgpu" => Err(ModelError::Invalid("this build has no wgpu backend: rebuild with `--features wgpu`".into())),
        other => Err(ModelError::Invalid(format!("unknown device {other:?} (expected flex or wgpu)"))),
    }
}

pub const DEVICES: &[&str] = &["flex", "wgpu"];
