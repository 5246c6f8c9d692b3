//! The server API as JSON over HTTP, under `/api/` on the admin listener:
//! the gRPC calls with JSON bodies (docs/api.md). Subscribe is
//! `GET /api/subscribe`, answered with Server-Sent Events, so that a page
//! (the admin UI) follows a topic with `fetch()` and the Bearer header.
//! `GET /api/config` answers the node's effective configuration.
//!
//! Payloads are JSON values (`data`), or bytes as `data_base64` with a
//! `content_type`. Errors are `{"error":{"code":…,"message":…}}` under the
//! status of [`ApiError::http_status`].

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderName};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bytes::Bytes;
use futures::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::access::Access;
use crate::error::ApiError;
use crate::pb;
use crate::service::{record, Api, Subscribed};

/// How often an idle `/api/subscribe` stream sends a comment, so that
/// proxies that cut idle responses leave it open.
const STREAM_KEEPALIVE: Duration = Duration::from_secs(15);

/// The `/api/...` routes, checking the API key of every call with `access`.
pub fn http_router(api: Api, access: Access) -> Router {
    Router::new()
        .route("/api/publish", post(publish))
        .route("/api/broadcast", post(broadcast))
        .route("/api/history", post(history))
        .route("/api/presence", post(presence))
        .route("/api/presence_stats", post(presence_stats))
        .route("/api/disconnect", post(disconnect))
        .route("/api/unsubscribe", post(unsubscribe))
        .route("/api/info", get(info).post(info))
        .route("/api/subscribe", get(subscribe))
        .route("/api/config", get(config))
        .route_layer(middleware::from_fn_with_state(access, check_key))
        .with_state(api)
}

async fn check_key(State(access): State<Access>, request: Request, next: Next) -> Response {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|value| value.as_bytes());
    match access.check(authorization) {
        Ok(()) => next.run(request).await,
        Err(error) => {
            record("any", "http", Instant::now(), error.code());
            failure(error)
        }
    }
}

fn failure(error: ApiError) -> Response {
    let body = json!({"error": {"code": error.code(), "message": error.to_string()}});
    (error.http_status(), Json(body)).into_response()
}

/// Runs one call, recording it, and renders its answer.
async fn answer<T: Serialize>(
    method: &'static str,
    call: impl std::future::Future<Output = Result<T, ApiError>>,
) -> Response {
    let started = Instant::now();
    let result = call.await;
    record(
        method,
        "http",
        started,
        result.as_ref().map_or_else(|e| e.code(), |_| "ok"),
    );
    match result {
        Ok(body) => Json(body).into_response(),
        Err(error) => failure(error),
    }
}

/// The request body, or the error that says what is wrong with it.
fn body<T>(parsed: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    parsed
        .map(|Json(body)| body)
        .map_err(|rejection| ApiError::InvalidArgument(rejection.body_text()))
}

/// The body of publish (`topic`) and broadcast (`topics`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageBody {
    topic: Option<String>,
    topics: Option<Vec<String>>,
    /// A JSON value, published as JSON.
    data: Option<Box<RawValue>>,
    /// Or bytes, with `content_type`.
    data_base64: Option<String>,
    #[serde(default)]
    content_type: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

impl MessageBody {
    fn into_parts(self) -> Result<(Bytes, String, Vec<pb::Header>), ApiError> {
        let data = match (self.data, self.data_base64) {
            (Some(json), None) if self.content_type.is_empty() => {
                Bytes::from(json.get().to_owned())
            }
            (Some(_), None) => {
                return Err(ApiError::InvalidArgument(
                    "data is a JSON value: send other media as data_base64 with content_type"
                        .into(),
                ))
            }
            (None, Some(encoded)) if !self.content_type.is_empty() => {
                Bytes::from(BASE64.decode(encoded.as_bytes()).map_err(|e| {
                    ApiError::InvalidArgument(format!("data_base64 is not base64: {e}"))
                })?)
            }
            (None, Some(_)) => {
                return Err(ApiError::InvalidArgument(
                    "data_base64 needs a content_type".into(),
                ))
            }
            _ => {
                return Err(ApiError::InvalidArgument(
                    "give exactly one of data (JSON) or data_base64".into(),
                ))
            }
        };
        let headers = self
            .headers
            .into_iter()
            .map(|(name, value)| pb::Header { name, value })
            .collect();
        Ok((data, self.content_type, headers))
    }
}

async fn publish(
    State(api): State<Api>,
    parsed: Result<Json<MessageBody>, JsonRejection>,
) -> Response {
    answer("publish", async move {
        let mut request = body(parsed)?;
        let topic = match (request.topic.take(), &request.topics) {
            (Some(topic), None) => topic,
            _ => {
                return Err(ApiError::InvalidArgument(
                    "publish needs topic (broadcast takes topics)".into(),
                ))
            }
        };
        let (data, content_type, headers) = request.into_parts()?;
        let response = api
            .publish(pb::PublishRequest {
                topic,
                data,
                content_type,
                headers,
            })
            .await?;
        Ok(json!({"position": response.position.map(position_json)}))
    })
    .await
}

async fn broadcast(
    State(api): State<Api>,
    parsed: Result<Json<MessageBody>, JsonRejection>,
) -> Response {
    answer("broadcast", async move {
        let mut request = body(parsed)?;
        let topics = match (&request.topic, request.topics.take()) {
            (None, Some(topics)) => topics,
            _ => return Err(ApiError::InvalidArgument("broadcast needs topics (publish takes topic)".into())),
        };
        let (data, content_type, headers) = request.into_parts()?;
        let response = api
            .broadcast(pb::BroadcastRequest {
                topics,
                data,
                content_type,
                headers,
            })
            .await?;
        let results: Vec<Value> = response
            .results
            .into_iter()
            .map(|result| match result.error {
                Some(error) => json!({"topic": result.topic, "error": {"code": error.code, "message": error.message}}),
                None => json!({"topic": result.topic, "position": result.position.map(position_json)}),
            })
            .collect();
        Ok(json!({ "results": results }))
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PositionBody {
    epoch: String,
    offset: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryBody {
    topic: String,
    since: Option<PositionBody>,
    #[serde(default)]
    limit: u32,
}

async fn history(
    State(api): State<Api>,
    parsed: Result<Json<HistoryBody>, JsonRejection>,
) -> Response {
    answer("history", async move {
        let request = body(parsed)?;
        let response = api
            .history(pb::HistoryRequest {
                topic: request.topic,
                since: request.since.map(|s| pb::StreamPosition {
                    epoch: s.epoch,
                    offset: s.offset,
                }),
                limit: request.limit,
            })
            .await?;
        let publications: Vec<Value> = response
            .publications
            .into_iter()
            .map(publication_json)
            .collect();
        Ok(json!({
            "top": response.top.map(position_json),
            "recovered": response.recovered,
            "publications": publications,
        }))
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicBody {
    topic: String,
}

async fn presence(
    State(api): State<Api>,
    parsed: Result<Json<TopicBody>, JsonRejection>,
) -> Response {
    answer("presence", async move {
        let request = body(parsed)?;
        let response = api
            .presence(pb::PresenceRequest {
                topic: request.topic,
            })
            .await?;
        let clients: Vec<Value> = response
            .clients
            .into_iter()
            .map(|c| {
                let mut entry = json!({"client": c.client, "node": c.node, "joined_at_millis": c.joined_at_millis});
                if !c.user.is_empty() {
                    entry["user"] = Value::String(c.user);
                }
                entry
            })
            .collect();
        Ok(json!({ "clients": clients }))
    })
    .await
}

async fn presence_stats(
    State(api): State<Api>,
    parsed: Result<Json<TopicBody>, JsonRejection>,
) -> Response {
    answer("presence_stats", async move {
        let request = body(parsed)?;
        let response = api
            .presence_stats(pb::PresenceRequest {
                topic: request.topic,
            })
            .await?;
        Ok(json!({"clients": response.clients, "users": response.users}))
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetBody {
    #[serde(default)]
    user: String,
    #[serde(default)]
    client: String,
    /// Unsubscribe only.
    topic: Option<String>,
}

impl TargetBody {
    fn target(&self) -> pb::Target {
        pb::Target {
            user: self.user.clone(),
            client: self.client.clone(),
        }
    }
}

async fn disconnect(
    State(api): State<Api>,
    parsed: Result<Json<TargetBody>, JsonRejection>,
) -> Response {
    answer("disconnect", async move {
        let request = body(parsed)?;
        if request.topic.is_some() {
            return Err(ApiError::InvalidArgument(
                "disconnect takes user or client, no topic".into(),
            ));
        }
        let response = api
            .disconnect(pb::DisconnectRequest {
                target: Some(request.target()),
            })
            .await?;
        Ok(json!({
            "disconnected": response.disconnected,
            "coverage": response.coverage.map(coverage_json),
        }))
    })
    .await
}

async fn unsubscribe(
    State(api): State<Api>,
    parsed: Result<Json<TargetBody>, JsonRejection>,
) -> Response {
    answer("unsubscribe", async move {
        let request = body(parsed)?;
        let topic = request
            .topic
            .clone()
            .ok_or_else(|| ApiError::InvalidArgument("unsubscribe needs a topic".into()))?;
        let response = api
            .unsubscribe(pb::UnsubscribeRequest {
                target: Some(request.target()),
                topic,
            })
            .await?;
        Ok(json!({
            "unsubscribed": response.unsubscribed,
            "coverage": response.coverage.map(coverage_json),
        }))
    })
    .await
}

async fn info(State(api): State<Api>) -> Response {
    answer("info", async move {
        let response = api.info();
        let nodes: Vec<Value> = response
            .nodes
            .into_iter()
            .map(|n| {
                json!({
                    "id": n.id,
                    "version": n.version,
                    "backplane": n.backplane,
                    "uptime_seconds": n.uptime_seconds,
                    "connections": n.connections,
                    "subscriptions": n.subscriptions,
                    "topics": n.topics,
                    "draining": n.draining,
                    "last_seen_millis": n.last_seen_millis,
                    "connections_by_protocol": n.connections_by_protocol,
                    "messages_delivered": n.messages_delivered,
                    "messages_published": n.messages_published,
                    "backplane_up": n.backplane_up,
                })
            })
            .collect();
        Ok(json!({
            "nodes": nodes,
            "connections": response.connections,
            "subscriptions": response.subscriptions,
        }))
    })
    .await
}

/// The query of `GET /api/subscribe`: a topic or pattern, and where a
/// topic with history resumes from (`epoch` and `offset` together).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscribeQuery {
    topic: String,
    epoch: Option<String>,
    offset: Option<u64>,
}

/// `GET /api/subscribe`: Subscribe as Server-Sent Events. The stream opens
/// with `event: subscribed` (`{"recovered":…}`), carries each publication
/// as `event: publication` in the form of `/api/history`, and ends with
/// `event: error` (`{"error":{"code","message"}}`) when the node drains or
/// the reader falls too far behind. A refusal before the stream opens is
/// the usual JSON error.
async fn subscribe(
    State(api): State<Api>,
    query: Result<Query<SubscribeQuery>, QueryRejection>,
) -> Response {
    let started = Instant::now();
    let opened = async {
        let Query(query) = query.map_err(|r| ApiError::InvalidArgument(r.body_text()))?;
        let since = match (query.epoch, query.offset) {
            (Some(epoch), Some(offset)) => Some(pb::StreamPosition { epoch, offset }),
            (None, None) => None,
            _ => {
                return Err(ApiError::InvalidArgument(
                    "resuming needs both epoch and offset".into(),
                ))
            }
        };
        api.subscribe(pb::SubscribeRequest {
            topic: query.topic,
            since,
        })
        .await
    }
    .await;
    record(
        "subscribe",
        "http",
        started,
        opened.as_ref().map_or_else(|e| e.code(), |_| "ok"),
    );
    let Subscribed {
        recovered,
        publications,
    } = match opened {
        Ok(subscribed) => subscribed,
        Err(error) => return failure(error),
    };
    let first = event("subscribed", &json!({ "recovered": recovered }));
    let events = publications.map(|item| match item {
        Ok(publication) => event("publication", &publication_json(publication)),
        Err(error) => event(
            "error",
            &json!({"error": {"code": error.code(), "message": error.to_string()}}),
        ),
    });
    // The keep-alive runs beside the events and ends with them.
    let keepalive = stream::unfold((), |()| async {
        tokio::time::sleep(STREAM_KEEPALIVE).await;
        Some((Some(Bytes::from_static(b": keep-alive\n\n")), ()))
    });
    let body = stream::select(
        stream::once(async { first })
            .chain(events)
            .map(Some)
            .chain(stream::once(async { None })),
        keepalive,
    )
    .take_while(|chunk| futures::future::ready(chunk.is_some()))
    .filter_map(|chunk| async { chunk.map(Ok::<_, Infallible>) });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            // nginx buffers responses unless told not to.
            (HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// One Server-Sent Event named `name` with `data` on one line.
fn event(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// `GET /api/config`: the node's effective configuration as
/// `--print-config` prints it, secrets redacted.
async fn config(State(api): State<Api>) -> Response {
    answer("config", async move {
        let config = api.config();
        let namespaces: Vec<Value> = config
            .namespaces
            .iter()
            .map(|ns| {
                json!({
                    "name": ns.name,
                    "history_size": ns.history_size,
                    "history_ttl_seconds": ns.history_ttl_seconds,
                    "presence": ns.presence,
                    "anonymous": ns.anonymous,
                    "client_publish": ns.client_publish,
                })
            })
            .collect();
        Ok(json!({
            "node": api.node_id(),
            "toml": config.toml,
            "namespaces": namespaces,
        }))
    })
    .await
}

fn position_json(position: pb::StreamPosition) -> Value {
    json!({"epoch": position.epoch, "offset": position.offset})
}

fn coverage_json(coverage: pb::Coverage) -> Value {
    json!({"answered": coverage.answered, "missing": coverage.missing})
}

/// A publication as the JSON protocol shows it: JSON data as a value, other
/// media as a string (UTF-8) or base64 (`"encoding":"base64"`).
fn publication_json(p: pb::Publication) -> Value {
    let mut out = json!({"topic": p.topic, "published_at_micros": p.published_at_micros});
    let json_data = p
        .content_type
        .is_empty()
        .then(|| serde_json::from_slice::<Value>(&p.data).ok())
        .flatten();
    match (json_data, std::str::from_utf8(&p.data)) {
        (Some(value), _) => out["data"] = value,
        (None, Ok(text)) => out["data"] = Value::String(text.to_owned()),
        (None, Err(_)) => {
            out["data"] = Value::String(BASE64.encode(&p.data));
            out["encoding"] = Value::from("base64");
        }
    }
    if !p.content_type.is_empty() {
        out["content_type"] = Value::String(p.content_type);
    }
    if !p.headers.is_empty() {
        let headers: BTreeMap<String, String> =
            p.headers.into_iter().map(|h| (h.name, h.value)).collect();
        out["headers"] = json!(headers);
    }
    if let Some(position) = p.position {
        out["offset"] = Value::from(position.offset);
        out["epoch"] = Value::String(position.epoch);
    }
    out
}
