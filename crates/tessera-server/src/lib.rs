//! Tessera commitment server: the always-on co-signing party (party 1) of 2-of-2 wallets.
//!
//! REST for registration, authentication and creating sessions; one WebSocket per session runs
//! the protocol with the sans-IO sessions of `tessera-core`. State lives in SQLite (the data
//! directory); the server's shares are sealed under a key-encryption key.
#![forbid(unsafe_code)]
#![deny(missing_docs, clippy::unwrap_used)]

pub mod audit;
pub mod auth;
pub mod backups;
pub mod bans;
pub mod clock;
pub mod db;
pub mod enrolment;
pub mod error;
pub mod exports;
pub mod files;
pub mod held;
pub mod hold;
pub mod limits;
pub mod live_sessions;
pub mod names;
pub mod policy;
pub mod policy_change;
pub mod registry;
pub mod relay;
pub mod release;
pub mod state;
pub mod tls;
pub mod tokens;
pub mod vault;
pub mod wallets;
pub mod ws;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::{Json, Router};
use tessera_core::api;

pub use state::{AppState, Config};

/// Largest JSON body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

async fn status() -> Json<api::Status> {
    Json(api::Status {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

/// The whole HTTP API, testable without a socket.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/status", get(status))
        .route(
            "/devices",
            post(registry::register)
                .layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    enrolment::limit_registrations,
                ))
                .get(registry::list),
        )
        .route("/devices/{id}/revoke", post(registry::revoke))
        .route("/devices/{id}/approve", post(registry::approve))
        .route("/devices/{id}/recover", post(backups::recover))
        .route(
            "/backups/verify",
            post(backups::verify).layer(DefaultBodyLimit::max(backups::MAX_REQUEST_BYTES)),
        )
        .route("/backups/server", post(exports::server_share))
        .route("/actions", get(held::list))
        .route("/actions/{id}", post(held::decide))
        .route("/auth/challenge", post(registry::challenge))
        .route("/auth/token", post(registry::token))
        .route("/keygen", post(wallets::keygen))
        .route("/sign", post(wallets::sign))
        .route("/refresh", post(wallets::refresh))
        .route("/pubkey", get(wallets::pubkey))
        .route("/wallets", get(wallets::list))
        .route("/ws", get(ws::open))
        .route("/relay/{code}", get(relay::open))
        .route("/policy", get(policy::get).put(policy::set))
        .route("/approvals", get(policy::pending))
        .route("/approvals/{session_id}", post(policy::decide))
        .route("/sign/{session_id}", get(policy::status))
        .route("/audit", get(audit::list))
        .route("/audit/verify", get(audit::verify_endpoint))
        .route("/bans", get(bans::list))
        .route("/bans/{ban_id}/approve-lift", post(bans::approve_lift))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limits::per_address,
        ))
        .with_state(state)
}

/// Background chores: forgetting idle rate-limit keys, ending the sessions of dead replicas.
pub fn spawn_housekeeping(state: &AppState) {
    let state = state.clone();
    tokio::spawn(async move {
        let mut tick = 0u64;
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(10)).await;
            tick += 1;
            if tick.is_multiple_of(6) {
                state.limits().forget_idle();
                state.registrations().forget_idle();
            }
            if let Err(e) = state.end_sessions_of_dead_replicas().await {
                tracing::warn!(error = %e, "could not check for dead replicas");
            }
        }
    });
}

/// Serves `app` on `listener` until the process ends.
///
/// # Errors
/// An I/O error of the listener.
pub async fn serve(listener: tokio::net::TcpListener, state: AppState) -> std::io::Result<()> {
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
    axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .await
}
