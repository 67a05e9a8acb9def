//! Execution providers, after ort's own `src/ep/`: one file per provider behind the small
//! [`ExecutionProvider`] trait, and one preference list, [`PREFERENCE`], that `--device auto`
//! walks in order and that `--device NAME` is parsed against. Adding a provider is a file here
//! and one line in that list, which declares its module too; the command lines list
//! `--device` values from it. (TensorRT's own options, `EmbedOptions::fp16` and `trt_cache`,
//! are in the options every provider gets. `cargo fmt` does not follow a module declared by a
//! macro: `scripts/test.sh` checks these files' formatting by name.)

use crate::EmbedOptions;
use std::fmt;

/// The ort registration of a provider.
pub type Dispatch = ort::ep::ExecutionProviderDispatch;

/// One onnxruntime execution provider as the runtime uses it.
pub trait ExecutionProvider: Sync {
    /// Its `--device` value (lowercase).
    fn name(&self) -> &'static str;
    /// How it is printed ("CUDA").
    fn label(&self) -> &'static str;
    /// Whether this build carries it (its cargo feature is on).
    fn compiled(&self) -> bool;
    /// Its ort registration for these options; `None` for onnxruntime's built-in CPU provider.
    fn dispatch(&self, opts: &EmbedOptions) -> Result<Option<Dispatch>, ProviderError>;
    /// What it needs on the machine, said when it fails to start.
    fn needs(&self) -> &'static str {
        ""
    }
    /// Whether it is always there, so that its failure to start is the model's fault.
    fn always_there(&self) -> bool {
        false
    }
}

/// The preference list: `module::Provider` per entry, fastest first, declares `module` (the
/// file beside this one) and makes [`PREFERENCE`].
macro_rules! providers {
    ($($module:ident :: $provider:ident),+ $(,)?) => {
        $(mod $module;)+

        /// Every provider, fastest first: the order `--device auto` tries them in.
        pub static PREFERENCE: &[&dyn ExecutionProvider] = &[$(&$module::$provider),+];
    };
}

providers![tensorrt::TensorRt, cuda::Cuda, cpu::Cpu];

/// Why a provider could not be set up or started.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error(
        "this build has no `{feature}` feature (build it with --features {feature}: cargo build --release -p runtime --features {feature}, or -p index --features {feature})"
    )]
    NotCompiled { feature: &'static str },
    #[error("TensorRT engine cache {path}")]
    Cache {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// onnxruntime refused the provider or the model on it; `needs` says what it lacks.
    #[error("onnxruntime refused it{needs}")]
    Ort {
        #[source]
        source: ort::Error,
        needs: &'static str,
    },
    /// onnxruntime could not make a session at all (before any provider).
    #[error("onnxruntime could not make a session")]
    Session {
        #[source]
        source: ort::Error,
    },
}

/// Where inference runs: the first provider that starts, or one named.
#[derive(Clone, Copy)]
pub enum Device {
    /// Every compiled provider in [`PREFERENCE`] order (TensorRT, CUDA, CPU): the first that
    /// starts.
    Auto,
    /// This one; an error when it cannot start.
    One(&'static dyn ExecutionProvider),
}

impl Device {
    /// onnxruntime's CPU provider.
    pub const CPU: Device = Device::One(&cpu::Cpu);

    /// The providers to try, in order.
    pub fn candidates(self) -> Vec<&'static dyn ExecutionProvider> {
        match self {
            Device::Auto => PREFERENCE
                .iter()
                .copied()
                .filter(|p| p.compiled())
                .collect(),
            Device::One(p) => vec![p],
        }
    }

    /// The `--device` value.
    pub fn name(self) -> &'static str {
        match self {
            Device::Auto => "auto",
            Device::One(p) => p.name(),
        }
    }

    /// How it is printed.
    pub fn label(self) -> &'static str {
        match self {
            Device::Auto => "auto",
            Device::One(p) => p.label(),
        }
    }
}

impl PartialEq for Device {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}
impl Eq for Device {}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl serde::Serialize for Device {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// A `--device` value that names no provider.
#[derive(Debug, thiserror::Error)]
#[error("unknown device `{given}` (one of: {})", Device::names().join(", "))]
pub struct UnknownDevice {
    given: String,
}

impl Device {
    /// Every `--device` value: `auto`, then each provider's name in preference order.
    pub fn names() -> Vec<&'static str> {
        std::iter::once("auto")
            .chain(PREFERENCE.iter().map(|p| p.name()))
            .collect()
    }
}

impl std::str::FromStr for Device {
    type Err = UnknownDevice;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name = s.trim().to_ascii_lowercase();
        if name == "auto" {
            return Ok(Device::Auto);
        }
        PREFERENCE
            .iter()
            .find(|p| p.name() == name)
            .map(|p| Device::One(*p))
            .ok_or_else(|| UnknownDevice {
                given: s.to_string(),
            })
    }
}

/// The providers this build carries, as printed (`CPU, CUDA`), in preference order reversed
/// so that the CPU comes first.
pub fn compiled_labels() -> Vec<&'static str> {
    PREFERENCE
        .iter()
        .rev()
        .filter(|p| p.compiled())
        .map(|p| p.label())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_provider_parses_by_its_name_and_nothing_else_does() {
        for p in PREFERENCE {
            let d: Device = p.name().parse().unwrap();
            assert_eq!(d.name(), p.name());
            let d: Device = p.name().to_uppercase().parse().unwrap();
            assert_eq!(d.name(), p.name());
        }
        assert_eq!("auto".parse::<Device>().unwrap(), Device::Auto);
        let err = "Vulkan".parse::<Device>().unwrap_err().to_string();
        assert!(
            err.contains("Vulkan") && err.contains("auto, tensorrt, cuda, cpu"),
            "{err}"
        );
    }

    #[test]
    fn auto_tries_the_compiled_providers_fastest_first_and_ends_on_the_cpu() {
        let order: Vec<&str> = Device::Auto.candidates().iter().map(|p| p.name()).collect();
        assert_eq!(order.last(), Some(&"cpu"));
        let mut expected = vec![];
        if cfg!(feature = "tensorrt") {
            expected.push("tensorrt");
        }
        if cfg!(feature = "cuda") {
            expected.push("cuda");
        }
        expected.push("cpu");
        assert_eq!(order, expected);
        assert_eq!(Device::CPU.candidates().len(), 1);
        assert!(Device::CPU.candidates()[0].always_there());
    }
}
