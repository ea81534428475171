//! One model on every backend (one test binary: each links the wgpu backend, which costs
//! CI a minute of linking): the same seed draws the same model on flex and wgpu (`init`),
//! and training on wgpu (and CUDA) follows training on flex (`training`). Built with
//! `--features wgpu` (Mesa's lavapipe without a GPU) and `--features cuda`.
#![cfg(any(feature = "wgpu", feature = "cuda"))]

#[cfg(feature = "wgpu")]
mod init;
mod training;
