//! onnxruntime's built-in CPU provider: always compiled, always there, registered by default.

use super::{Dispatch, ExecutionProvider, ProviderError};
use crate::EmbedOptions;

pub struct Cpu;

impl ExecutionProvider for Cpu {
    fn name(&self) -> &'static str {
        "cpu"
    }
    fn label(&self) -> &'static str {
        "CPU"
    }
    fn compiled(&self) -> bool {
        true
    }
    fn dispatch(&self, _: &EmbedOptions) -> Result<Option<Dispatch>, ProviderError> {
        Ok(None)
    }
    fn always_there(&self) -> bool {
        true
    }
}
