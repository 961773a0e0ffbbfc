//! What an operator sees of a running server: one access-log line per request, protocol events
//! in the log, Prometheus metrics (`GET /metrics`), and the load balancer's probes
//! (`GET /healthz`, `GET /readyz`).
//!
//! Logs are `tracing` events; the binary installs the subscriber (text or JSON lines). No secret
//! reaches them: requests are logged by method, route (the router's pattern, not the path with
//! its ids), status, latency, request id and, once its token is checked, the device id; protocol
//! events by session id, kind, outcome and the party at fault. A test runs every protocol at
//! trace level and searches the log for shares, passphrases, tokens and key material.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::Serialize;

use crate::state::AppState;

/// Requests answered, by method, route and status.
pub const REQUESTS: &str = "tessera_http_requests_total";
/// Time to answer a request, by method and route.
pub const REQUEST_SECONDS: &str = "tessera_http_request_duration_seconds";
/// Answers with 401, by route.
pub const AUTH_FAILURES: &str = "tessera_auth_failures_total";
/// Requests refused by a rate limit, by scope (`address`, `device`).
pub const RATE_LIMITED: &str = "tessera_rate_limited_total";
/// Signing requests refused by a policy, by rule.
pub const POLICY_DENIALS: &str = "tessera_policy_denials_total";
/// Protocol sessions of the server's party that ended, by kind and outcome.
pub const SESSIONS: &str = "tessera_sessions_total";
/// Time from the start of the server's run to its end, by kind.
pub const SESSION_SECONDS: &str = "tessera_session_duration_seconds";
/// Database latency: starting a write transaction (`begin`, which waits for SQLite's write lock),
/// committing one (`commit`), and the readiness probe's query (`ping`).
pub const DATABASE_SECONDS: &str = "tessera_database_seconds";
/// Protocol sockets and server runs alive now, by kind (`session`, `party`, `relay`, `run`).
pub const OPEN_SOCKETS: &str = "tessera_open_websockets";

/// The `x-request-id` header: taken from the request when it is a plain token (at most 64
/// letters, digits, `-`, `_`, `.`), made otherwise, and returned on the answer.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The process's metrics, installed as the global `metrics` recorder on first use (once per
/// process: every server in one process shares them).
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        const BUCKETS: [f64; 14] = [
            0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
        ];
        let builder = PrometheusBuilder::new();
        // Histograms (with buckets) rather than summaries for every duration.
        let builder =
            match builder.set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS) {
                Ok(b) => b,
                Err(_) => PrometheusBuilder::new(),
            };
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed: /metrics stays empty");
        }
        describe();
        handle
    })
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        REQUESTS,
        "HTTP requests answered, by method, route and status"
    );
    describe_histogram!(
        REQUEST_SECONDS,
        Unit::Seconds,
        "Time to answer an HTTP request"
    );
    describe_counter!(AUTH_FAILURES, "Requests answered 401, by route");
    describe_counter!(RATE_LIMITED, "Requests refused by a rate limit, by scope");
    describe_counter!(
        POLICY_DENIALS,
        "Signing requests refused by a policy, by rule"
    );
    describe_counter!(SESSIONS, "Protocol sessions ended, by kind and outcome");
    describe_histogram!(
        SESSION_SECONDS,
        Unit::Seconds,
        "Duration of the server's run in a protocol session, by kind"
    );
    describe_histogram!(
        DATABASE_SECONDS,
        Unit::Seconds,
        "Database latency, by operation"
    );
    describe_gauge!(
        OPEN_SOCKETS,
        "Protocol sockets and server runs alive, by kind"
    );
}

/// Records a database operation's latency.
pub fn database(op: &'static str, started: Instant) {
    metrics::histogram!(DATABASE_SECONDS, "op" => op).record(started.elapsed().as_secs_f64());
}

/// Records a rate-limit refusal.
pub fn rate_limited(scope: &'static str) {
    metrics::counter!(RATE_LIMITED, "scope" => scope).increment(1);
}

/// Logs and counts a policy denial of a signing request of `kind`.
pub fn policy_denied(kind: &str, rule: &'static str) {
    tracing::info!(kind, rule, "policy denied a signing request");
    metrics::counter!(POLICY_DENIALS, "rule" => rule).increment(1);
}

/// Logs the start of the server's run in a session.
pub fn session_started(kind: &'static str, session_id: &str) {
    tracing::info!(session_id, kind, "session started");
}

/// Logs and counts the end of the server's run in a session: `outcome` is the session's final
/// status, `party` the party at fault where one is named.
pub fn session_ended(
    kind: &'static str,
    session_id: &str,
    outcome: &str,
    party: Option<u8>,
    detail: Option<&str>,
    started: Instant,
) {
    let elapsed = started.elapsed();
    let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
    match (outcome, party) {
        ("done", _) => tracing::info!(session_id, kind, outcome, duration_ms = ms, "session ended"),
        (_, Some(party)) => tracing::warn!(
            session_id,
            kind,
            outcome,
            party,
            detail,
            duration_ms = ms,
            "session failed, naming the party at fault"
        ),
        (_, None) => {
            tracing::info!(
                session_id,
                kind,
                outcome,
                detail,
                duration_ms = ms,
                "session ended"
            );
        }
    }
    metrics::counter!(SESSIONS, "kind" => kind, "outcome" => outcome.to_string()).increment(1);
    metrics::histogram!(SESSION_SECONDS, "kind" => kind).record(elapsed.as_secs_f64());
}

/// Middleware: the request id (taken or made, returned on the answer), and the request's metrics.
/// The access-log line itself is the trace layer's ([`access_log`]), inside this.
pub async fn requests(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&REQUEST_ID)
        .filter(|v| plain_request_id(v.as_bytes()))
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
                .unwrap_or(HeaderValue::from_static("-"))
        });
    request.headers_mut().insert(REQUEST_ID, id.clone());
    let method = method_label(request.method());
    let route = route_of(&request);
    let started = Instant::now();
    let mut response = next.run(request).await;
    let status = response.status();
    metrics::counter!(REQUESTS, "method" => method, "route" => route.clone(), "status" => status.as_u16().to_string())
        .increment(1);
    metrics::histogram!(REQUEST_SECONDS, "method" => method, "route" => route.clone())
        .record(started.elapsed().as_secs_f64());
    if status == StatusCode::UNAUTHORIZED {
        metrics::counter!(AUTH_FAILURES, "route" => route).increment(1);
    }
    response.headers_mut().insert(REQUEST_ID, id);
    response
}

/// The method as a metrics label: one of the standard methods, or `OTHER` (a client may send
/// any token as a method, and every label value is a series kept for the process's life).
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

fn plain_request_id(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The route's pattern (`/devices/{id}/revoke`), never the path with its values: bounded label
/// cardinality, and no ids or names of users in the log.
fn route_of(request: &Request) -> String {
    request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string())
}

/// The trace layer of [`access_log`].
pub type AccessLog = tower_http::trace::TraceLayer<
    tower_http::classify::SharedClassifier<tower_http::classify::ServerErrorsAsFailures>,
    fn(&Request) -> tracing::Span,
    (),
    fn(&Response, Duration, &tracing::Span),
    (),
    (),
    (),
>;

/// The access log, as `tower-http`'s trace layer: a span per request ([`request_span`]) and one
/// `info` line when the answer leaves ([`request_done`]); nothing per body chunk, and failures
/// are the answer's status (a 500's cause is logged where it happened).
pub fn access_log() -> AccessLog {
    tower_http::trace::TraceLayer::new_for_http()
        .make_span_with(request_span as fn(&Request) -> tracing::Span)
        .on_request(())
        .on_response(request_done as fn(&Response, Duration, &tracing::Span))
        .on_body_chunk(())
        .on_eos(())
        .on_failure(())
}

/// A request's span: method, route, request id, and the device id that the token extractor
/// records ([`authenticated`]).
fn request_span(request: &Request) -> tracing::Span {
    let request_id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!(
        "request",
        method = %request.method(),
        route = %route_of(request),
        request_id,
        device_id = tracing::field::Empty,
    )
}

/// The access-log line: status and latency, inside the request's span.
fn request_done(response: &Response, latency: Duration, _span: &tracing::Span) {
    let latency_ms = latency.as_secs_f64() * 1000.0;
    tracing::info!(status = response.status().as_u16(), latency_ms, "request");
}

/// Records the authenticated device on the request's span (the access log's `device_id`).
pub fn authenticated(device_id: &str) {
    tracing::Span::current().record("device_id", device_id);
}

/// The probes and `/metrics` (when not on a listen address of its own).
pub(crate) fn router(metrics_here: bool) -> Router<AppState> {
    use axum::routing::get;
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    if metrics_here {
        router.route("/metrics", get(render_metrics))
    } else {
        router
    }
}

/// Serves `GET /metrics` alone on `listener` (a listen address of its own) until the process
/// ends.
///
/// # Errors
/// An I/O error of the listener.
pub async fn serve_metrics(listener: tokio::net::TcpListener) -> std::io::Result<()> {
    let _ = metrics();
    axum::serve(
        listener,
        Router::new().route("/metrics", axum::routing::get(render_metrics)),
    )
    .await
}

#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format (absent when the server has --metrics-listen)", content_type = "text/plain", body = String), crate::openapi::Errors))]
pub(crate) async fn render_metrics() -> impl IntoResponse {
    let handle = metrics();
    handle.run_upkeep();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
}

/// `GET /healthz`'s answer.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Health {
    /// Always `ok`.
    status: &'static str,
}

/// `GET /healthz`: the process is alive and answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "The process is alive", body = Health), crate::openapi::Errors))]
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// One readiness check.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Check {
    /// Whether it passed.
    ok: bool,
    /// Why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl Check {
    fn of(result: Result<(), String>) -> Check {
        match result {
            Ok(()) => Check {
                ok: true,
                error: None,
            },
            Err(e) => Check {
                ok: false,
                error: Some(e),
            },
        }
    }
}

/// `GET /readyz`'s answer: each check, and `ready` or `not_ready`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Readiness {
    /// `ready` or `not_ready`.
    status: &'static str,
    /// The database answers a query.
    database: Check,
    /// Its schema is the one this server's migrations make.
    migrations: Check,
    /// The key-encryption key wraps and unwraps a fresh key.
    kek: Check,
    /// The server is not shutting down.
    serving: Check,
}

/// `GET /readyz`: 200 when the database answers, its schema is the one this server knows, the
/// key-encryption key wraps and unwraps a fresh key, and the server is not shutting down; 503
/// naming the failing checks otherwise.
///
/// Anyone may ask (a load balancer has no token), so an answer says which check failed but
/// not the database's or the HSM's own error text (that goes to the log); each check is bounded
/// by [`CHECK_TIMEOUT`]; and the key-encryption key, an HSM call for PKCS#11, is checked at most
/// once per [`KEK_CHECK_EVERY`].
#[utoipa::path(get, path = "/readyz", tag = "operations", responses((status = 200, description = "Ready: every check passed", body = Readiness), (status = 503, description = "Not ready: the failing checks say why", body = Readiness), crate::openapi::Errors))]
pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    let started = Instant::now();
    let database = match tokio::time::timeout(
        CHECK_TIMEOUT,
        sqlx::query("SELECT 1").execute(state.db()),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: the database does not answer");
            Err("the database does not answer".to_string())
        }
        Err(_) => Err(format!(
            "the database did not answer within {} s",
            CHECK_TIMEOUT.as_secs()
        )),
    };
    database_ping(started);
    let migrations = if database.is_ok() {
        match tokio::time::timeout(
            CHECK_TIMEOUT,
            crate::db::schema_current(state.db(), state.backend()),
        )
        .await
        {
            Ok(checked) => checked,
            Err(_) => Err("the applied migrations could not be read in time".into()),
        }
    } else {
        Err("not checked: the database does not answer".into())
    };
    let kek = kek_usable(&state).await;
    let serving = match state.shutdown().phase() {
        crate::shutdown::Phase::Serving => Ok(()),
        _ => Err("the server is shutting down".into()),
    };
    let ready = database.is_ok() && migrations.is_ok() && kek.is_ok() && serving.is_ok();
    let body = Readiness {
        status: if ready { "ready" } else { "not_ready" },
        database: Check::of(database),
        migrations: Check::of(migrations),
        kek: Check::of(kek),
        serving: Check::of(serving),
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// How long one readiness check may take before it counts as failed.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a key-encryption key check's result is reused.
pub const KEK_CHECK_EVERY: Duration = Duration::from_secs(5);

fn database_ping(started: Instant) {
    database("ping", started);
}

/// The key-encryption key check, reused for [`KEK_CHECK_EVERY`].
async fn kek_usable(state: &AppState) -> Result<(), String> {
    if let Some(recent) = state.kek_checked(KEK_CHECK_EVERY) {
        return recent;
    }
    let checked = match tokio::time::timeout(CHECK_TIMEOUT, wrap_and_unwrap(state)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: the key-encryption key failed");
            Err("the key-encryption key cannot wrap and unwrap a key".to_string())
        }
        Err(_) => Err(format!(
            "the key-encryption key did not answer within {} s",
            CHECK_TIMEOUT.as_secs()
        )),
    };
    state.record_kek_check(checked.clone());
    checked
}

/// Wraps a fresh data key under the key-encryption key and unwraps it again (an HSM call each
/// for PKCS#11, off the async threads).
async fn wrap_and_unwrap(state: &AppState) -> Result<(), String> {
    let state = state.clone();
    tokio::task::spawn_blocking(move || {
        let key = tessera_store::kek::DataKey::generate();
        let kek = state.kek();
        let wrapped = kek
            .wrap(&key)
            .map_err(|e| format!("the key-encryption key cannot wrap: {e}"))?;
        let back = kek
            .unwrap(&wrapped)
            .map_err(|e| format!("the key-encryption key cannot unwrap: {e}"))?;
        if back.expose_secret() == key.expose_secret() {
            Ok(())
        } else {
            Err("the key-encryption key unwrapped another key".into())
        }
    })
    .await
    .map_err(|e| format!("the key-encryption key check did not finish: {e}"))?
}
