//! The management API (HTTP, axum). Every route is listed once in [`ROUTES`]; the router is
//! built from that table and a test checks it against `pageserver/openapi.yaml`.
//!
//! Errors are [`ApiError`]s, turned into a status code and a JSON body `{"msg": ...}` in one
//! place ([`ApiError::into_response`]).

pub mod metrics;
mod routes;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use axum::Router;
use pageserver_api::models::HttpErrorBody;
use tokio_util::sync::CancellationToken;

use crate::tenant::mgr::TenantManager;
use crate::tenant::TenantError;
use crate::walreceiver::{WalReceiverError, WalReceivers};

/// Shared state of the handlers.
#[derive(Clone)]
pub struct ApiState {
    pub mgr: Arc<TenantManager>,
    pub node_id: u64,
    pub walreceivers: Arc<WalReceivers>,
}

/// An error answer of the API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Internal(String),
    #[error("pageserver is shutting down")]
    ShuttingDown,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!("HTTP API error: {self}");
        }
        (status, axum::Json(HttpErrorBody::new(self.to_string()))).into_response()
    }
}

impl From<TenantError> for ApiError {
    fn from(e: TenantError) -> ApiError {
        let msg = e.to_string();
        match e {
            TenantError::TenantNotFound(_) | TenantError::TimelineNotFound(_) => {
                ApiError::NotFound(msg)
            }
            TenantError::TenantExists(_)
            | TenantError::TimelineExists(_)
            | TenantError::Broken { .. } => ApiError::Conflict(msg),
            TenantError::BadRequest(_) => ApiError::BadRequest(msg),
            TenantError::ShuttingDown => ApiError::ShuttingDown,
            TenantError::Timeline(_) | TenantError::Bootstrap(_) | TenantError::Io { .. } => {
                ApiError::Internal(msg)
            }
        }
    }
}

impl From<WalReceiverError> for ApiError {
    fn from(e: WalReceiverError) -> ApiError {
        let msg = e.to_string();
        match e {
            WalReceiverError::BadSource(_) => ApiError::BadRequest(msg),
            WalReceiverError::ShuttingDown => ApiError::ShuttingDown,
            WalReceiverError::File(_) => ApiError::Internal(msg),
        }
    }
}

/// HTTP method of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "get",
            Method::Post => "post",
            Method::Put => "put",
            Method::Delete => "delete",
        }
    }
}

/// Every route of the API: method and path in OpenAPI syntax (`{param}`).
pub const ROUTES: &[(Method, &str)] = &[
    (Method::Get, "/v1/status"),
    (Method::Get, "/metrics"),
    (Method::Post, "/v1/tenant"),
    (Method::Get, "/v1/tenant"),
    (Method::Put, "/v1/tenant/config"),
    (Method::Get, "/v1/tenant/{tenant_id}"),
    (Method::Delete, "/v1/tenant/{tenant_id}"),
    (Method::Post, "/v1/tenant/{tenant_id}/timeline"),
    (Method::Get, "/v1/tenant/{tenant_id}/timeline"),
    (Method::Get, "/v1/tenant/{tenant_id}/timeline/{timeline_id}"),
    (
        Method::Put,
        "/v1/tenant/{tenant_id}/timeline/{timeline_id}/checkpoint",
    ),
    (
        Method::Put,
        "/v1/tenant/{tenant_id}/timeline/{timeline_id}/compact",
    ),
    (
        Method::Put,
        "/v1/tenant/{tenant_id}/timeline/{timeline_id}/wal_source",
    ),
    (
        Method::Get,
        "/v1/tenant/{tenant_id}/timeline/{timeline_id}/wal_source",
    ),
    (
        Method::Delete,
        "/v1/tenant/{tenant_id}/timeline/{timeline_id}/wal_source",
    ),
];

/// `{param}` → `:param` (axum 0.7 path syntax).
fn axum_path(path: &str) -> String {
    path.replace('{', ":").replace('}', "")
}

/// Builds the router from [`ROUTES`].
pub fn router(state: ApiState) -> Router {
    let mut by_path: Vec<(String, MethodRouter<ApiState>)> = Vec::new();
    for (method, path) in ROUTES {
        let handler = routes::handler(*method, path)
            .unwrap_or_else(|| panic!("route {method:?} {path} has no handler"));
        match by_path.iter_mut().find(|(p, _)| p == path) {
            Some((_, mr)) => *mr = std::mem::replace(mr, MethodRouter::new()).merge(handler),
            None => by_path.push((path.to_string(), handler)),
        }
    }
    let mut router = Router::new();
    for (path, mr) in by_path {
        router = router.route(&axum_path(&path), mr);
    }
    router
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .with_state(state)
}

/// Serves the API on `listener` until `cancel` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!("HTTP API listening on {addr:?}");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_a_handler() {
        for (m, p) in ROUTES {
            assert!(routes::handler(*m, p).is_some(), "{m:?} {p}");
        }
    }

    #[test]
    fn errors_map_to_statuses() {
        let t = utils::id::TenantId::generate();
        assert_eq!(
            ApiError::from(TenantError::TenantNotFound(t)).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            ApiError::from(TenantError::TenantExists(t)).status(),
            StatusCode::CONFLICT
        );
        assert_eq!(
            ApiError::from(TenantError::ShuttingDown).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
