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

/// Where to train (`--device`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainDevice {
    /// The fastest CPU backend built in: LibTorch when built with it, else flex.
    Cpu,
    Flex,
    Libtorch,
    /// A GPU: LibTorch on CUDA when built with it, else burn's Vulkan backend (also `gpu`).
    Cuda,
    LibtorchCuda,
    Vulkan,
}

impl TrainDevice {
    /// Every device with its name, as `--device` takes it.
    pub const NAMES: [(&'static str, TrainDevice); 7] = [
        ("cpu", TrainDevice::Cpu),
        ("flex", TrainDevice::Flex),
        ("libtorch", TrainDevice::Libtorch),
        ("cuda", TrainDevice::Cuda),
        ("gpu", TrainDevice::Cuda),
        ("libtorch-cuda", TrainDevice::LibtorchCuda),
        ("vulkan", TrainDevice::Vulkan),
    ];
}

impl std::str::FromStr for TrainDevice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, d)| *d)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::NAMES.iter().map(|(n, _)| *n).collect();
                format!("unknown device {s:?}; expected one of {}", names.join(", "))
            })
    }
}

/// The plain (non-autodiff) device for a `--device` choice.
pub fn select(device: TrainDevice) -> crate::Result<Device> {
    match device {
        TrainDevice::Cpu if cfg!(feature = "libtorch") => libtorch(),
        TrainDevice::Cpu | TrainDevice::Flex => Ok(Device::flex()),
        TrainDevice::Libtorch => libtorch(),
        TrainDevice::LibtorchCuda => cuda(),
        TrainDevice::Vulkan => vulkan(),
        TrainDevice::Cuda => cuda().or_else(|a| {
            vulkan().map_err(|b| crate::Error::Device(format!("no GPU backend: {a}; {b}")))
        }),
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
        let select = |name: &str| select(name.parse::<TrainDevice>().unwrap());
        assert_eq!(backend_name(&select("flex").unwrap()), "flex");
        let unknown = "tpu".parse::<TrainDevice>().unwrap_err();
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
