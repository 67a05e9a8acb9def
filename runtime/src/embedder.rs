//! [`Embedder`]: one exported model, its card and an onnxruntime session on the chosen
//! execution provider. Images go through `cellspace_core::preprocess`, the same code the
//! trainer measured with; decoding runs in parallel on rayon workers, one batch ahead of
//! inference, so on CPU the execution provider sets the pace.

use crate::ep::{Device, ExecutionProvider, ProviderError};
use crate::{Error, Result, ortlib};
use cellspace_core::card::ModelCard;
use cellspace_core::locate::Location;
use cellspace_core::preprocess::{Preprocess, load_rgb};
use image::RgbImage;
use ort::session::Session;
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// How to build an [`Embedder`].
#[derive(Debug, Clone)]
pub struct EmbedOptions {
    pub device: Device,
    /// Images per inference call.
    pub batch_size: usize,
    /// onnxruntime intra-op threads (None: onnxruntime's default, one per core).
    pub threads: Option<usize>,
    /// TensorRT: build FP16 engines.
    pub fp16: bool,
    /// TensorRT engine cache (None: `$XDG_CACHE_HOME/cellspace/tensorrt` or `~/.cache/...`).
    pub trt_cache: Option<PathBuf>,
}

impl Default for EmbedOptions {
    fn default() -> Self {
        Self {
            device: Device::Auto,
            batch_size: 32,
            threads: None,
            fp16: false,
            trt_cache: None,
        }
    }
}

/// A loaded model ready to embed images.
pub struct Embedder {
    session: Mutex<Session>,
    card: ModelCard,
    card_path: PathBuf,
    provider: &'static dyn ExecutionProvider,
    notes: Vec<String>,
    input_name: String,
    output_name: String,
    batch_size: usize,
}

/// The card path for a model argument: `m.json` as is, `m.onnx` -> `m.json`.
pub fn card_path(model: &Path) -> PathBuf {
    if model.extension().is_some_and(|e| e == "json") {
        model.to_path_buf()
    } else {
        ModelCard::card_path_for(model)
    }
}

impl Embedder {
    /// Load a model by its card (or its `.onnx`, the card beside it) with default options.
    pub fn from_model_card(path: impl AsRef<Path>) -> Result<Self> {
        Self::new(path.as_ref(), &EmbedOptions::default())
    }

    /// Load a model; refuses one whose checksum or tensor shapes disagree with its card.
    pub fn new(model: &Path, opts: &EmbedOptions) -> Result<Self> {
        let card_path = card_path(model);
        let card = ModelCard::load(&card_path)?;
        if card.preprocess.layout != "NCHW" {
            return Err(Error::Model {
                path: card_path,
                reason: format!(
                    "the card's input layout {:?} is not one this runtime feeds (NCHW)",
                    card.preprocess.layout
                ),
            });
        }
        let onnx_path = card.onnx_path(&card_path);
        let bytes =
            std::fs::read(&onnx_path).map_err(|e| cellspace_core::Error::io(&onnx_path, e))?;
        card.verify_checksum(&onnx_path, &bytes)?;
        let (env, _) = ortlib::environment()?;
        let (session, provider, notes) = start_session(env, &bytes, opts, &onnx_path)?;
        let bad = |reason: String| Error::Model {
            path: onnx_path.clone(),
            reason,
        };
        let (inputs, outputs) = (session.inputs(), session.outputs());
        if inputs.len() != 1 || outputs.len() != 1 {
            return Err(bad(format!(
                "expected one input and one output, found {} and {}",
                inputs.len(),
                outputs.len()
            )));
        }
        let s = card.preprocess.size as i64;
        let ishape: Vec<i64> = inputs[0]
            .dtype()
            .tensor_shape()
            .map(|s| s.to_vec())
            .unwrap_or_default();
        let oshape: Vec<i64> = outputs[0]
            .dtype()
            .tensor_shape()
            .map(|s| s.to_vec())
            .unwrap_or_default();
        if ishape.len() != 4 || ishape[1..] != [3, s, s] {
            return Err(bad(format!(
                "input shape {ishape:?} disagrees with the card ([N, 3, {s}, {s}])"
            )));
        }
        if oshape.len() != 2 || oshape[1] != card.embedding_dim as i64 {
            return Err(bad(format!(
                "output shape {oshape:?} disagrees with the card ([N, {}])",
                card.embedding_dim
            )));
        }
        let (input_name, output_name) =
            (inputs[0].name().to_string(), outputs[0].name().to_string());
        Ok(Self {
            session: Mutex::new(session),
            card,
            card_path,
            provider,
            notes,
            input_name,
            output_name,
            batch_size: opts.batch_size.max(1),
        })
    }

    pub fn card(&self) -> &ModelCard {
        &self.card
    }
    pub fn card_path(&self) -> &Path {
        &self.card_path
    }
    pub fn dim(&self) -> usize {
        self.card.embedding_dim
    }
    /// The execution provider that runs this model.
    pub fn provider(&self) -> &'static dyn ExecutionProvider {
        self.provider
    }
    /// Why faster providers were skipped (device auto).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Embed prepared inputs (`n` images, `[n, 3, S, S]` flat). Returns `[n, dim]` flat.
    pub fn embed_prepared(&self, flat: &[f32], n: usize) -> Result<Vec<f32>> {
        let s = self.card.preprocess.size as usize;
        let failed = |what| move |source| Error::Ort { what, source };
        let tensor = ort::value::TensorRef::from_array_view(([n, 3, s, s], flat))
            .map_err(failed("making the input tensor"))?;
        let mut session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        let outputs = session
            .run(ort::inputs![self.input_name.as_str() => tensor])
            .map_err(failed("running the model"))?;
        let (_, data) = outputs[self.output_name.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(failed("reading its output"))?;
        if data.len() != n * self.dim() {
            return Err(Error::OutputShape {
                values: data.len(),
                images: n,
                dim: self.dim(),
            });
        }
        if let Some(i) = data.iter().position(|x| !x.is_finite()) {
            return Err(Error::NonFinite {
                value: data[i],
                image: i / self.dim().max(1) + 1,
            });
        }
        let mut rows = data.to_vec();
        if !self.card.l2_normalized {
            unit_rows(&mut rows, self.dim())?;
        }
        Ok(rows)
    }

    /// Embed one decoded image.
    pub fn embed_image(&self, img: &RgbImage) -> Result<Vec<f32>> {
        self.embed_prepared(&self.card.preprocess.prepare(img), 1)
    }

    /// Fields of a known pixel size (µm per pixel): the red-cell scale is then taken from it
    /// instead of being measured in each field (see [`Preprocess::with_pixel_size`]).
    ///
    /// [`Preprocess::with_pixel_size`]: cellspace_core::preprocess::Preprocess::with_pixel_size
    pub fn set_pixel_size(&mut self, um: Option<f32>) {
        self.card.preprocess = self.card.preprocess.clone().with_pixel_size(um);
    }

    /// Fields from a microscope calibrated earlier ([`cellspace_core::calibration::load`]):
    /// single images are sized and standardised as that folder's fields, and a folder is
    /// not measured again.
    pub fn set_calibration(&mut self, c: Option<cellspace_core::calibration::Calibration>) {
        if c.is_some() {
            self.card.preprocess = self.card.preprocess.clone().with_calibration(c);
        }
    }

    /// Embed one image file.
    pub fn embed_path(&self, path: &Path) -> Result<Vec<f32>> {
        self.embed_image(&load_rgb(path)?)
    }

    /// Embed one decoded image, and where its white cell was found (None when the model looks
    /// at the whole field).
    pub fn embed_image_located(&self, img: &RgbImage) -> Result<(Vec<f32>, Option<Location>)> {
        let (input, loc) = self.card.preprocess.prepare_located(img);
        Ok((self.embed_prepared(&input, 1)?, loc))
    }

    /// Every white cell of one decoded image, largest first, each embedded with its window
    /// ([`cellspace_core::preprocess::Preprocess::prepare_cells`]). A field with one cell, or
    /// none found, gives exactly what [`Embedder::embed_image_located`] gives, so a one-cell
    /// image behaves as it always did and a field without a clear cell is still answered.
    pub fn embed_image_cells(&self, img: &RgbImage) -> Result<Vec<(Vec<f32>, Option<Location>)>> {
        self.embed_cells(self.card.preprocess.prepare_cells(img))
    }

    /// One image's prepared windows embedded in one call, each with its place.
    fn embed_cells(
        &self,
        cells: Vec<(Vec<f32>, Option<Location>)>,
    ) -> Result<Vec<(Vec<f32>, Option<Location>)>> {
        let flat: Vec<f32> = cells.iter().flat_map(|(v, _)| v.iter().copied()).collect();
        let data = self.embed_prepared(&flat, cells.len())?;
        Ok(data
            .chunks(self.dim().max(1))
            .map(<[f32]>::to_vec)
            .zip(cells.into_iter().map(|(_, loc)| loc))
            .collect())
    }

    /// Embed many files; each result is the embedding or the reason the file failed.
    /// Decoding of batch k+1 overlaps inference of batch k; `progress` gets each batch's size.
    pub fn embed_paths(
        &self,
        paths: &[PathBuf],
        progress: impl FnMut(usize),
    ) -> Vec<Result<Vec<f32>, FileError>> {
        self.embed_paths_located(paths, progress)
            .into_iter()
            .map(|r| r.map(|(v, _)| v))
            .collect()
    }

    /// [`Embedder::embed_paths`], with where each image's white cell was found.
    pub fn embed_paths_located(
        &self,
        paths: &[PathBuf],
        progress: impl FnMut(usize),
    ) -> Vec<Located> {
        self.embed_paths_as(&self.card.preprocess, paths, progress)
    }

    /// The card's preprocessing calibrated on the fields `paths` (one folder, one microscope:
    /// see [`cellspace_core::calibration`]); as it is when a pixel size was set, the model's
    /// window is not in red-cell diameters, or too few fields have a measurable scale; the
    /// calibration given ([`Embedder::set_calibration`]) when there is one.
    pub fn calibrated(&self, paths: &[PathBuf]) -> Preprocess {
        let pre = self.card.preprocess.clone();
        if pre.rbc_px_override.is_some() || pre.calibration.is_some() {
            return pre;
        }
        let c =
            cellspace_core::calibration::measure(&pre, paths.len(), |i| load_rgb(&paths[i]).ok());
        pre.with_calibration(c)
    }

    /// [`Embedder::embed_paths_located`] with another preprocessing of this model (one
    /// [`Embedder::calibrated`] on a folder); `pre` must be the card's but for the input's
    /// scale.
    pub fn embed_paths_as(
        &self,
        pre: &Preprocess,
        paths: &[PathBuf],
        progress: impl FnMut(usize),
    ) -> Vec<Located> {
        self.embed_paths_cells(pre, paths, false, progress)
            .into_iter()
            .map(|r| r.map(|mut cells| cells.swap_remove(0)))
            .collect()
    }

    /// [`Embedder::embed_paths_as`] with every white cell of each file (`all`, see
    /// [`Preprocess::prepare_cells`]: at least one per file, the largest first), or each
    /// file's one window.
    pub fn embed_paths_cells(
        &self,
        pre: &Preprocess,
        paths: &[PathBuf],
        all: bool,
        mut progress: impl FnMut(usize),
    ) -> Vec<LocatedCells> {
        debug_assert_eq!(pre.fingerprint(), self.card.preprocess.fingerprint());
        type Prepared = LocatedCells;
        let mut results: Vec<LocatedCells> = Vec::with_capacity(paths.len());
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Prepared>>(1);
            scope.spawn(move || {
                for chunk in paths.chunks(self.batch_size) {
                    let prepared: Vec<Prepared> = chunk
                        .par_iter()
                        .map(|p| {
                            let img = load_rgb(p).map_err(|e| Arc::new(Error::from(e)))?;
                            Ok(if all {
                                pre.prepare_cells(&img)
                            } else {
                                vec![pre.prepare_located(&img)]
                            })
                        })
                        .collect();
                    if tx.send(prepared).is_err() {
                        return;
                    }
                }
            });
            for prepared in rx {
                let ok = prepared.iter().filter_map(|r| r.as_ref().ok()).flatten();
                let n_ok = ok.clone().count();
                let flat: Vec<f32> = ok.flat_map(|(v, _)| v.iter().copied()).collect();
                // at most `batch_size` windows per inference, however many cells the files hold
                let per = pre.len().max(1);
                let batch = flat
                    .chunks(self.batch_size.max(1) * per)
                    .map(|c| self.embed_prepared(c, c.len() / per))
                    .collect::<Result<Vec<_>>>()
                    .map(|parts| parts.concat());
                debug_assert!(n_ok * per == flat.len());
                let len = prepared.len();
                match batch {
                    Ok(emb) => {
                        let mut rows = emb.chunks_exact(self.dim().max(1));
                        for r in prepared {
                            results.push(r.map(|cells| {
                                cells
                                    .into_iter()
                                    .map(|(_, loc)| {
                                        let v =
                                            rows.next().map(<[f32]>::to_vec).unwrap_or_default();
                                        (v, loc)
                                    })
                                    .collect()
                            }));
                        }
                    }
                    // one file the model cannot embed (a non-finite output) fails the whole
                    // call: each file again alone, so that only the files that fail are
                    // reported, each with its own error
                    Err(_) => results.extend(
                        prepared
                            .into_iter()
                            .map(|r| r.and_then(|cells| self.embed_cells(cells).map_err(Arc::new))),
                    ),
                }
                progress(len);
            }
        });
        results
    }
}

/// Why one file of a batch was not embedded: its own error (decoding, or its own inference
/// when its batch's failed).
pub type FileError = Arc<Error>;

/// One file's embedding and where its white cell was found, or why the file failed.
pub type Located = Result<(Vec<f32>, Option<Location>), FileError>;

/// Every white cell's embedding and window in one file (at least one), or why it failed.
pub type LocatedCells = Result<Vec<(Vec<f32>, Option<Location>)>, FileError>;

/// The session on the first of `opts.device`'s providers that starts, that provider, and why
/// the faster ones before it were skipped (`--device auto`).
fn start_session(
    env: &ort::environment::Environment,
    bytes: &[u8],
    opts: &EmbedOptions,
    onnx_path: &Path,
) -> Result<(Session, &'static dyn ExecutionProvider, Vec<String>)> {
    let mut notes = Vec::new();
    for p in opts.device.candidates() {
        match build_session(env, p, bytes, opts) {
            Ok(s) => return Ok((s, p, notes)),
            // the CPU provider always exists: when it cannot start, the model is at fault
            Err(e) if p.always_there() && !matches!(e, ProviderError::Session { .. }) => {
                let why = match &e {
                    ProviderError::Ort { source, .. } => cellspace_core::error_text(source),
                    other => cellspace_core::error_text(other),
                };
                return Err(Error::Model {
                    path: onnx_path.to_path_buf(),
                    reason: format!("onnxruntime cannot load this model: {why}"),
                });
            }
            Err(e) if opts.device == Device::Auto => notes.push(format!(
                "{} unavailable: {}",
                p.label(),
                cellspace_core::error_text(&e)
            )),
            Err(source) => {
                return Err(Error::Provider {
                    name: p.label(),
                    source,
                });
            }
        }
    }
    Err(Error::NoProvider(notes.join("; ")))
}

fn build_session(
    env: &ort::environment::Environment,
    provider: &dyn ExecutionProvider,
    bytes: &[u8],
    opts: &EmbedOptions,
) -> std::result::Result<Session, ProviderError> {
    let ort_failed = |source: ort::Error| ProviderError::Ort {
        source,
        needs: provider.needs(),
    };
    let session_failed = |source: ort::Error| ProviderError::Session { source };
    let mut builder = Session::builder(env).map_err(session_failed)?;
    if let Some(t) = opts.threads {
        builder = builder
            .with_intra_threads(t)
            .map_err(|e| session_failed(e.into()))?;
    }
    if let Some(ep) = provider.dispatch(opts)? {
        builder = builder
            .with_execution_providers([ep])
            .map_err(|e| ort_failed(e.into()))?;
    }
    builder.commit_from_memory(bytes).map_err(ort_failed)
}

/// Default TensorRT engine cache folder.
pub fn default_trt_cache() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("cellspace").join("tensorrt")
}

/// Scale each `dim`-wide row of a model that does not normalise its output (its card says
/// `l2_normalized: false`) to unit length, so that cosine is a dot product downstream as for
/// every other model; a zero row has no direction and is an error, never an output.
fn unit_rows(rows: &mut [f32], dim: usize) -> Result<()> {
    for (i, row) in rows.chunks_exact_mut(dim.max(1)).enumerate() {
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        if !(norm.is_finite() && norm > 0.0) {
            return Err(Error::ZeroEmbedding { norm, image: i + 1 });
        }
        row.iter_mut().for_each(|x| *x /= norm);
    }
    Ok(())
}

#[cfg(test)]
mod unit_rows_tests {
    use super::unit_rows;

    #[test]
    fn rows_of_an_unnormalised_model_are_made_unit_and_a_zero_row_is_refused() {
        let mut rows = vec![3.0, 4.0, 0.0, -2.0];
        unit_rows(&mut rows, 2).unwrap();
        assert_eq!(rows, [0.6, 0.8, 0.0, -1.0]);
        let mut zero = vec![1.0, 0.0, 0.0, 0.0];
        let err = unit_rows(&mut zero, 2).unwrap_err().to_string();
        assert!(err.contains("image 2"), "{err}");
    }
}
