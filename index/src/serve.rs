//! `index serve`: the lab tool. One process serves a page (drop or choose a cell image, or paste
//! the path of an indexed one; see the most similar known cells with similarity, class and a
//! class vote; click a neighbour to search from it) and a JSON API for other lab software:
//! `POST /api/query?k=N` (image bytes), `GET /api/neighbours/{id}?k=N`, `GET /api/health`,
//! `GET /thumb/{id}`; both searches take `where=FIELD=VALUE` (repeatable, all must hold), run
//! inside the graph search. Answers carry each cell's sidecar fields. A removed cell is never
//! returned and its thumbnail is 404. Thumbnails are served by row id only, so no path outside the indexed
//! cells can ever be read, and only while the file still has its indexed content (sha256).
//! Every picture is the window the model embedded (around the located white cell), for the
//! query too. Results are other cells: the query's own original and repeated copies of one
//! original are left out. Binds to 127.0.0.1 by default; uploads are limited to 20 MB.

use crate::{CellIndex, Hit};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use runtime::Embedder;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Largest accepted upload.
pub const MAX_UPLOAD: usize = 20 * 1024 * 1024;
const PAGE: &str = include_str!("web/index.html");

pub struct AppState {
    /// The atlas answered from, followed as edits save it ([`crate::live`]).
    pub live: crate::live::Live,
    pub embedder: Embedder,
    pub default_k: usize,
    /// Uploads decoded at once (one per core). A decode holds up to a few hundred MB for an
    /// image at the pixel cap, so these slots, not the number of clients, bound the memory.
    pub decode_slots: Arc<tokio::sync::Semaphore>,
    /// Uploads waiting for a slot; past `max_waiting` a request gets 503 with Retry-After.
    pub waiting: Arc<std::sync::atomic::AtomicUsize>,
    pub max_waiting: usize,
    /// Whether the page may relabel and remove cells (`POST /api/edit`); the CLI turns it off
    /// on a non-loopback address unless asked.
    pub edits: bool,
}

impl AppState {
    /// The lab tool's state with one decode slot per core, for an index that never changes.
    pub fn new(index: CellIndex, embedder: Embedder, default_k: usize) -> Self {
        Self::with_live(crate::live::Live::fixed(index), embedder, default_k)
    }

    /// The lab tool's state for the index opened from `dir`, reopened whenever an edit saves
    /// it again.
    pub fn watching(
        dir: &std::path::Path,
        index: CellIndex,
        embedder: Embedder,
        default_k: usize,
    ) -> Self {
        Self::with_live(crate::live::Live::watching(index, dir), embedder, default_k)
    }

    fn with_live(live: crate::live::Live, embedder: Embedder, default_k: usize) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            live,
            embedder,
            default_k,
            decode_slots: Arc::new(tokio::sync::Semaphore::new(cores)),
            waiting: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            max_waiting: 4 * cores,
            edits: true,
        }
    }
}

#[derive(Deserialize)]
struct KParam {
    k: Option<usize>,
    path: Option<String>,
    /// Which white cell of an uploaded field to answer (0 = the largest).
    cell: Option<usize>,
}

#[derive(Serialize)]
struct QueryAnswer {
    neighbours: Vec<Hit>,
    /// Classes of the neighbours, counted.
    votes: BTreeMap<String, usize>,
    /// Row id of the query when it is an indexed cell.
    query_id: Option<usize>,
    /// The window of an uploaded query that was embedded (PNG data URL) and where it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    query_crop: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    query_window: Option<cellspace_core::locate::Location>,
    /// Set when the query field is outside what the model was trained and checked on.
    #[serde(skip_serializing_if = "Option::is_none")]
    warning: Option<String>,
    /// An uploaded field of several white cells: the field, every cell's box, and which cell
    /// this answer is for ([`crate::upload`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<crate::upload::FieldCells>,
}

/// The `where=FIELD=VALUE` parameters of a query string. A `path` is the path as the API shows
/// it (relative to the atlas's folder, [`AppState::shown`]), never the server's own: an
/// absolute path matches nothing, so the server's folders cannot be probed through it.
fn conditions(raw: Option<&str>, root: &str) -> Result<Vec<crate::Condition>, String> {
    form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .filter(|(k, _)| k == "where")
        .filter(|(_, v)| !v.trim().is_empty())
        .map(|(_, v)| {
            let mut c: crate::Condition = v.parse()?;
            if c.key == "path" {
                c.value = format!("{root}{}", c.value);
            }
            Ok(c)
        })
        .collect()
}

/// Search for other cells: never the query's own original, one hit per original, every
/// condition holding.
fn other_cells(
    a: &crate::live::Atlas,
    v: &[f32],
    k: usize,
    own_sha: Option<&str>,
    conditions: Vec<crate::Condition>,
) -> crate::Result<Vec<Hit>> {
    let filter = crate::ops::QueryFilter {
        exclude_self: true,
        distinct: true,
        conditions,
    };
    let mut hits = a
        .index
        .search(v, &filter.for_query(&a.index, own_sha), k, None)?;
    for h in &mut hits {
        h.path = a.shown(&h.path);
    }
    Ok(hits)
}

pub(crate) fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": msg.into() }))).into_response()
}

fn answer(neighbours: Vec<Hit>, query_id: Option<usize>) -> Response {
    answer_with(neighbours, query_id, None, None, None)
}

fn answer_with(
    neighbours: Vec<Hit>,
    query_id: Option<usize>,
    query_crop: Option<String>,
    query_window: Option<cellspace_core::locate::Location>,
    field: Option<crate::upload::FieldCells>,
) -> Response {
    let mut votes = BTreeMap::new();
    for h in &neighbours {
        *votes
            .entry(h.class.clone().unwrap_or_else(|| "unknown".into()))
            .or_insert(0) += 1;
    }
    Json(QueryAnswer {
        neighbours,
        votes,
        query_id,
        query_crop,
        warning: crate::embed::out_of_range_warning(query_window.as_ref()),
        query_window,
        field,
    })
    .into_response()
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn health(State(s): State<Arc<AppState>>) -> Response {
    let a = s.live.current();
    if let Err(e) = a.index.store().check_disk() {
        return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
    }
    let mut answer = serde_json::json!({
        "status": "ok",
        "model": a.index.model().name,
        "model_sha256": a.index.model().onnx_sha256,
        "dim": a.index.model().dim,
        "index_size": a.index.live(),
        "execution_provider": s.embedder.provider().label(),
    });
    if let Some(p) = s.live.problem() {
        answer["warning"] = format!("serving the index as it was before its last save: {p}").into();
    }
    Json(answer).into_response()
}

async fn query(
    State(s): State<Arc<AppState>>,
    Query(p): Query<KParam>,
    RawQuery(raw): RawQuery,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let a = s.live.current();
    let conditions = match conditions(raw.as_deref(), &a.root) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let body = match upload_body(body) {
        Ok(b) => b,
        Err((status, msg)) => return error(status, msg),
    };
    let k = p.k.unwrap_or(s.default_k).clamp(1, 200);
    if let Some(path) = p.path {
        // a pasted path: only an indexed cell's own path is accepted
        return match a
            .index
            .rows()
            .iter()
            .position(|r| !r.removed && (r.path == path || a.shown(&r.path) == path))
        {
            Some(id) => neighbours_of(a, id, k, conditions).await,
            None => error(StatusCode::NOT_FOUND, "that path is not an indexed cell"),
        };
    }
    if body.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "empty body: send the image file's bytes",
        );
    }
    let slot = match decode_slot(s.decode_slots.clone(), &s.waiting, s.max_waiting).await {
        Ok(slot) => slot,
        Err(e) => return e.response(),
    };
    let cell = p.cell.unwrap_or(0);
    let r = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        answer_upload(&s, &a, &body, cell, k, conditions)
    })
    .await;
    match r {
        Ok(Ok((hits, up))) => answer_with(hits, None, Some(up.crop), up.window, up.field),
        Ok(Err((status, msg))) => error(status, msg),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// The uploaded bytes, or the status and message of the JSON error for a body that could not
/// be read (every error the API gives is JSON, a too-large upload too).
fn upload_body(
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Bytes, (StatusCode, String)> {
    match body {
        Ok(b) => Ok(b),
        Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("upload larger than {} MB", MAX_UPLOAD / (1024 * 1024)),
        )),
        Err(r) => Err((r.status(), r.body_text())),
    }
}

/// An uploaded field's chosen cell, embedded, and its neighbours (run on a blocking thread).
fn answer_upload(
    s: &AppState,
    a: &crate::live::Atlas,
    body: &[u8],
    cell: usize,
    k: usize,
    conditions: Vec<crate::Condition>,
) -> Result<(Vec<Hit>, crate::upload::UploadedCell), (StatusCode, String)> {
    let img = cellspace_core::preprocess::decode_rgb(body).map_err(|e| {
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("not a readable image: {e}"),
        )
    })?;
    let up = crate::upload::embed_cell(&s.embedder, &img, cell).map_err(|e| {
        let status = match e {
            crate::upload::UploadError::NoSuchCell { .. } => StatusCode::BAD_REQUEST,
            crate::upload::UploadError::Embed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, e.to_string())
    })?;
    let sha = cellspace_core::sha256_hex(body);
    other_cells(a, &up.vector, k, Some(&sha), conditions)
        .map(|hits| (hits, up))
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// Why an upload got no decoding slot.
#[derive(Debug, PartialEq)]
enum SlotError {
    /// `max_waiting` uploads are already queued.
    Busy,
    /// The semaphore was closed.
    Closed,
}

impl SlotError {
    /// The API's answer: busy is a 503 with a retry hint.
    fn response(self) -> Response {
        match self {
            SlotError::Busy => {
                let mut r = error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy decoding other uploads: try again in a second",
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
                r
            }
            SlotError::Closed => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the server is shutting down",
            ),
        }
    }
}

/// A place in the upload queue, given back when dropped: also when the client disconnects
/// while queued and its request's future is dropped mid-await.
struct QueuePlace<'a>(&'a AtomicUsize);

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A decoding slot at once, or after queueing behind at most `max_waiting` other uploads.
async fn decode_slot(
    slots: Arc<tokio::sync::Semaphore>,
    waiting: &AtomicUsize,
    max_waiting: usize,
) -> Result<tokio::sync::OwnedSemaphorePermit, SlotError> {
    if let Ok(slot) = slots.clone().try_acquire_owned() {
        return Ok(slot);
    }
    let place = QueuePlace(waiting);
    if waiting.fetch_add(1, Ordering::SeqCst) >= max_waiting {
        return Err(SlotError::Busy);
    }
    let slot = slots.acquire_owned().await.map_err(|_| SlotError::Closed);
    drop(place);
    slot
}

async fn neighbours_of(
    a: Arc<crate::live::Atlas>,
    id: usize,
    k: usize,
    conditions: Vec<crate::Condition>,
) -> Response {
    if a.index.rows().get(id).is_none_or(|r| r.removed) {
        return error(StatusCode::NOT_FOUND, "no such cell");
    }
    let r = tokio::task::spawn_blocking(move || {
        let v = a.index.vector(id)?.to_vec();
        let sha = a.index.rows()[id].sha256.clone();
        other_cells(&a, &v, k, Some(&sha), conditions)
    })
    .await;
    match r {
        Ok(Ok(hits)) => answer(hits, Some(id)),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn neighbours(
    State(s): State<Arc<AppState>>,
    Path(id): Path<usize>,
    Query(p): Query<KParam>,
    RawQuery(raw): RawQuery,
) -> Response {
    let k = p.k.unwrap_or(s.default_k).clamp(1, 200);
    let a = s.live.current();
    match conditions(raw.as_deref(), &a.root) {
        Ok(c) => neighbours_of(a, id, k, c).await,
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

/// More like the `like=ID` cells, less like the `unlike=ID` ones (repeat each; `index query
/// --like`'s rule, [`crate::examples`]): other cells, one per original, every `where` holding.
async fn recommend(
    State(s): State<Arc<AppState>>,
    Query(p): Query<KParam>,
    RawQuery(raw): RawQuery,
) -> Response {
    let k = p.k.unwrap_or(s.default_k).clamp(1, 200);
    let a = s.live.current();
    let ids = |key: &str| -> Result<Vec<crate::examples::Example>, String> {
        form_urlencoded::parse(raw.as_deref().unwrap_or("").as_bytes())
            .filter(|(k, _)| k == key)
            .map(|(_, v)| {
                v.trim()
                    .parse()
                    .map(crate::examples::Example::Row)
                    .map_err(|_| format!("{key}={v}: not a cell id"))
            })
            .collect()
    };
    let (like, unlike, conditions) = match (
        ids("like"),
        ids("unlike"),
        conditions(raw.as_deref(), &a.root),
    ) {
        (Ok(l), Ok(u), Ok(c)) => (l, u, c),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            return error(StatusCode::BAD_REQUEST, e);
        }
    };
    let r = tokio::task::spawn_blocking(move || {
        let filter = crate::ops::QueryFilter {
            exclude_self: true,
            distinct: true,
            conditions,
        }
        .for_query(&a.index, None);
        let mut hits = crate::examples::search(&a.index, &like, &unlike, filter, k, None)?;
        for h in &mut hits {
            h.path = a.shown(&h.path);
        }
        Ok::<_, crate::Error>(hits)
    })
    .await;
    match r {
        Ok(Ok(hits)) => answer(hits, None),
        Ok(Err(e)) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// A cell's window as PNG. Row ids change when an index is rebuilt, so the thumbnail is
/// revalidated on every use (`no-cache`) against an ETag made from the file's sha256: an
/// unchanged cell costs a 304, a rebuilt index never shows another cell's picture.
async fn thumb(
    State(s): State<Arc<AppState>>,
    Path(id): Path<usize>,
    headers: axum::http::HeaderMap,
) -> Response {
    let a = s.live.current();
    let Some(row) = a.index.rows().get(id).filter(|r| !r.removed).cloned() else {
        return error(StatusCode::NOT_FOUND, "no such cell");
    };
    let etag = match row.cell {
        Some(c) => format!("\"{}-{c}\"", row.sha256),
        None => format!("\"{}\"", row.sha256),
    };
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag))
    {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    let r = tokio::task::spawn_blocking(move || {
        let path = cellspace_core::dataset::decode_path(&row.path);
        let bytes = cellspace_core::preprocess::read_image_file(&path)
            .map_err(|_| "the indexed file is no longer there, or no longer a regular file")?;
        if cellspace_core::sha256_hex(&bytes) != row.sha256 {
            return Err("the indexed file has changed since it was indexed");
        }
        let img = cellspace_core::preprocess::decode_rgb(&bytes)
            .map_err(|_| "the indexed file is no longer a readable image")?;
        let pre = &s.embedder.card().preprocess;
        match row.cell {
            // cell N of a field embedded with every cell: that cell's window
            Some(c) => pre
                .windows_all(&img)
                .get(c as usize)
                .map(|(w, _)| crate::thumbs::thumb_png(w))
                .ok_or("the indexed field no longer shows that cell"),
            None => Ok(crate::thumbs::window_png(pre, &img)),
        }
    })
    .await;
    match r {
        Ok(Ok(png)) => (
            [
                (header::CONTENT_TYPE, "image/png".to_string()),
                (header::CACHE_CONTROL, "no-cache".to_string()),
                (header::ETAG, etag),
            ],
            png,
        )
            .into_response(),
        Ok(Err(msg)) => error(StatusCode::NOT_FOUND, msg),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// The routes, behind the [`crate::guard`] for a server bound to `bound`.
pub fn router(state: Arc<AppState>, bound: SocketAddr) -> axum::Router {
    let guard = Arc::new(crate::guard::Guard::new(bound));
    axum::Router::new()
        .route("/", get(page))
        .route("/api/health", get(health))
        .route("/api/query", post(query))
        .route("/api/neighbours/{id}", get(neighbours))
        .route("/api/recommend", get(recommend))
        .route("/api/map", get(crate::map_api::map))
        .route("/api/edit", post(crate::map_api::edit))
        .route("/api/export", post(crate::map_api::export))
        .route("/thumb/{id}", get(thumb))
        .layer(DefaultBodyLimit::max(MAX_UPLOAD))
        .layer(axum::middleware::from_fn_with_state(
            guard,
            crate::guard::guard,
        ))
        .with_state(state)
}

/// Serve on an already bound listener until the process ends, within `limits`.
pub async fn serve(
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    limits: crate::conn::ConnLimits,
) -> std::io::Result<()> {
    let bound = listener.local_addr()?;
    if state.live.watches() {
        // follow edits: a saved index is taken up within half a second
        let watched = Arc::downgrade(&state);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                let Some(s) = watched.upgrade() else { return };
                let _ = tokio::task::spawn_blocking(move || s.live.refresh()).await;
            }
        });
    }
    let listener = crate::conn::LimitedListener::new(listener, limits);
    axum::serve(listener, router(state, bound)).await
}

/// Start the server on its own thread and runtime with the default connection limits;
/// returns the bound address (for tests and embedding the tool in another program).
pub fn spawn(state: AppState, addr: SocketAddr) -> std::io::Result<SocketAddr> {
    spawn_with(state, addr, Default::default())
}

/// [`spawn`] with other connection limits.
pub fn spawn_with(
    state: AppState,
    addr: SocketAddr,
    limits: crate::conn::ConnLimits,
) -> std::io::Result<SocketAddr> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let listener = rt.block_on(tokio::net::TcpListener::bind(addr))?;
    let bound = listener.local_addr()?;
    std::thread::spawn(move || {
        let _ = rt.block_on(serve(Arc::new(state), listener, limits));
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Case 2 of the hardening round: a client that disconnected while queued for a decoding
    /// slot never gave its place back, and after a dozen such clients every upload got 503.
    #[test]
    fn case_02_a_queued_upload_that_goes_away_gives_its_place_back() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let slots = Arc::new(tokio::sync::Semaphore::new(1));
            let waiting = AtomicUsize::new(0);
            let held = slots.clone().try_acquire_owned().unwrap();
            // twelve clients queue, then disconnect (their request futures are dropped)
            for _ in 0..12 {
                let queued = decode_slot(slots.clone(), &waiting, 4);
                let r = tokio::time::timeout(std::time::Duration::from_millis(5), queued).await;
                assert!(r.is_err(), "no slot is free: the upload must wait");
            }
            assert_eq!(waiting.load(Ordering::SeqCst), 0, "places leaked");
            // a full queue answers busy, and gives the refused place back too
            let queued: Vec<_> = (0..4)
                .map(|_| Box::pin(decode_slot(slots.clone(), &waiting, 4)))
                .collect();
            let mut queued = queued;
            for q in &mut queued {
                assert!(
                    tokio::time::timeout(std::time::Duration::from_millis(1), q)
                        .await
                        .is_err()
                );
            }
            assert_eq!(waiting.load(Ordering::SeqCst), 4);
            assert_eq!(
                decode_slot(slots.clone(), &waiting, 4).await.unwrap_err(),
                SlotError::Busy
            );
            assert_eq!(waiting.load(Ordering::SeqCst), 4);
            // the slot frees: the first in the queue gets it
            drop(held);
            let first = queued.remove(0).await.expect("a slot");
            assert_eq!(waiting.load(Ordering::SeqCst), 3);
            drop((first, queued));
            assert_eq!(waiting.load(Ordering::SeqCst), 0);
        });
    }

    /// Case 17 of the hardening round: `where=path=…` matched only the server's absolute path
    /// (which the API never shows), and so let a client probe the server's folders.
    #[test]
    fn case_17_a_path_condition_is_the_path_as_the_api_shows_it() {
        let root = "/srv/atlas/cells/";
        let row = crate::Row {
            path: format!("{root}NEUTROPHIL/a.jpeg"),
            ..Default::default()
        };
        let c = conditions(Some("where=path%3DNEUTROPHIL%2Fa.jpeg&k=3"), root).unwrap();
        assert!(c[0].matches(&row), "{c:?}");
        let probe = conditions(
            Some("where=path%3D%2Fsrv%2Fatlas%2Fcells%2FNEUTROPHIL%2Fa.jpeg"),
            root,
        )
        .unwrap();
        assert!(
            !probe[0].matches(&row),
            "an absolute path must match nothing"
        );
        let class = conditions(Some("where=class%3DNEUTROPHIL"), root).unwrap();
        assert_eq!(
            class[0].value, "NEUTROPHIL",
            "other fields are left as they are"
        );
    }
}
