//! NVIDIA TensorRT through onnxruntime-gpu (cargo feature `tensorrt`): engines cached on disk
//! (`--trt-cache`), FP16 on request (`--fp16`).

use super::{Dispatch, ExecutionProvider, ProviderError};
use crate::EmbedOptions;

pub struct TensorRt;

impl ExecutionProvider for TensorRt {
    fn name(&self) -> &'static str {
        "tensorrt"
    }
    fn label(&self) -> &'static str {
        "TensorRT"
    }
    fn compiled(&self) -> bool {
        cfg!(feature = "tensorrt")
    }
    #[cfg(feature = "tensorrt")]
    fn dispatch(&self, opts: &EmbedOptions) -> Result<Option<Dispatch>, ProviderError> {
        let cache = opts
            .trt_cache
            .clone()
            .unwrap_or_else(crate::embedder::default_trt_cache);
        std::fs::create_dir_all(&cache).map_err(|source| ProviderError::Cache {
            path: cache.clone(),
            source,
        })?;
        Ok(Some(
            ort::ep::TensorRT::default()
                .with_engine_cache(true)
                .with_engine_cache_path(cache.display().to_string())
                .with_timing_cache(true)
                .with_fp16(opts.fp16)
                .build()
                .error_on_failure(),
        ))
    }
    #[cfg(not(feature = "tensorrt"))]
    fn dispatch(&self, _: &EmbedOptions) -> Result<Option<Dispatch>, ProviderError> {
        Err(ProviderError::NotCompiled {
            feature: "tensorrt",
        })
    }
    fn needs(&self) -> &'static str {
        " (the TensorRT provider needs the onnxruntime-gpu library and TensorRT 10's libnvinfer.so.10 on the library path)"
    }
}
