//! Pretrained initialisation: `--init weights.pth|.safetensors` loads torchvision-style ResNet
//! weights (the original method starts from ImageNet ResNet-18) into the encoder through
//! burn-store. Layer names follow torchvision; its `downsample.0/1` become `downsample.conv/bn`
//! and its 1000-class `fc` is left out (the embedding layer starts fresh).

use crate::Result;
use crate::model::Encoder;
use burn::store::{ModuleSnapshot, PyTorchToBurnAdapter, PytorchStore, SafetensorsStore};
use std::path::Path;

/// What loading pretrained weights did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InitReport {
    pub applied: usize,
    pub missing: Vec<String>,
    pub unused: Vec<String>,
}

const REMAP: [(&str, &str); 2] = [
    (r"downsample\.0\.", "downsample.conv."),
    (r"downsample\.1\.", "downsample.bn."),
];

/// Load a torchvision-style checkpoint into `model`. Fails when nothing matched, so a wrong
/// file is never silently ignored.
pub fn load_pretrained(mut model: Encoder, path: &Path) -> Result<(Encoder, InitReport)> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let fail = |e: String| crate::checkpoint::record_err(path, e);
    // the two stores share these builder methods but no trait that carries them
    macro_rules! load_through {
        ($store:expr) => {{
            let mut store = $store.allow_partial(true);
            for (from, to) in REMAP {
                store = store.with_key_remapping(from, to);
            }
            let mut store = store.with_predicate(keep);
            model
                .load_from(&mut store)
                .map_err(|e| crate::checkpoint::record_err(path, e))?
        }};
    }
    let result = match ext.as_str() {
        "pth" | "pt" => load_through!(PytorchStore::from_file(path)),
        "safetensors" => {
            load_through!(SafetensorsStore::from_file(path).with_from_adapter(PyTorchToBurnAdapter))
        }
        _ => {
            return Err(fail(
                "pretrained weights must be .pth, .pt or .safetensors".into(),
            ));
        }
    };
    if !result.errors.is_empty() {
        return Err(fail(format!("{:?}", result.errors)));
    }
    if result.applied.is_empty() {
        return Err(fail("no parameter matched this encoder (is it a torchvision ResNet checkpoint of the chosen --arch?)".into()));
    }
    let report = InitReport {
        applied: result.applied.len(),
        missing: result.missing.iter().map(|(p, _)| p.clone()).collect(),
        unused: result.unused.clone(),
    };
    Ok((model, report))
}

/// Parameters taken from a checkpoint: all but the classifier `fc` (torchvision's has 1000
/// outputs) and the projection head.
fn keep(path: &str, _container: &str) -> bool {
    !(path.starts_with("fc.") || path.starts_with("head."))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EncoderConfig;
    use burn::prelude::*;
    use burn::store::BurnToPyTorchAdapter;

    #[test]
    fn torchvision_named_safetensors_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("resnet.safetensors");
        let device = Device::flex();
        device.seed(1);
        let cfg = EncoderConfig::small();
        let source = cfg.init(&device);
        // write it the way PyTorch names things: downsample.0/1, weight/bias for batch norm
        let mut store = SafetensorsStore::from_file(&file)
            .with_to_adapter(BurnToPyTorchAdapter)
            .with_key_remapping(r"downsample\.conv\.", "downsample.0.")
            .with_key_remapping(r"downsample\.bn\.", "downsample.1.");
        source.save_into(&mut store).unwrap();
        let fresh = cfg.init(&device);
        let (loaded, report) = load_pretrained(fresh, &file).unwrap();
        assert!(report.applied > 20, "{report:?}");
        let a = source.layer2[0]
            .downsample
            .as_ref()
            .unwrap()
            .conv
            .weight
            .val()
            .into_data();
        let b = loaded.layer2[0]
            .downsample
            .as_ref()
            .unwrap()
            .conv
            .weight
            .val()
            .into_data();
        assert_eq!(a, b);
        let fa = source.fc.weight.val().into_data();
        let fb = loaded.fc.weight.val().into_data();
        assert_ne!(fa, fb, "fc is never taken from a checkpoint");
    }

    #[test]
    fn wrong_extension_is_a_clear_error() {
        let m = EncoderConfig::small().init(&Device::flex());
        // as the CLI prints it: the message, then its source
        let e = cellspace_core::error_text(&load_pretrained(m, Path::new("w.bin")).unwrap_err());
        assert!(e.contains("w.bin") && e.contains(".safetensors"), "{e}");
    }
}
