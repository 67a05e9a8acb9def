//! NVIDIA CUDA through onnxruntime-gpu (cargo feature `cuda`).

use super::{Dispatch, ExecutionProvider, ProviderError};
use crate::EmbedOptions;

pub struct Cuda;

impl ExecutionProvider for Cuda {
    fn name(&self) -> &'static str {
        "cuda"
    }
    fn label(&self) -> &'static str {
        "CUDA"
    }
    fn compiled(&self) -> bool {
        cfg!(feature = "cuda")
    }
    #[cfg(feature = "cuda")]
    fn dispatch(&self, _: &EmbedOptions) -> Result<Option<Dispatch>, ProviderError> {
        Ok(Some(ort::ep::CUDA::default().build().error_on_failure()))
    }
    #[cfg(not(feature = "cuda"))]
    fn dispatch(&self, _: &EmbedOptions) -> Result<Option<Dispatch>, ProviderError> {
        Err(ProviderError::NotCompiled { feature: "cuda" })
    }
    fn needs(&self) -> &'static str {
        " (the CUDA provider needs the onnxruntime-gpu library: CELLSPACE_ORT_GPU=1 scripts/setup-ort.sh, plus CUDA 13 and cuDNN 9 libraries, e.g. pip install onnxruntime-gpu[cuda,cudnn], and the NVIDIA driver's libcuda.so.1)"
    }
}
