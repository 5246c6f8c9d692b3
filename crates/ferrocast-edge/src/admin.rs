use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::edge::Edge;

/// Renders the Prometheus text exposition of every metric.
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

#[derive(Clone)]
struct AdminState {
    edge: Edge,
    render: MetricsRender,
}

/// The admin listener's routes: `/metrics`, `/healthz` (the process is alive)
/// and `/readyz` (the backplane is up and the node is not draining).
pub fn admin_router(edge: Edge, render: MetricsRender) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(AdminState { edge, render })
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        (state.render)(),
    )
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    if state.edge.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready: draining\n");
    }
    let requires = state.edge.settings().ready_requires_backplane;
    if requires && !*state.edge.hub().backplane_health().borrow() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: backplane down\n",
        );
    }
    (StatusCode::OK, "ready\n")
}
