//! The served graph traced into ONNX: the encoder (under test-time views, [`crate::tta`]),
//! blended with the in-graph colour histogram or not, with a dynamic batch axis; and the
//! graph's input and output names read back from the file.

use crate::colour::{ColourHistogram, RetrievalModel, served};
use crate::model::{EmbeddingOutput, Encoder};
use crate::tta::{TestTimeViews, ViewedEncoder};
use crate::{Error, Result};
use burn::prelude::*;
use burn_onnx::export::{AxisSpec, InputSpec, OnnxExporter};

/// Export `model` (inference mode, plain device) to ONNX bytes; `[B, 3, S, S] -> [B, D]`,
/// the learned half averaged over `views` ([`crate::tta`]). One view exports the modules
/// themselves, so their files (and weight names) are as before test-time views.
pub fn onnx_bytes(
    model: &RetrievalModel,
    which: EmbeddingOutput,
    views: TestTimeViews,
    colour_weight: f32,
    size: u32,
) -> Result<Vec<u8>> {
    // without the colour half, the encoder alone: no unused histogram weights in the file
    let learned_only = colour_weight <= 0.0;
    match views {
        TestTimeViews::None if learned_only => {
            capture(&model.encoder, size, |m: &Encoder, x| m.output(which, x))
        }
        TestTimeViews::None => capture(model, size, |m: &RetrievalModel, x| {
            m.forward(x, which, colour_weight)
        }),
        TestTimeViews::Dihedral8 => {
            let served = ServedGraph {
                encoder: ViewedEncoder::new(model.encoder.clone(), views),
                colour: model.colour.clone(),
            };
            if learned_only {
                capture(&served.encoder, size, |m: &ViewedEncoder, x| {
                    m.output(which, x)
                })
            } else {
                capture(&served, size, |m: &ServedGraph, x| {
                    m.forward(x, which, colour_weight)
                })
            }
        }
    }
}

/// `forward` of `module` traced into ONNX with a dynamic batch axis over `size`-px inputs.
fn capture<M: burn::module::Module>(
    module: &M,
    size: u32,
    forward: impl Fn(&M, Tensor<4>) -> Tensor<2>,
) -> Result<Vec<u8>> {
    let s = size as usize;
    let device = Device::flex();
    let sample = Tensor::<4>::zeros([2, 3, s, s], &device);
    let validation = Tensor::<4>::zeros([3, 3, s, s], &device);
    let specs = [InputSpec::new([
        AxisSpec::dynamic("batch"),
        AxisSpec::Static,
        AxisSpec::Static,
        AxisSpec::Static,
    ])];
    let onnx = OnnxExporter::new()
        .export_dynamic(module, sample, validation, &specs, forward)
        .map_err(|e| Error::Export { source: e.into() })?;
    Ok(onnx.into_bytes())
}

/// [`RetrievalModel`] with its encoder served under test-time views.
#[derive(Module, Debug)]
struct ServedGraph {
    encoder: ViewedEncoder,
    colour: ColourHistogram,
}

impl ServedGraph {
    fn forward(&self, x: Tensor<4>, which: EmbeddingOutput, colour_weight: f32) -> Tensor<2> {
        served(&self.colour, x, colour_weight, |x| {
            self.encoder.output(which, x)
        })
    }
}

/// Names of the single graph input and output of an ONNX model (a minimal protobuf walk:
/// ModelProto.graph = 7, GraphProto.input = 11 / output = 12, ValueInfoProto.name = 1).
pub fn graph_io_names(onnx: &[u8]) -> Option<(String, String)> {
    let graph = fields(onnx).into_iter().find(|(f, _)| *f == 7)?.1;
    let name_of = |v: &[u8]| -> Option<String> {
        let n = fields(v).into_iter().find(|(f, _)| *f == 1)?.1;
        String::from_utf8(n.to_vec()).ok()
    };
    let gf = fields(graph);
    let inputs: Vec<String> = gf
        .iter()
        .filter(|(f, _)| *f == 11)
        .filter_map(|(_, v)| name_of(v))
        .collect();
    let outputs: Vec<String> = gf
        .iter()
        .filter(|(f, _)| *f == 12)
        .filter_map(|(_, v)| name_of(v))
        .collect();
    match (inputs.as_slice(), outputs.as_slice()) {
        ([i], [o]) => Some((i.clone(), o.clone())),
        _ => None,
    }
}

/// Length-delimited fields (wire type 2) of a protobuf message; other wire types are skipped.
fn fields(mut b: &[u8]) -> Vec<(u64, &[u8])> {
    fn varint(b: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = b.split_first()?;
            *b = rest;
            v |= ((byte & 0x7f) as u64) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let Some(key) = varint(&mut b) else { break };
        match key & 7 {
            0 => {
                if varint(&mut b).is_none() {
                    break;
                }
            }
            1 => b = b.get(8..).unwrap_or_default(),
            5 => b = b.get(4..).unwrap_or_default(),
            2 => {
                let Some(len) = varint(&mut b) else { break };
                let len = len as usize;
                if len > b.len() {
                    break;
                }
                out.push((key >> 3, &b[..len]));
                b = &b[len..];
            }
            _ => break,
        }
    }
    out
}
