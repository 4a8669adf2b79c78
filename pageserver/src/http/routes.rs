//! Handlers of the routes in [`super::ROUTES`]. Path parameters and bodies are parsed here
//! (not by axum's extractors) so that every malformed request gets the same JSON error.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{self, MethodRouter};
use axum::Json;
use pageserver_api::models::{
    StatusResponse, TenantConfigRequest, TenantCreateRequest, TimelineCreateRequest, TimelineInfo,
    WalSourceRequest,
};
use serde::de::DeserializeOwned;
use utils::id::{TenantId, TimelineId};

use super::{ApiError, ApiState, Method};
use crate::pgdatadir_mapping::DatadirRead;
use crate::tenant::timeline::Timeline;

type ApiResult = Result<Response, ApiError>;

/// The handler of a route of [`super::ROUTES`].
pub(super) fn handler(method: Method, path: &str) -> Option<MethodRouter<ApiState>> {
    let h = match (method, path) {
        (Method::Get, "/v1/status") => routing::get(status),
        (Method::Get, "/metrics") => routing::get(metrics),
        (Method::Post, "/v1/tenant") => routing::post(tenant_create),
        (Method::Get, "/v1/tenant") => routing::get(tenant_list),
        (Method::Put, "/v1/tenant/config") => routing::put(tenant_config),
        (Method::Get, "/v1/tenant/{tenant_id}") => routing::get(tenant_get),
        (Method::Delete, "/v1/tenant/{tenant_id}") => routing::delete(tenant_delete),
        (Method::Post, "/v1/tenant/{tenant_id}/timeline") => routing::post(timeline_create),
        (Method::Get, "/v1/tenant/{tenant_id}/timeline") => routing::get(timeline_list),
        (Method::Get, "/v1/tenant/{tenant_id}/timeline/{timeline_id}") => {
            routing::get(timeline_get)
        }
        (Method::Put, "/v1/tenant/{tenant_id}/timeline/{timeline_id}/checkpoint") => {
            routing::put(timeline_checkpoint)
        }
        (Method::Put, "/v1/tenant/{tenant_id}/timeline/{timeline_id}/compact") => {
            routing::put(timeline_compact)
        }
        (Method::Put, "/v1/tenant/{tenant_id}/timeline/{timeline_id}/wal_source") => {
            routing::put(wal_source_put)
        }
        (Method::Get, "/v1/tenant/{tenant_id}/timeline/{timeline_id}/wal_source") => {
            routing::get(wal_source_get)
        }
        (Method::Delete, "/v1/tenant/{tenant_id}/timeline/{timeline_id}/wal_source") => {
            routing::delete(wal_source_delete)
        }
        _ => return None,
    };
    Some(h)
}

fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("bad request body: {e}")))
}

fn parse_id<T: std::str::FromStr>(what: &str, s: &str) -> Result<T, ApiError>
where
    T::Err: std::fmt::Display,
{
    s.parse()
        .map_err(|e| ApiError::BadRequest(format!("bad {what} {s:?}: {e}")))
}

fn json(status: StatusCode, v: impl serde::Serialize) -> ApiResult {
    Ok((status, Json(v)).into_response())
}

/// Runs blocking storage work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("task failed: {e}")))?
}

async fn status(State(st): State<ApiState>) -> ApiResult {
    json(StatusCode::OK, StatusResponse { id: st.node_id })
}

async fn metrics(State(st): State<ApiState>) -> ApiResult {
    let layers = st
        .mgr
        .list()
        .iter()
        .flat_map(|t| t.list_timelines())
        .map(|tl| tl.layer_stats())
        .fold((0, 0), |(n, b), (n2, b2)| (n + n2, b + b2));
    let text = super::metrics::render(layers);
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        text,
    )
        .into_response())
}

async fn tenant_create(State(st): State<ApiState>, body: Bytes) -> ApiResult {
    let req: TenantCreateRequest = parse_json(&body)?;
    let mgr = st.mgr.clone();
    let tenant = blocking(move || Ok(mgr.create(req.new_tenant_id, req.config)?)).await?;
    json(StatusCode::CREATED, tenant.id.to_string())
}

async fn tenant_list(State(st): State<ApiState>) -> ApiResult {
    let infos: Vec<_> = st.mgr.list().iter().map(|t| t.info()).collect();
    json(StatusCode::OK, infos)
}

async fn tenant_get(State(st): State<ApiState>, Path(tenant_id): Path<String>) -> ApiResult {
    let id: TenantId = parse_id("tenant id", &tenant_id)?;
    json(StatusCode::OK, st.mgr.get(id)?.info())
}

async fn tenant_delete(State(st): State<ApiState>, Path(tenant_id): Path<String>) -> ApiResult {
    let id: TenantId = parse_id("tenant id", &tenant_id)?;
    let mgr = st.mgr.clone();
    blocking(move || Ok(mgr.delete(id)?)).await?;
    json(StatusCode::OK, serde_json::json!({}))
}

async fn tenant_config(State(st): State<ApiState>, body: Bytes) -> ApiResult {
    let req: TenantConfigRequest = parse_json(&body)?;
    let tenant = st.mgr.get(req.tenant_id)?;
    blocking(move || Ok(tenant.set_config(req.config)?)).await?;
    json(StatusCode::OK, serde_json::json!({}))
}

/// Sum of all relation sizes at the last record LSN (0 if it cannot be read).
fn logical_size(tl: &Timeline) -> u64 {
    let lsn = tl.last_record_lsn();
    let Ok(dbs) = tl.list_dbdirs(lsn) else {
        return 0;
    };
    dbs.keys()
        .filter_map(|(spc, db)| tl.get_db_size(*spc, *db, lsn).ok())
        .sum()
}

async fn timeline_info(tl: Arc<Timeline>) -> Result<TimelineInfo, ApiError> {
    blocking(move || Ok(tl.info(logical_size(&tl)))).await
}

/// The timeline info with its walreceiver's status as `wal_receiver` (if it has a source).
async fn timeline_info_json(st: &ApiState, tl: Arc<Timeline>) -> ApiResult {
    let status = st.walreceivers.status(tl.tenant_id, tl.timeline_id);
    let mut v = serde_json::to_value(timeline_info(tl).await?)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    if let (Some(obj), Some(status)) = (v.as_object_mut(), status) {
        let status = serde_json::to_value(status).map_err(|e| ApiError::Internal(e.to_string()))?;
        obj.insert("wal_receiver".into(), status);
    }
    json(StatusCode::OK, v)
}

async fn timeline_create(
    State(st): State<ApiState>,
    Path(tenant_id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let id: TenantId = parse_id("tenant id", &tenant_id)?;
    let req: TimelineCreateRequest = parse_json(&body)?;
    let mode = req
        .mode()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let tenant = st.mgr.get(id)?;
    let tl = tenant.create_timeline(req.new_timeline_id, mode).await?;
    json(StatusCode::CREATED, timeline_info(tl).await?)
}

async fn timeline_list(State(st): State<ApiState>, Path(tenant_id): Path<String>) -> ApiResult {
    let id: TenantId = parse_id("tenant id", &tenant_id)?;
    let mut infos = Vec::new();
    let tenant = st.mgr.get(id)?;
    tenant.check_broken()?;
    for tl in tenant.list_timelines() {
        infos.push(timeline_info(tl).await?);
    }
    json(StatusCode::OK, infos)
}

fn find_timeline(
    st: &ApiState,
    tenant_id: &str,
    timeline_id: &str,
) -> Result<Arc<Timeline>, ApiError> {
    let tid: TenantId = parse_id("tenant id", tenant_id)?;
    let tlid: TimelineId = parse_id("timeline id", timeline_id)?;
    Ok(st.mgr.get(tid)?.get_timeline(tlid)?)
}

async fn timeline_get(
    State(st): State<ApiState>,
    Path((tenant_id, timeline_id)): Path<(String, String)>,
) -> ApiResult {
    let tl = find_timeline(&st, &tenant_id, &timeline_id)?;
    timeline_info_json(&st, tl).await
}

async fn timeline_checkpoint(
    State(st): State<ApiState>,
    Path((tenant_id, timeline_id)): Path<(String, String)>,
) -> ApiResult {
    let tl = find_timeline(&st, &tenant_id, &timeline_id)?;
    blocking(move || {
        tl.freeze_and_flush()
            .map_err(|e| ApiError::Internal(e.to_string()))
    })
    .await?;
    json(StatusCode::OK, serde_json::json!({}))
}

/// Flushes, then runs one compaction pass (L0 merge and image creation); answers what it did.
async fn timeline_compact(
    State(st): State<ApiState>,
    Path((tenant_id, timeline_id)): Path<(String, String)>,
) -> ApiResult {
    let tl = find_timeline(&st, &tenant_id, &timeline_id)?;
    let outcome = blocking(move || {
        tl.freeze_and_flush()
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        tl.compact().map_err(|e| ApiError::Internal(e.to_string()))
    })
    .await?;
    json(
        StatusCode::OK,
        serde_json::json!({
            "l0_inputs": outcome.l0_inputs,
            "l1_outputs": outcome.l1_outputs,
            "images_created": outcome.images_created,
        }),
    )
}

/// Sets the timeline's WAL source (persisted) and starts pulling WAL from it.
async fn wal_source_put(
    State(st): State<ApiState>,
    Path((tenant_id, timeline_id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let req: WalSourceRequest = parse_json(&body)?;
    let tid: TenantId = parse_id("tenant id", &tenant_id)?;
    let tenant = st.mgr.get(tid)?;
    let tl = find_timeline(&st, &tenant_id, &timeline_id)?;
    let status = st.walreceivers.set_source(&tenant, tl, &req).await?;
    json(StatusCode::OK, status)
}

/// The timeline's walreceiver status (404 without a source).
async fn wal_source_get(
    State(st): State<ApiState>,
    Path((tenant_id, timeline_id)): Path<(String, String)>,
) -> ApiResult {
    let tl = find_timeline(&st, &tenant_id, &timeline_id)?;
    match st.walreceivers.status(tl.tenant_id, tl.timeline_id) {
        Some(status) => json(StatusCode::OK, status),
        None => Err(ApiError::NotFound(format!(
            "timeline {} has no WAL source",
            tl.timeline_id
        ))),
    }
}

/// Stops the timeline's walreceiver and forgets its source (idempotent).
async fn wal_source_delete(
    State(st): State<ApiState>,
    Path((tenant_id, timeline_id)): Path<(String, String)>,
) -> ApiResult {
    let tl = find_timeline(&st, &tenant_id, &timeline_id)?;
    st.walreceivers.remove_source(&tl).await?;
    json(StatusCode::OK, serde_json::json!({}))
}
