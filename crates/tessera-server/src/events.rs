//! Each device's event stream (`GET /events?after=N`, issue 16): a WebSocket of JSON text
//! frames, one [`api::requests::DeviceEvent`] each, numbered per device. Events are kept in the
//! database (`db::events`), written in the transaction of the change they tell, so a device
//! that reconnects with the last cursor it saw misses nothing, whatever replica it reaches.
//!
//! A stream sends the device's events after its cursor, then waits: woken at once by a change
//! committed in this process ([`wake`]), and polling the database every second for the changes
//! of other replicas. Every poll re-reads the device's standing: a revoked device's stream is
//! closed (code 4401) with a reason.

use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket};
use axum::response::Response;
use serde::Deserialize;
use tessera_api as api;
use tessera_api::EventKind;
use tokio::sync::Notify;

use crate::auth::AuthDevice;
use crate::db::{self, DeviceStatus, WriteTx};
use crate::error::ApiResult;
use crate::extract::{ApiQuery, ApiWebSocket};
use crate::state::{AppState, rfc3339};

/// Close code: the device was revoked (or is no longer active).
pub const CLOSE_REVOKED: u16 = 4401;

/// How often a stream polls the database (changes committed by other replicas).
const POLL: Duration = Duration::from_secs(1);

/// Events sent per database read.
const BATCH: i64 = 100;

fn notify() -> &'static Notify {
    static NOTIFY: OnceLock<Notify> = OnceLock::new();
    NOTIFY.get_or_init(Notify::new)
}

/// Wakes this process's streams: call after committing a transaction that pushed events.
pub fn wake() {
    notify().notify_waiters();
}

/// Appends an event of `kind` to `device_id`'s stream in `tx`, after the transaction's audit
/// record (see `db::events`); call [`wake`] once `tx` committed.
///
/// # Errors
/// A database error.
#[allow(clippy::too_many_arguments)] // the fields of one event
pub async fn push_in(
    tx: &mut WriteTx,
    device_id: &str,
    kind: EventKind,
    request_id: Option<&str>,
    wallet_id: Option<&str>,
    about_device: Option<&str>,
    summary: &str,
) -> ApiResult<()> {
    db::events::push(
        tx,
        device_id,
        kind,
        request_id,
        wallet_id,
        about_device,
        summary,
    )
    .await?;
    Ok(())
}

/// `?after=N`: the last cursor the device saw (0 or absent: from the start).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    #[serde(default)]
    after: u64,
}

/// `GET /events?after=N`: the device's events numbered above `N`, in order, then new ones as
/// they come, as JSON text frames.
#[utoipa::path(get, path = "/events", tag = "requests", security(("bearer" = [])), params(("after" = Option<u64>, Query, description = "The last cursor seen (absent: from the start)")), responses((status = 101, description = "The event stream: one JSON DeviceEvent per text frame", body = api::requests::DeviceEvent), crate::openapi::AuthErrors, crate::openapi::UpgradeRequired, crate::openapi::Errors))]
pub async fn open(
    State(state): State<AppState>,
    me: AuthDevice,
    ApiQuery(q): ApiQuery<EventsQuery>,
    ApiWebSocket(upgrade): ApiWebSocket,
) -> ApiResult<Response> {
    let after = i64::try_from(q.after).unwrap_or(i64::MAX);
    Ok(upgrade
        .max_message_size(4096)
        .read_buffer_size(4096)
        .on_upgrade(move |socket| stream(state, me, after, socket)))
}

fn event(row: db::events::EventRow) -> api::requests::DeviceEvent {
    let (seq, kind, request_id, wallet_id, about_device, summary, at) = row;
    api::requests::DeviceEvent {
        cursor: seq.max(0) as u64,
        kind,
        request_id: request_id.map(Into::into),
        wallet_id: wallet_id.map(Into::into),
        device_id: about_device.map(Into::into),
        summary,
        at: rfc3339(at),
    }
}

/// Why a stream ends.
enum End {
    /// The device closed it, or the connection broke.
    Gone,
    /// Closed by the server with a code and reason.
    Close(u16, &'static str),
}

async fn stream(state: AppState, me: AuthDevice, mut after: i64, mut socket: WebSocket) {
    let mut phase = state.shutdown().subscribe();
    let end = loop {
        // Register before reading, so that a wake between the read and the wait is not lost.
        let woken = notify().notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        match db::devices::standing(state.db(), &me.device_id).await {
            Ok(Some((DeviceStatus::Active, _))) => {}
            Ok(_) => break End::Close(CLOSE_REVOKED, "the device is no longer active"),
            Err(e) => {
                tracing::warn!(device_id = %me.device_id, error = %e, "events: cannot read the device's standing");
                break End::Close(
                    crate::ws::CLOSE_INTERNAL,
                    "the server cannot read its database",
                );
            }
        }
        let mut failed = None;
        loop {
            match db::events::after(state.db(), &me.device_id, after, BATCH).await {
                Ok(rows) => {
                    let full = rows.len() as i64 == BATCH;
                    for row in rows {
                        after = row.0;
                        let Ok(text) = serde_json::to_string(&event(row)) else {
                            continue;
                        };
                        if socket.send(Message::Text(text.into())).await.is_err() {
                            failed = Some(End::Gone);
                            break;
                        }
                    }
                    if !full || failed.is_some() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(device_id = %me.device_id, error = %e, "events: cannot read the device's events");
                    failed = Some(End::Close(
                        crate::ws::CLOSE_INTERNAL,
                        "the server cannot read its database",
                    ));
                    break;
                }
            }
        }
        if let Some(end) = failed {
            break end;
        }
        tokio::select! {
            () = &mut woken => {}
            () = tokio::time::sleep(POLL) => {}
            frame = socket.recv() => match frame {
                // The device sends nothing but pings (answered by the library) and its close.
                Some(Ok(Message::Close(_)) | Err(_)) | None => break End::Gone,
                Some(Ok(_)) => {}
            },
            _ = phase.wait_for(|p| *p != crate::shutdown::Phase::Serving) => {
                break End::Close(crate::shutdown::CLOSE_GOING_AWAY, "the server is shutting down; reconnect with your last cursor");
            }
        }
    };
    if let End::Close(code, reason) = end {
        crate::ws::close(&mut socket, code, reason).await;
    }
}

/// The routes of this area.
pub(crate) fn router() -> axum::Router<AppState> {
    axum::Router::new().route("/events", axum::routing::get(open))
}
