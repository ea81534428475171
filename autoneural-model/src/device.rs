//! Backend selection at run time: the model code is the same on every device.

use burn::tensor::Device;

use crate::error::{ModelError, Result};

/// `flex` (pure-Rust CPU, always built) or `wgpu` (GPU; lavapipe on machines without one,
/// needs the `wgpu` cargo feature).
/// `wgpu:N` is the N-th discrete GPU.
pub fn parse_device(name: &str) -> Result<Device> {
    let gpu_index = name.strip_prefix("wgpu:").map(|i| {
        i.parse::<usize>()
            .map_err(|_| ModelError::Invalid(format!("device {name:?}: expected wgpu:N with N a discrete GPU index")))
    });
    match (name, gpu_index) {
        ("flex" | "cpu", _) => Ok(Device::flex()),
        #[cfg(feature = "wgpu")]
        ("wgpu", _) => Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)),
        #[cfg(feature = "wgpu")]
        (_, Some(index)) => Ok(Device::wgpu(burn::tensor::DeviceKind::DiscreteGpu(index?))),
        #[cfg(not(feature = "wgpu"))]
        ("wgpu", _) | (_, Some(_)) => {
            Err(ModelError::Invalid("this build has no wgpu backend: rebuild with `--features wgpu`".into()))
        }
        (other, None) => Err(ModelError::Invalid(format!("unknown device {other:?} (expected flex, wgpu or wgpu:N)"))),
    }
}

/// A comma-separated list of devices for data-parallel training, the main device first:
/// `"flex"`, `"wgpu:0,wgpu:1"`, or `"flex,flex"` (two replicas sharing the CPU's cores).
pub fn parse_devices(list: &str) -> Result<Vec<Device>> {
    let names: Vec<&str> = list.split(',').map(str::trim).collect();
    if names.iter().any(|n| n.is_empty()) {
        return Err(ModelError::Invalid(format!("device list {list:?} has an empty entry")));
    }
    names.into_iter().map(parse_device).collect()
}

pub const DEVICES: &[&str] = &["flex", "wgpu"];
