//! Reaching a device that is not on this network: both devices open the commitment server's
//! relay WebSocket (`GET /relay/{code}`) and the server forwards binary frames between the two
//! sockets of one code. It sees only Noise ciphertext: it can neither read nor alter what the
//! devices say (an altered frame fails authentication), and a relay that runs its own
//! handshakes with each side is caught by the pairing code comparison, as on a local network.

use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use tessera_api::{RELAY_CODE_SYMBOLS, is_relay_code};

use super::PeerError;
use super::channel::{Frames, MAX_FRAME};
use crate::tls;

/// A fresh relay code: 12 symbols from 31 (≈ 59 bits), shown as `ABCD-EFGH-JKMN`.
#[must_use]
pub fn new_code() -> String {
    let bytes = tessera_core::protocols::fresh_nonce();
    let symbols: Vec<u8> = bytes
        .iter()
        .filter(|&&b| b < 248)
        .map(|&b| RELAY_CODE_SYMBOLS[usize::from(b % 31)])
        .take(12)
        .collect();
    let s = String::from_utf8_lossy(&symbols).to_string();
    format!("{}-{}-{}", &s[..4], &s[4..8], &s[8..12])
}

/// Normalises a typed code: upper case, separators optional.
///
/// # Errors
/// [`PeerError::Protocol`] when it is not 12 code symbols.
pub fn normalise_code(code: &str) -> Result<String, PeerError> {
    let s: String = code
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let shown = if s.len() == 12 && s.is_ascii() {
        format!("{}-{}-{}", &s[..4], &s[4..8], &s[8..12])
    } else {
        String::new()
    };
    if !is_relay_code(&shown) {
        return Err(PeerError::Protocol(
            "a relay code is 12 letters and digits, like ABCD-EFGH-JKMN".into(),
        ));
    }
    Ok(shown)
}

/// Opens the relay socket of `code` on the server at `base_url` (`https://…`, optionally pinned
/// by certificate fingerprint, or `http://` on loopback).
///
/// # Errors
/// [`PeerError::Io`] when the server cannot be reached or refuses.
pub async fn open(base_url: &str, pin: Option<&str>, code: &str) -> Result<Frames, PeerError> {
    let code = normalise_code(code)?;
    let pin = pin
        .map(tls::parse_fingerprint)
        .transpose()
        .map_err(|e| PeerError::Io(e.to_string()))?;
    let config = tls::client_config(pin).map_err(|e| PeerError::Io(e.to_string()))?;
    let base = base_url.trim_end_matches('/').replacen("http", "ws", 1);
    let request = format!("{base}/relay/{code}")
        .into_client_request()
        .map_err(|e| PeerError::Io(e.to_string()))?;
    let connector = tokio_tungstenite::Connector::Rustls(config);
    let (socket, _) =
        tokio_tungstenite::connect_async_tls_with_config(request, None, true, Some(connector))
            .await
            .map_err(|e| PeerError::Io(format!("cannot open the relay at {base_url}: {e}")))?;
    let (sink, mut stream) = socket.split();
    let (in_tx, rx) = mpsc::channel(64);
    let reader = tokio::spawn(async move {
        loop {
            let next = match stream.next().await {
                Some(Ok(WsMessage::Binary(b))) if b.len() <= MAX_FRAME => Ok(b.to_vec()),
                Some(Ok(WsMessage::Binary(_))) => {
                    Err(PeerError::Channel("an oversized relay frame".into()))
                }
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Text(_))) => {
                    continue;
                }
                Some(Ok(WsMessage::Close(f))) => match f {
                    Some(f) if u16::from(f.code) != 1000 => {
                        Err(PeerError::Io(format!("relay: {}", f.reason)))
                    }
                    _ => Err(PeerError::Closed),
                },
                Some(Ok(WsMessage::Frame(_))) => continue,
                Some(Err(e)) => Err(PeerError::Io(e.to_string())),
                None => Err(PeerError::Closed),
            };
            let stop = next.is_err();
            if in_tx.send(next).await.is_err() || stop {
                break;
            }
        }
    });
    let sink = sink
        .sink_map_err(|e| PeerError::Io(e.to_string()))
        .with(|frame: Vec<u8>| {
            futures_util::future::ready(Ok::<_, PeerError>(WsMessage::Binary(frame.into())))
        });
    Ok(Frames::from_parts(Box::pin(sink), rx, reader))
}
