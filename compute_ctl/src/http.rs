//! The HTTP API on 127.0.0.1:<http-port> (axum):
//!
//! - `GET /status` → `ComputeStatusResponse` JSON;
//! - `GET /metrics` → Prometheus text;
//! - `POST /configure` (body: a compute spec) → status JSON once applied; 400 for a bad or
//!   incompatible spec, 409 unless running, 500 if applying failed;
//! - `POST /terminate?mode=fast|immediate` → status JSON once PostgreSQL exited; compute_ctl
//!   exits after answering.
//!
//! Errors are `{"error": "..."}`.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use compute_api::responses::{GenericError, TerminateMode};
use compute_api::spec::{ComputeSpec, MAX_SPEC_BYTES};
use serde::Deserialize;

use crate::compute::{ApiError, Compute};

/// The routes, bound to one compute.
pub fn router(compute: Arc<Compute>) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/configure", post(configure))
        .route("/terminate", post(terminate))
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_SPEC_BYTES))
        .with_state(compute)
}

fn error(code: StatusCode, message: impl Into<String>) -> Response {
    (
        code,
        Json(GenericError {
            error: message.into(),
        }),
    )
        .into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        error(code, self.message)
    }
}

async fn status(State(c): State<Arc<Compute>>) -> Response {
    Json(c.state.response()).into_response()
}

async fn metrics(State(c): State<Arc<Compute>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        c.state.metrics(),
    )
        .into_response()
}

async fn configure(State(c): State<Arc<Compute>>, body: String) -> Response {
    let spec = match ComputeSpec::parse(&body) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    match c.configure(spec).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct TerminateParams {
    mode: Option<String>,
}

async fn terminate(State(c): State<Arc<Compute>>, Query(q): Query<TerminateParams>) -> Response {
    let mode = match q.mode.as_deref().map(str::parse::<TerminateMode>) {
        None => TerminateMode::Fast,
        Some(Ok(m)) => m,
        Some(Err(e)) => return error(StatusCode::BAD_REQUEST, e),
    };
    let r = c.terminate(mode).await;
    // The server shuts down gracefully: this answer is still delivered.
    c.exit.cancel();
    Json(r).into_response()
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such endpoint")
}
