//! A tampering proxy on loopback: sits between a device (the `tessera` CLI or the client SDK)
//! and a real `tessera server`, parses the WebSocket frames of protocol sessions in both
//! directions, and rewrites, drops, duplicates or delays chosen frames, or cuts the connection
//! at one. Plain HTTP requests pass through unchanged.
//!
//! Frames are chosen by direction and index: the N-th binary frame (0-based) one side sent on a
//! WebSocket connection. Device-to-server frames are masked (RFC 6455 §5.3): the proxy unmasks
//! them, hands the test the payload, and masks the result with the same key again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Which way a frame travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the device to the server.
    ToServer,
    /// From the server to the device.
    ToDevice,
}

/// Changes a frame's payload in place.
pub type Rewriter = Box<dyn FnMut(&mut Vec<u8>) + Send>;

/// What to do with a chosen frame.
pub enum Tamper {
    /// Forward the frame with its payload changed by the function.
    Rewrite(Rewriter),
    /// Do not forward it.
    Drop,
    /// Forward it twice.
    Duplicate,
    /// Forward it after this long (the frames behind it wait too).
    Delay(Duration),
    /// Close both TCP connections instead of forwarding it: a disconnect mid-protocol.
    Cut,
}

impl Tamper {
    /// Flips `mask` into the payload byte at `at`: counted from the start, or from the end when
    /// negative (`-1` is the last byte).
    pub fn flip(at: isize, mask: u8) -> Tamper {
        Tamper::Rewrite(Box::new(move |payload: &mut Vec<u8>| {
            let i = if at < 0 {
                payload.len() - at.unsigned_abs()
            } else {
                at.unsigned_abs()
            };
            payload[i] ^= mask;
        }))
    }

    /// Flips `mask` into the byte in the middle of the payload.
    pub fn flip_middle(mask: u8) -> Tamper {
        Tamper::Rewrite(Box::new(move |payload: &mut Vec<u8>| {
            let i = payload.len() / 2;
            payload[i] ^= mask;
        }))
    }
}

struct Rule {
    direction: Direction,
    index: usize,
    tamper: Tamper,
}

#[derive(Default)]
struct Shared {
    rules: Vec<Rule>,
    /// Rules that fired: (direction, index, payload length before tampering).
    fired: Vec<(Direction, usize, usize)>,
    websockets: usize,
}

/// The proxy; stops with the test's runtime.
pub struct TamperProxy {
    /// `http://127.0.0.1:PORT`: give it to the device instead of the server's URL.
    pub url: String,
    shared: Arc<Mutex<Shared>>,
}

impl TamperProxy {
    /// Listens on a free loopback port and forwards to `upstream` (`http://host:port`).
    pub async fn start(upstream: &str) -> TamperProxy {
        let upstream = upstream
            .strip_prefix("http://")
            .expect("the proxy speaks plain HTTP to a --insecure-http server")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Mutex::new(Shared::default()));
        let state = shared.clone();
        tokio::spawn(async move {
            while let Ok((device, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let state = state.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&upstream).await {
                        let _ = relay(device, server, state).await;
                    }
                });
            }
        });
        TamperProxy { url, shared }
    }

    /// Tampers with the `index`-th binary frame (0-based) sent `direction` on a WebSocket
    /// connection; the rule fires once, on the first connection that gets that far.
    pub fn on(&self, direction: Direction, index: usize, tamper: Tamper) {
        self.shared.lock().unwrap().rules.push(Rule {
            direction,
            index,
            tamper,
        });
    }

    /// Rules that fired so far: direction, frame index and the frame's payload length.
    pub fn fired(&self) -> Vec<(Direction, usize, usize)> {
        self.shared.lock().unwrap().fired.clone()
    }

    /// Rules not fired yet.
    pub fn pending(&self) -> usize {
        self.shared.lock().unwrap().rules.len()
    }

    /// WebSocket connections seen so far.
    pub fn websockets(&self) -> usize {
        self.shared.lock().unwrap().websockets
    }
}

/// Reads an HTTP head (up to the blank line); returns it and whatever was read beyond it.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((buf, rest));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn relay(
    mut device: TcpStream,
    mut server: TcpStream,
    shared: Arc<Mutex<Shared>>,
) -> std::io::Result<()> {
    let (head, rest) = read_head(&mut device).await?;
    let websocket = String::from_utf8_lossy(&head)
        .to_ascii_lowercase()
        .contains("upgrade: websocket");
    server.write_all(&head).await?;
    server.write_all(&rest).await?;
    if !websocket {
        tokio::io::copy_bidirectional(&mut device, &mut server).await?;
        return Ok(());
    }
    let (answer, early) = read_head(&mut server).await?;
    device.write_all(&answer).await?;
    if !answer.starts_with(b"HTTP/1.1 101") {
        // Refused (e.g. a ban): pass the body on and stop.
        device.write_all(&early).await?;
        tokio::io::copy_bidirectional(&mut device, &mut server).await?;
        return Ok(());
    }
    shared.lock().unwrap().websockets += 1;
    let (device_read, device_write) = device.into_split();
    let (server_read, server_write) = server.into_split();
    // The first direction to end (EOF, an error, or a cut) ends both: dropping the halves
    // closes both connections.
    tokio::select! {
        _ = pump(
            Prefixed { prefix: Vec::new(), inner: device_read },
            server_write,
            Direction::ToServer,
            shared.clone(),
        ) => {}
        _ = pump(
            Prefixed { prefix: early, inner: server_read },
            device_write,
            Direction::ToDevice,
            shared.clone(),
        ) => {}
    }
    Ok(())
}

/// A reader that first yields bytes read ahead with the HTTP head.
struct Prefixed<R> {
    prefix: Vec<u8>,
    inner: R,
}

impl<R: AsyncRead + Unpin> Prefixed<R> {
    async fn read_exact(&mut self, out: &mut [u8]) -> std::io::Result<()> {
        let from_prefix = out.len().min(self.prefix.len());
        out[..from_prefix].copy_from_slice(&self.prefix[..from_prefix]);
        self.prefix.drain(..from_prefix);
        self.inner.read_exact(&mut out[from_prefix..]).await?;
        Ok(())
    }
}

struct Frame {
    first: u8,
    mask: Option<[u8; 4]>,
    payload: Vec<u8>,
}

impl Frame {
    fn opcode(&self) -> u8 {
        self.first & 0x0f
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.first];
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let len = self.payload.len();
        if len < 126 {
            out.push(mask_bit | len as u8);
        } else if len <= usize::from(u16::MAX) {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        match self.mask {
            Some(key) => {
                out.extend_from_slice(&key);
                out.extend(self.payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
            }
            None => out.extend_from_slice(&self.payload),
        }
        out
    }
}

async fn read_frame<R: AsyncRead + Unpin>(r: &mut Prefixed<R>) -> std::io::Result<Frame> {
    let mut head = [0u8; 2];
    r.read_exact(&mut head).await?;
    let len = match head[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b).await?;
            u64::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0u8; 8];
            r.read_exact(&mut b).await?;
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    };
    let mask = if head[1] & 0x80 != 0 {
        let mut key = [0u8; 4];
        r.read_exact(&mut key).await?;
        Some(key)
    } else {
        None
    };
    let len = usize::try_from(len).map_err(|_| std::io::ErrorKind::InvalidData)?;
    if len > 64 << 20 {
        return Err(std::io::ErrorKind::InvalidData.into());
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    if let Some(key) = mask {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= key[i % 4];
        }
    }
    Ok(Frame {
        first: head[0],
        mask,
        payload,
    })
}

async fn pump<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    mut from: Prefixed<R>,
    mut to: W,
    direction: Direction,
    shared: Arc<Mutex<Shared>>,
) -> std::io::Result<()> {
    let mut binary = 0usize;
    loop {
        let mut frame = read_frame(&mut from).await?;
        let mut tamper = None;
        if frame.opcode() == 2 {
            let index = binary;
            binary += 1;
            let mut s = shared.lock().unwrap();
            if let Some(at) = s
                .rules
                .iter()
                .position(|r| r.direction == direction && r.index == index)
            {
                let rule = s.rules.remove(at);
                s.fired.push((direction, index, frame.payload.len()));
                tamper = Some(rule.tamper);
            }
        }
        let copies = match tamper {
            None => 1,
            Some(Tamper::Rewrite(mut f)) => {
                f(&mut frame.payload);
                1
            }
            Some(Tamper::Drop) => 0,
            Some(Tamper::Duplicate) => 2,
            Some(Tamper::Delay(d)) => {
                tokio::time::sleep(d).await;
                1
            }
            Some(Tamper::Cut) => return Ok(()),
        };
        let bytes = frame.encode();
        for _ in 0..copies {
            to.write_all(&bytes).await?;
        }
        to.flush().await?;
    }
}
