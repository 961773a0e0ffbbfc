//! The device relay (`GET /relay/{code}`) from a test's side: raw WebSocket clients from a
//! chosen loopback address, so that per-address caps can be tried.

use std::net::SocketAddr;

use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::{WebSocketStream, client_async};

use super::Server;

/// The relay's per-address cap (tessera_server::relay::MAX_WAITING_PER_ADDRESS).
pub const PER_ADDRESS: usize = 8;

/// A relay socket.
pub type Socket = WebSocketStream<TcpStream>;

/// The server's socket address.
pub fn address(server: &Server) -> SocketAddr {
    server.url.trim_start_matches("http://").parse().unwrap()
}

/// Opens `/relay/{code}` on `server` from the loopback address `source`; the HTTP status when
/// refused.
pub async fn open_relay(server: SocketAddr, source: &str, code: &str) -> Result<Socket, u16> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let stream = socket.connect(server).await.unwrap();
    match client_async(format!("ws://{server}/relay/{code}"), stream).await {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("relay: {e}"),
    }
}
