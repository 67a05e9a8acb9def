//! `index serve`: the lab page and JSON API.

use crate::common::Common;
use anyhow::{Context, Result};
use index::embed;

/// Serve the lab page and JSON API (127.0.0.1 only by default).
#[derive(clap::Args)]
pub struct ServeArgs {
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: std::net::SocketAddr,
    /// Neighbours shown per query.
    #[arg(short, default_value_t = 12)]
    pub k: usize,
    /// Let the page relabel and remove cells (the map's lasso) on a non-loopback address too;
    /// on loopback they are always on. There is no login.
    #[arg(long)]
    pub allow_edits: bool,
    /// No edits from the page, even on loopback.
    #[arg(long, conflicts_with = "allow_edits")]
    pub read_only: bool,
    #[command(flatten)]
    pub common: Common,
}

/// Run `index serve`.
pub fn serve(args: ServeArgs) -> Result<u8> {
    let ServeArgs {
        addr,
        k,
        allow_edits,
        read_only,
        common,
    } = args;
    let (index, mut embedder) =
        embed::open_with_model(&common.dir(), common.model.as_deref(), &common.opts())?;
    common.for_queries(&mut embedder)?;
    let n = index.live();
    let mut state = index::serve::AppState::watching(&common.dir(), index, embedder, k);
    state.edits = !read_only && (allow_edits || addr.ip().is_loopback());
    if !addr.ip().is_loopback() {
        eprintln!(
            "WARNING: serving on {addr}, not loopback: anyone who can reach this machine can query the atlas and see its cells. There is no login. Use 127.0.0.1 unless the network is trusted, and list the host names clients use in CELLSPACE_ALLOWED_HOSTS."
        );
    }
    let bound =
        index::serve::spawn(state, addr).with_context(|| format!("cannot listen on {addr}"))?;
    println!("cellspace lab tool: http://{bound}/  ({n} cells; Ctrl-C to stop)");
    loop {
        std::thread::park();
    }
}
