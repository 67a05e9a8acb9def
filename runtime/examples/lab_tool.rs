//! A ten-line lab tool: embed the cell images given on the command line with the default model
//! and print, for each, its nearest other image by cosine similarity.
//! `cargo run --release -p runtime --example lab_tool -- a.jpeg b.jpeg c.jpeg`

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let paths: Vec<std::path::PathBuf> = std::env::args().skip(1).map(Into::into).collect();
    let model = runtime::default_model().ok_or("no models/cellspace.json found")?;
    let embedder = runtime::Embedder::from_model_card(model)?;
    let embeddings = embedder.embed_paths(&paths, |_| {});
    for (i, a) in embeddings.iter().enumerate() {
        let Ok(a) = a else { continue };
        let best = embeddings
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .filter_map(|(j, b)| Some((j, cellspace_core::metrics::dot(a, b.as_ref().ok()?))));
        if let Some((j, sim)) = best.max_by(|x, y| x.1.total_cmp(&y.1)) {
            println!("{} ~ {} ({sim:.3})", paths[i].display(), paths[j].display());
        }
    }
    Ok(())
}
