//! The map's part of the lab tool's API: `GET /api/map?by=FIELD[&k=N]` (every live cell's
//! place and value, [`crate::atlas_map::MapView`]) and `POST /api/edit` (relabel or remove a
//! selection, saved as `index relabel` / `remove` save; [`crate::atlas_map::edit_saved`]).

use crate::atlas_map::{Edit, edit_saved, view};
use crate::live::Atlas;
use crate::serve::{AppState, error};
use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::sync::Arc;

/// Most k-means clusters the page may ask for.
const MAX_CLUSTERS: usize = 50;
/// Clusters when `by=cluster` names no `k`.
const DEFAULT_CLUSTERS: usize = 8;

#[derive(Deserialize)]
pub(crate) struct MapParams {
    by: Option<String>,
    /// Text, so that an empty or odd box on the page falls back to the default, not to a
    /// plain-text rejection the page cannot read.
    k: Option<String>,
}

pub(crate) async fn map(State(s): State<Arc<AppState>>, Query(p): Query<MapParams>) -> Response {
    let a = s.live.current();
    let by = p.by.unwrap_or_else(|| "class".into());
    let k =
        p.k.and_then(|k| k.trim().parse::<usize>().ok())
            .unwrap_or(DEFAULT_CLUSTERS)
            .clamp(2, MAX_CLUSTERS);
    let r = tokio::task::spawn_blocking(move || map_view(&a, &by, k)).await;
    match r {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn map_view(a: &Atlas, by: &str, k: usize) -> crate::Result<crate::atlas_map::MapView> {
    let index = &a.index;
    let (map, laid_out_now) = if index.map().len() == index.len() {
        (index.map(), false)
    } else {
        let m = a.map_cache.laid_out.get_or_init(|| index.lay_out_map());
        (m.as_slice(), true)
    };
    let clusters = match by {
        "cluster" => Some(cluster_of(a, k)?),
        _ => None,
    };
    let mut v = view(index, map, by, a.version(), |i| match (&clusters, by) {
        (Some(c), _) => c[i].map(|c| format!("c{c}")),
        (None, "class") => index.rows()[i].class.clone(),
        (None, field) => index.rows()[i].field(field).map(str::to_string),
    });
    v.laid_out_now = laid_out_now;
    Ok(v)
}

/// Each row's k-means cluster (None for removed rows), computed once per atlas and k.
fn cluster_of(a: &Atlas, k: usize) -> crate::Result<Arc<Vec<Option<usize>>>> {
    let mut cache = a
        .map_cache
        .clusters
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(c) = cache.get(&k) {
        return Ok(c.clone());
    }
    let c = crate::clusters::clusters(&a.index, k, 42)?;
    let mut of = vec![None; a.index.len()];
    for (id, cluster) in c.assignment {
        of[id] = Some(cluster);
    }
    let of = Arc::new(of);
    cache.insert(k, of.clone());
    Ok(of)
}

#[derive(Deserialize)]
pub(crate) struct EditRequest {
    version: String,
    ids: Vec<usize>,
    relabel: Option<String>,
    #[serde(default)]
    remove: bool,
}

pub(crate) async fn edit(
    State(s): State<Arc<AppState>>,
    body: Result<Json<EditRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let req = match body {
        Ok(Json(r)) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let edit = match (req.relabel, req.remove) {
        (Some(class), false) => Edit::Relabel(class),
        (None, true) => Edit::Remove,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "say either \"relabel\": CLASS or \"remove\": true",
            );
        }
    };
    if !s.edits {
        return error(
            StatusCode::FORBIDDEN,
            "edits from the page are off on this server (index serve --read-only, or a non-loopback address without --allow-edits)",
        );
    }
    let Some(dir) = s.live.dir().map(std::path::Path::to_path_buf) else {
        return error(
            StatusCode::CONFLICT,
            "this server was not started on an index folder: edits are off",
        );
    };
    let s2 = s.clone();
    let n = req.ids.len();
    let r = tokio::task::spawn_blocking(move || {
        let saved = edit_saved(&dir, &req.version, &req.ids, &edit)?;
        let v = crate::atlas_map::version(&saved);
        // the next request sees the edit: installed now, not when the watcher looks
        s2.live.install(saved);
        Ok::<_, crate::Error>(v)
    })
    .await;
    match r {
        Ok(Ok(version)) => {
            Json(serde_json::json!({ "edited": n, "version": version })).into_response()
        }
        Ok(Err(e @ crate::Error::Conflict(_))) => error(StatusCode::CONFLICT, e.to_string()),
        Ok(Err(e @ crate::Error::Invalid(_))) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(Deserialize)]
pub(crate) struct ExportRequest {
    /// The atlas the ids were taken from (the map's `version`): row ids of a compacted or
    /// rebuilt index name other cells.
    version: String,
    ids: Vec<usize>,
}

/// The selected cells' rows (path as shown, cell, class, group, fields, place), for a CSV or
/// JSON download of a lasso selection.
pub(crate) async fn export(
    State(s): State<Arc<AppState>>,
    body: Result<Json<ExportRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let req = match body {
        Ok(Json(r)) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let a = s.live.current();
    if let Err(e) = crate::atlas_map::check_version(a.version(), &req.version) {
        return error(StatusCode::CONFLICT, e.to_string());
    }
    let map = a.index.map();
    let mut cells = Vec::with_capacity(req.ids.len());
    for id in req.ids {
        let Some(r) = a.index.rows().get(id).filter(|r| !r.removed) else {
            return error(
                StatusCode::NOT_FOUND,
                format!("cell {id} is not a live cell"),
            );
        };
        let mut c = serde_json::json!({
            "id": id,
            "path": a.shown(&r.path),
            "cell": r.cell,
            "class": r.class,
            "group": r.group,
        });
        if let Some(p) = map.get(id) {
            c["x"] = p[0].into();
            c["y"] = p[1].into();
        }
        for (k, v) in &r.meta {
            if c.get(k).is_none() {
                c[k] = v.clone().into();
            }
        }
        cells.push(c);
    }
    Json(serde_json::json!({ "cells": cells })).into_response()
}
