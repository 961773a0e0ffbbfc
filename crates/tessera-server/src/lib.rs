//! Tessera commitment server: the always-on co-signing party (party 1) of 2-of-2 wallets.
//!
//! REST for registration, authentication and creating sessions; one WebSocket per session runs
//! the protocol with the sans-IO sessions of `tessera-core`. State lives in SQLite (the data
//! directory); the server's shares are sealed under a key-encryption key.
#![forbid(unsafe_code)]
#![deny(missing_docs, clippy::unwrap_used)]

pub mod approval_rule;
pub mod audit;
pub mod auth;
pub mod backups;
pub mod bans;
pub mod caller;
pub mod clock;
pub mod coordinator;
pub mod db;
pub mod enrolment;
pub mod error;
pub mod events;
pub mod exports;
pub mod extract;
pub mod files;
pub mod held;
pub mod hold;
pub mod isolation;
pub mod limits;
pub mod live_sessions;
pub mod mailboxes;
pub mod names;
pub mod observe;
pub mod openapi;
pub mod policy;
pub mod policy_change;
pub mod policy_proposals;
pub mod registry;
pub mod relay;
pub mod release;
pub mod requests;
pub mod reshare;
pub mod service_accounts;
pub mod session_link;
pub mod session_pump;
pub mod shutdown;
pub mod state;
pub mod tls;
pub mod tokens;
pub mod vault;
pub mod wallet_parties;
pub mod wallets;
pub mod webhooks;
pub mod ws;

use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::{Json, Router};
use tessera_api as api;

pub use state::{AppState, Config};

/// Largest JSON body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

#[utoipa::path(get, path = "/status", tag = "operations", responses((status = 200, description = "The server runs; its version", body = api::Status), crate::openapi::Errors))]
pub(crate) async fn status() -> Json<api::Status> {
    Json(api::Status {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

/// The whole HTTP API, testable without a socket: the areas' routers, an error answer in the
/// one JSON shape ([`error::ApiError`]) for unknown paths and methods, the body limit and the
/// per-address rate limit around all of it.
pub fn app(state: AppState) -> Router {
    // The metrics recorder exists before the first request counts anything.
    let _ = observe::metrics();
    Router::new()
        .route("/status", get(status))
        .merge(observe::router(state.config().metrics_on_api))
        .route("/openapi.json", get(openapi::openapi_json))
        .merge(registry::router(&state))
        .merge(backups::router())
        .merge(exports::router())
        .merge(held::router())
        .merge(wallets::router())
        .merge(ws::router())
        .merge(relay::router())
        .merge(policy::router())
        .merge(audit::router())
        .merge(bans::router())
        .merge(requests::router())
        .merge(events::router())
        .merge(service_accounts::router())
        .merge(policy_proposals::router())
        .fallback(extract::no_such_path)
        // After every route is in: it applies to the routes present.
        .method_not_allowed_fallback(extract::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limits::per_address,
        ))
        // Outermost, so that rate-limited and refused requests are logged and counted too: the
        // access log's span, inside the request id and the metrics.
        .layer(observe::access_log())
        .layer(axum::middleware::from_fn(observe::requests))
        .with_state(state)
}

/// Background chores: dropping the shares kept unsealed past their time, forgetting idle
/// rate-limit keys, ending the sessions of dead replicas,
/// forgetting their mailboxes and relay codes, deleting stored frames nobody read, forgetting
/// the presence of requests that ended; and the webhook delivery worker when a webhook URL is
/// configured ([`webhooks::spawn_delivery`]).
pub fn spawn_housekeeping(state: &AppState) {
    webhooks::spawn_delivery(state);
    let state = state.clone();
    tokio::spawn(async move {
        let mut tick = 0u64;
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(10)).await;
            tick += 1;
            state.unsealed().forget_idle();
            if tick.is_multiple_of(6) {
                state.limits().forget_idle();
                state.registrations().forget_idle();
                observe::metrics().run_upkeep();
            }
            if let Err(e) = state.end_sessions_of_dead_replicas().await {
                tracing::warn!(error = %e, "could not check for dead replicas");
            }
            if let Err(e) = state.forget_dead_replicas().await {
                tracing::warn!(error = %e, "could not forget dead replicas' mailboxes");
            }
            if let Err(e) =
                db::wallet_changes::forget_presence_before(state.db(), state::now()).await
            {
                tracing::warn!(error = %e, "could not forget ended presence");
            }
            if let Err(e) = requests::expire_due(&state).await {
                tracing::warn!(error = %e, "could not expire the requests past their expiry");
            }
        }
    });
}

/// Serves `app` on `listener` until the process ends.
///
/// # Errors
/// An I/O error of the listener.
pub async fn serve(listener: tokio::net::TcpListener, state: AppState) -> std::io::Result<()> {
    serve_until(listener, state, std::future::pending::<()>())
        .await
        .map(|_| ())
}

/// Serves `app` on `listener` until `stop` completes (a signal, say), then shuts down
/// gracefully ([`shutdown`]): stops accepting, lets the running protocol sessions finish for
/// the configured grace period, closes the rest. Returns how the sessions ended.
///
/// # Errors
/// An I/O error of the listener.
pub async fn serve_until(
    listener: tokio::net::TcpListener,
    state: AppState,
    stop: impl Future + Send + 'static,
) -> std::io::Result<shutdown::Drained> {
    use axum::serve::ListenerExt;
    spawn_housekeeping(&state);
    // Protocol frames are small and answered at once: without TCP_NODELAY a frame written while
    // the previous one is unacknowledged waits for the peer's delayed ACK (about 40 ms on Linux),
    // e.g. the close after the last round.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY on a connection");
        }
    });
    let (stopped, on_stop) = tokio::sync::oneshot::channel::<()>();
    let drainer = tokio::spawn(drain_after(state.clone(), stop, stopped));
    let state_for_finish = state.clone();
    let served = axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        let _ = on_stop.await;
    })
    .into_future();
    finish(&state_for_finish, served, drainer).await
}

/// Waits for `stop`, starts draining (`stopped` tells the listener to stop accepting), then
/// drains the running sessions.
pub(crate) async fn drain_after(
    state: AppState,
    stop: impl Future,
    stopped: tokio::sync::oneshot::Sender<()>,
) -> shutdown::Drained {
    stop.await;
    state.shutdown().begin_draining();
    let running = state.shutdown().live();
    let grace = state.config().shutdown_grace;
    tracing::info!(
        running,
        grace_seconds = grace.as_secs(),
        "shutting down: no new connections; running sessions may finish"
    );
    let _ = stopped.send(());
    let drained = state.shutdown().drain(grace).await;
    tracing::info!(
        running = drained.running,
        closed = drained.closed,
        "shut down"
    );
    drained
}

/// The listener's end and the drain's: an error of the listener at once; otherwise the drain's
/// result, once the HTTP requests still in flight (a `POST /sign` that creates a session, say)
/// finished too, or the grace period is over.
pub(crate) async fn finish<E>(
    state: &AppState,
    served: impl Future<Output = Result<(), E>>,
    drainer: tokio::task::JoinHandle<shutdown::Drained>,
) -> Result<shutdown::Drained, E> {
    let joined = |j: Result<shutdown::Drained, tokio::task::JoinError>| {
        j.unwrap_or(shutdown::Drained {
            running: 0,
            closed: 0,
        })
    };
    let mut drainer = drainer;
    let mut served = std::pin::pin!(served);
    tokio::select! {
        served = &mut served => {
            served?;
            Ok(joined(drainer.await))
        }
        drained = &mut drainer => {
            // The sockets are drained; requests still being answered get what is left of the
            // grace period (a second at least) before the process ends under them.
            let grace = state.config().shutdown_grace;
            let until = state
                .shutdown()
                .grace_ends(grace)
                .unwrap_or_else(std::time::Instant::now)
                .max(std::time::Instant::now() + std::time::Duration::from_secs(1));
            if let Ok(served) =
                tokio::time::timeout_at(tokio::time::Instant::from_std(until), served).await
            {
                served?;
            }
            Ok(joined(drained))
        }
    }
}
