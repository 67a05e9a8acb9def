//! Choosing where burn computes. `flex` is burn's pure-Rust backend, always built. `libtorch`
//! is burn's LibTorch backend (feature `libtorch`, our patched burn-tch in `vendor/`):
//! PyTorch's own CPU kernels under burn's autodiff, 4-5x faster to train here, at the cost of
//! a 0.5 GB library assembled from PyPI (`scripts/setup-libtorch.sh`). `cpu` is the fastest CPU
//! backend built in. `cuda`/`gpu` is LibTorch on CUDA (`libtorch-cuda`) when the trainer is
//! built with `libtorch` against a CUDA libtorch, otherwise burn's Vulkan backend (`vulkan`,
//! feature `gpu`); burn 0.22's own CUDA backend downloads LLVM at build time and cannot build
//! offline. Checkpoints are the same on every device (a run started on one resumes on
//! another), initial weights too (`train::fresh_encoder`), and export always runs on flex.

use burn::tensor::Device;

/// Device names accepted by `--device`: `cpu` is the fastest CPU backend built in (LibTorch
/// when built with it, else flex); `flex` and `libtorch` name one.
pub const DEVICES: [&str; 7] = [
    "cpu",
    "flex",
    "libtorch",
    "cuda",
    "gpu",
    "libtorch-cuda",
    "vulkan",
];

/// The plain (non-autodiff) device for a `--device` name.
pub fn select(name: &str) -> crate::Result<Device> {
    match name {
        "cpu" if cfg!(feature = "libtorch") => libtorch(),
        "cpu" | "flex" => Ok(Device::flex()),
        "libtorch" => libtorch(),
        "libtorch-cuda" => cuda(),
        "vulkan" => vulkan(),
        "cuda" | "gpu" => cuda().or_else(|a| {
            vulkan().map_err(|b| crate::Error::Device(format!("no GPU backend: {a}; {b}")))
        }),
        other => Err(crate::Error::Device(format!(
            "unknown device {other:?}; expected one of {DEVICES:?}"
        ))),
    }
}

/// A short name of the backend behind a device, from its debug form (`Flex`, `LibTorch(Cpu)`,
/// `LibTorch(Cuda(0))`): what reports and the model card say trained the model.
pub fn backend_name(device: &Device) -> String {
    let d = format!("{device:?}").to_lowercase();
    let name = ["libtorch", "flex", "vulkan"]
        .into_iter()
        .find(|b| d.contains(b))
        .unwrap_or(&d);
    match (name, d.contains("cuda")) {
        ("libtorch", true) => "libtorch-cuda".into(),
        (n, _) => n.into(),
    }
}

/// What the trainer was built with, for reports: "flex", "flex+libtorch", ...
pub fn backends() -> String {
    let mut b = vec!["flex"];
    if cfg!(feature = "libtorch") {
        b.push("libtorch");
    }
    if cfg!(feature = "gpu") {
        b.push("vulkan");
    }
    b.join("+")
}

#[cfg(feature = "libtorch")]
#[allow(deprecated)] // burn-tch is deprecated upstream; vendor/burn-tch is our patched copy
fn libtorch() -> crate::Result<Device> {
    Ok(Device::libtorch())
}

#[cfg(not(feature = "libtorch"))]
fn libtorch() -> crate::Result<Device> {
    Err(crate::Error::Device(
        "this trainer was built without LibTorch: rebuild with `LIBTORCH=$(scripts/setup-libtorch.sh) cargo build --release -p trainer --features libtorch`".into(),
    ))
}

#[cfg(feature = "libtorch")]
#[allow(deprecated)]
fn cuda() -> crate::Result<Device> {
    if tch::Cuda::is_available() {
        Ok(Device::libtorch_cuda(0))
    } else {
        Err(crate::Error::Device(
            "LibTorch sees no CUDA device (a CPU libtorch, or no NVIDIA driver)".into(),
        ))
    }
}

#[cfg(not(feature = "libtorch"))]
fn cuda() -> crate::Result<Device> {
    Err(crate::Error::Device("built without LibTorch".into()))
}

#[cfg(feature = "gpu")]
fn vulkan() -> crate::Result<Device> {
    Ok(Device::vulkan(Default::default()))
}

#[cfg(not(feature = "gpu"))]
fn vulkan() -> crate::Result<Device> {
    Err(crate::Error::Device(
        "this trainer was built without GPU support: rebuild with `--features libtorch` against a CUDA libtorch (`pip install torch==2.9.0`, `LIBTORCH_USE_PYTORCH=1`), or `--features gpu` (burn's Vulkan backend; needs the NVIDIA driver's Vulkan ICD and libvulkan1)".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_or_say_how_to_get_them() {
        assert_eq!(backend_name(&select("flex").unwrap()), "flex");
        let unknown = select("tpu").unwrap_err().to_string();
        assert!(
            unknown.contains("libtorch") && unknown.contains("tpu"),
            "{unknown}"
        );
        let torch = select("libtorch");
        if cfg!(feature = "libtorch") {
            assert_eq!(backend_name(&torch.unwrap()), "libtorch");
            assert_eq!(backend_name(&select("cpu").unwrap()), "libtorch");
        } else {
            let e = torch.unwrap_err().to_string();
            assert!(e.contains("setup-libtorch.sh"), "says how to build it: {e}");
            assert_eq!(backend_name(&select("cpu").unwrap()), "flex");
        }
        if !cfg!(feature = "libtorch") && !cfg!(feature = "gpu") {
            let e = select("cuda").unwrap_err().to_string();
            assert!(
                e.contains("LibTorch") && e.contains("Vulkan"),
                "both reasons: {e}"
            );
        }
    }
}
