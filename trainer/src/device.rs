//! Choosing where burn computes: `cpu` is burn's `flex` backend (the fastest that builds
//! offline); `cuda`/`gpu` is burn's Vulkan backend, compiled in with the `gpu` feature (burn
//! 0.22's own CUDA backend downloads LLVM at build time and cannot build offline).

use burn::tensor::Device;

/// Device names accepted by `--device`.
pub const DEVICES: [&str; 4] = ["cpu", "cuda", "gpu", "vulkan"];

/// The plain (non-autodiff) device for a `--device` name.
pub fn select(name: &str) -> crate::Result<Device> {
    match name {
        "cpu" | "flex" => Ok(Device::flex()),
        "cuda" | "gpu" | "vulkan" => gpu(),
        other => Err(crate::Error::Device(format!(
            "unknown device {other:?}; expected one of {DEVICES:?}"
        ))),
    }
}

#[cfg(feature = "gpu")]
fn gpu() -> crate::Result<Device> {
    Ok(Device::vulkan(Default::default()))
}

#[cfg(not(feature = "gpu"))]
fn gpu() -> crate::Result<Device> {
    Err(crate::Error::Device(
        "this trainer was built without GPU support: rebuild with `cargo build --release -p trainer --features gpu` (burn's Vulkan backend; needs the NVIDIA driver's Vulkan ICD and libvulkan1)".into(),
    ))
}
