//! Writes the tiny untrained model the runtime and index tests use:
//! `cargo run --release -p trainer --example make_fixture_model -- tests/fixtures/tiny`
//! (16 px input, 8-d output, a few KB: the tests check plumbing, not quality).

use burn::prelude::*;
use cellspace_core::preprocess::Preprocess;
use trainer::export::{CardInfo, export_encoder};
use trainer::model::{EmbeddingOutput, EncoderConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let to = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "tests/fixtures/tiny".into());
    let device = Device::flex();
    device.seed(7);
    let model = EncoderConfig::new()
        .with_widths([4, 8, 8, 8])
        .with_dim(8)
        .init(&device);
    let info = CardInfo {
        training: serde_json::json!({"note": "untrained test fixture"}),
        ..Default::default()
    };
    let card = export_encoder(
        &model,
        EmbeddingOutput::Backbone,
        Default::default(),
        0.0,
        &Preprocess::blood_cells(16),
        info,
        std::path::Path::new(&to),
    )?;
    println!("{}", card.display());
    Ok(())
}
