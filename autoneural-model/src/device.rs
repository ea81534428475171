//! Backend selection at run time: the model code is the same on every device.

use burn::tensor::Device;

use crate::error::{ModelError, Result};

/// `flex` (pure-Rust CPU, always built), `wgpu` (GPU; lavapipe on machines without one,
/// needs the `wgpu` cargo feature) or `cuda` (NVIDIA GPUs through Burn's CUDA backend, the
/// `cuda` feature). `wgpu:N` is the N-th discrete GPU, `cuda:N` the N-th CUDA device.
pub fn parse_device(name: &str) -> Result<Device> {
    let index = |prefix: &str, what: &str| {
        name.strip_prefix(prefix).map(|i| {
            i.parse::<usize>()
                .map_err(|_| ModelError::Invalid(format!("device {name:?}: expected {prefix}N with N {what}")))
        })
    };
    let (wgpu_index, cuda_index) = (index("wgpu:", "a discrete GPU index"), index("cuda:", "a CUDA device index"));
    match (name, wgpu_index, cuda_index) {
        ("flex" | "cpu", ..) => Ok(Device::flex()),
        #[cfg(feature = "wgpu")]
        ("wgpu", ..) => Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)),
        #[cfg(feature = "wgpu")]
        (_, Some(index), _) => Ok(Device::wgpu(burn::tensor::DeviceKind::DiscreteGpu(index?))),
        #[cfg(not(feature = "wgpu"))]
        ("wgpu", ..) | (_, Some(_), _) => {
            Err(ModelError::Invalid("this build has no wgpu backend: rebuild with `--features wgpu`".into()))
        }
        #[cfg(feature = "cuda")]
        ("cuda", ..) => Ok(Device::cuda(0)),
        #[cfg(feature = "cuda")]
        (_, _, Some(index)) => Ok(Device::cuda(index?)),
        #[cfg(not(feature = "cuda"))]
        ("cuda", ..) | (_, _, Some(_)) => {
            Err(ModelError::Invalid("this build has no CUDA backend: rebuild with `--features cuda`".into()))
        }
        (other, ..) => {
            Err(ModelError::Invalid(format!("unknown device {other:?} (expected flex, wgpu, wgpu:N, cuda or cuda:N)")))
        }
    }
}

/// A comma-separated list of devices for data-parallel training, the main device first:
/// `"flex"`, `"wgpu:0,wgpu:1"`, `"cuda:0,cuda:1"`, or `"flex,flex"` (two replicas sharing the CPU's cores).
pub fn parse_devices(list: &str) -> Result<Vec<Device>> {
    let names: Vec<&str> = list.split(',').map(str::trim).collect();
    if names.iter().any(|n| n.is_empty()) {
        return Err(ModelError::Invalid(format!("device list {list:?} has an empty entry")));
    }
    names.into_iter().map(parse_device).collect()
}

pub const DEVICES: &[&str] = &["flex", "wgpu", "cuda"];
