//! HTTPS/WSS with rustls (aws-lc-rs provider): a certificate from files, or a development
//! certificate made on first start and kept in the data directory, identified by its SHA-256
//! fingerprint, which clients pin.

use std::path::Path;

use crate::error::SetupError;
use sha2::{Digest, Sha256};

/// Installs aws-lc-rs as the process's rustls provider (once; later calls are no-ops). Two
/// providers compiled in would otherwise make rustls panic at the first handshake.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// A server certificate and key, PEM.
pub struct TlsIdentity {
    /// Certificate chain, PEM.
    pub cert_pem: Vec<u8>,
    /// Private key, PEM.
    pub key_pem: Vec<u8>,
    /// SHA-256 of the leaf certificate's DER, hex.
    pub fingerprint: String,
}

/// SHA-256 of a DER certificate, lower-case hex: what clients pin.
#[must_use]
pub fn fingerprint(cert_der: &[u8]) -> String {
    hex::encode(Sha256::digest(cert_der))
}

fn leaf_der(cert: &Path, cert_pem: &[u8]) -> Result<Vec<u8>, SetupError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(cert_pem)
        .next()
        .ok_or_else(|| {
            SetupError::Invalid(format!("{}: no certificate in the PEM", cert.display()))
        })?
        .map(|c| c.to_vec())
        .map_err(|e| SetupError::Invalid(format!("{}: bad certificate PEM: {e}", cert.display())))
}

/// Reads a certificate chain and key from PEM files.
///
/// # Errors
/// A message naming the file that is missing or malformed.
pub fn from_files(cert: &Path, key: &Path) -> Result<TlsIdentity, SetupError> {
    let cert_pem = std::fs::read(cert).map_err(SetupError::io("read", cert))?;
    let key_pem = std::fs::read(key).map_err(SetupError::io("read", key))?;
    let fingerprint = fingerprint(&leaf_der(cert, &cert_pem)?);
    Ok(TlsIdentity {
        cert_pem,
        key_pem,
        fingerprint,
    })
}

/// The development certificate in `data_dir` (for `localhost` and `127.0.0.1`), created on first
/// use: self-signed, so clients must pin its fingerprint.
///
/// # Errors
/// A message when it cannot be created or read.
pub fn dev_identity(data_dir: &Path) -> Result<TlsIdentity, SetupError> {
    std::fs::create_dir_all(data_dir).map_err(SetupError::io("create", data_dir))?;
    let cert = data_dir.join("dev-tls-cert.pem");
    let key = data_dir.join("dev-tls-key.pem");
    if !cert.exists() {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .map_err(|e| {
                SetupError::Failed(format!("cannot make a development certificate: {e}"))
            })?;
        crate::files::write_private_file(&key, made.signing_key.serialize_pem().as_bytes())?;
        crate::files::write_private_file(&cert, made.cert.pem().as_bytes())?;
    }
    from_files(&cert, &key)
}

/// Serves the API over TLS on `listener` until `stop` completes, then shuts down gracefully as
/// [`crate::serve_until`] does. Returns how the running sessions ended.
///
/// # Errors
/// A message for a bad certificate/key or an I/O error.
pub async fn serve_tls(
    listener: std::net::TcpListener,
    state: crate::AppState,
    identity: TlsIdentity,
    stop: impl Future + Send + 'static,
) -> Result<crate::shutdown::Drained, SetupError> {
    install_crypto_provider();
    let config =
        axum_server::tls_rustls::RustlsConfig::from_pem(identity.cert_pem, identity.key_pem)
            .await
            .map_err(|e| {
                SetupError::Invalid(format!("the certificate or key is not usable: {e}"))
            })?;
    listener
        .set_nonblocking(true)
        .map_err(|e| SetupError::Failed(format!("cannot listen: {e}")))?;
    crate::spawn_housekeeping(&state);
    let (stopped, on_stop) = tokio::sync::oneshot::channel::<()>();
    let drainer = tokio::spawn(crate::drain_after(state.clone(), stop, stopped));
    let state_for_finish = state.clone();
    let handle = axum_server::Handle::new();
    let closer = handle.clone();
    // HTTP connections get the grace period too (and the close's few seconds), as in
    // `crate::finish`; the protocol sockets are closed by the drain, with their close code,
    // before this cuts anything.
    let grace = state.config().shutdown_grace + std::time::Duration::from_secs(10);
    tokio::spawn(async move {
        if on_stop.await.is_ok() {
            closer.graceful_shutdown(Some(grace));
        }
    });
    // TCP_NODELAY on every connection, as in `crate::serve`.
    let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(config)
        .acceptor(axum_server::accept::NoDelayAcceptor);
    let served = axum_server::from_tcp(listener)
        .map_err(|e| SetupError::Failed(format!("cannot listen: {e}")))?
        .acceptor(acceptor)
        .handle(handle)
        .serve(crate::app(state).into_make_service_with_connect_info::<std::net::SocketAddr>());
    crate::finish(&state_for_finish, served, drainer)
        .await
        .map_err(|e| SetupError::Failed(format!("server stopped: {e}")))
}
