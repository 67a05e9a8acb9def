//! An uploaded field on the lab page: every white cell in it, one of them answered. The page
//! draws the field with a box per cell; a click on a box asks again for that cell
//! (`POST /api/query?cell=N`), so a field of several cells is never reduced to its largest.

use cellspace_core::locate::Location;
use image::RgbImage;
use serde::Serialize;

/// Longest side of the field picture the page draws the boxes on.
const FIELD_SIDE: u32 = 480;

/// The cell of an uploaded field that is answered, with what the page shows of the field.
pub struct UploadedCell {
    /// Its embedding and window.
    pub vector: Vec<f32>,
    pub window: Option<Location>,
    /// The window that was embedded (PNG data URL).
    pub crop: String,
    /// The field's cells, when it holds several (else None): what the page draws.
    pub field: Option<FieldCells>,
}

/// A field of several white cells as the page draws it.
#[derive(Debug, Clone, Serialize)]
pub struct FieldCells {
    /// The field, scaled to at most [`FIELD_SIDE`] px (PNG data URL).
    pub image: String,
    /// The field's size in its own pixels, which the boxes are in.
    pub size: [u32; 2],
    /// Each cell's box `[x0, y0, x1, y1]`, largest cell first.
    pub boxes: Vec<[u32; 4]>,
    /// Which of them this answer is for (0-based).
    pub cell: usize,
}

/// Why an uploaded field's cell cannot be answered.
#[derive(Debug)]
pub enum UploadError {
    /// `cell` is not one of the field's cells.
    NoSuchCell {
        cell: usize,
        cells: usize,
    },
    Embed(runtime::Error),
}

impl std::fmt::Display for UploadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UploadError::NoSuchCell { cell, cells } => write!(
                f,
                "cell={cell}: the field holds {cells} white cell(s), numbered from 0"
            ),
            UploadError::Embed(e) => f.write_str(&cellspace_core::error_text(e)),
        }
    }
}

/// Cell `cell` (0 = the largest) of an uploaded field, embedded; a one-cell field is answered
/// as it always was.
pub fn embed_cell(
    embedder: &runtime::Embedder,
    img: &RgbImage,
    cell: usize,
) -> Result<UploadedCell, UploadError> {
    let mut cells = embedder
        .embed_image_cells(img)
        .map_err(UploadError::Embed)?;
    let n = cells.len();
    if cell >= n {
        return Err(UploadError::NoSuchCell { cell, cells: n });
    }
    let boxes: Vec<[u32; 4]> = cells
        .iter()
        .filter_map(|(_, w)| w.as_ref().and_then(|w| w.cell_box))
        .collect();
    let (vector, window) = cells.swap_remove(cell);
    let pre = &embedder.card().preprocess;
    // the windows come in the same order as their embeddings
    let crop = crate::thumbs::thumb_png(&pre.cell_windows(img).swap_remove(cell).0);
    let field = (n > 1 && boxes.len() == n).then(|| FieldCells {
        image: crate::thumbs::png_data_url(&crate::thumbs::scaled_png(img, FIELD_SIDE)),
        size: [img.width(), img.height()],
        boxes,
        cell,
    });
    Ok(UploadedCell {
        vector,
        window,
        crop: crate::thumbs::png_data_url(&crop),
        field,
    })
}
