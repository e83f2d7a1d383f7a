//! TLS for the node's one listener (clients and peers alike) and for its connections to peers,
//! with rustls and ring as the only crypto provider.
//!
//! The server side keeps `axum::serve` (its graceful shutdown, WebSocket upgrades and HTTP/2) and
//! gives it a listener whose connections are already TLS ([`TlsListener`]): handshakes run in
//! their own tasks with a timeout, so a slow client never holds up accepting. Each new connection
//! takes the configuration current at that moment, so a certificate rotated on disk (noticed
//! within a second, or at SIGHUP) is served to new connections while open ones carry on.
//!
//! Client certificates are optional at the handshake (browsers have none) but, when offered, must
//! chain to `peer_tls_ca`, or the handshake fails. Handlers learn through [`Conn`] whether the
//! connection presented one; the peer endpoints require it with `peer_mtls`.

pub mod local_ca;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use axum::Router;
use parking_lot::RwLock;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{path} holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// Makes ring the process's crypto provider (for reqwest, which asks for the process default).
/// Idempotent; every place that builds an HTTP client calls it first.
pub fn install_provider() {
    // An error means a provider is installed already: the one this function installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The files a TLS listener is built from.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Client certificates offered must chain to this CA (`peer_tls_ca`); none: not asked for.
    pub client_ca: Option<PathBuf>,
    /// The CA this node verifies its peers' servers with (`peer_tls_ca`): not part of the
    /// server's configuration, but watched with it so the peer client follows a rotated CA.
    pub peer_ca: Option<PathBuf>,
}

impl TlsFiles {
    fn paths(&self) -> Vec<&Path> {
        let mut p = vec![self.cert.as_path(), self.key.as_path()];
        p.extend(self.client_ca.as_deref());
        p.extend(self.peer_ca.as_deref());
        p
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// The certificates of a PEM file (a chain: leaf first).
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The roots of a CA file, for verifying the other side.
pub fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in certificates(path)? {
        roots
            .add(c)
            .map_err(|e| TlsError::Config(format!("{}: {e}", path.display())))?;
    }
    Ok(roots)
}

/// A server configuration from the files: HTTP/2 and HTTP/1.1 by ALPN; with `client_ca`,
/// client certificates optional but verified when offered.
pub fn server_config(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let certs = certificates(&files.cert)?;
    let key_pem = read(&files.key)?;
    // PKCS#8, PKCS#1 (RSA) or SEC1 (EC); encrypted keys are not supported.
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Read {
        path: files.key.clone(),
        message: format!("no usable private key: {e}"),
    })?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    // Refuses a key that does not match the certificate (a rotation caught half-written).
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(format!("certificate and key: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The server configuration in use, swapped whole when the files change.
#[derive(Clone)]
pub struct Reloadable(Arc<RwLock<Arc<ServerConfig>>>);

impl Reloadable {
    pub fn new(config: ServerConfig) -> Self {
        Reloadable(Arc::new(RwLock::new(Arc::new(config))))
    }

    pub fn current(&self) -> Arc<ServerConfig> {
        self.0.read().clone()
    }

    fn set(&self, config: ServerConfig) {
        *self.0.write() = Arc::new(config);
    }
}

/// What handlers know of a connection: who is at the other end, and whether it presented a
/// client certificate (verified against `peer_tls_ca`: one that does not verify fails the
/// handshake).
#[derive(Debug, Clone, Copy)]
pub struct Conn {
    pub remote: SocketAddr,
    pub client_cert: bool,
}

/// The plain listener, with `TCP_NODELAY` set on each connection as on TLS ones.
pub struct PlainListener(TcpListener);

impl Listener for PlainListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // axum's own accept, which waits out errors such as running out of descriptors.
        let (stream, remote) = Listener::accept(&mut self.0).await;
        let _ = stream.set_nodelay(true);
        (stream, remote)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

impl Connected<IncomingStream<'_, PlainListener>> for Conn {
    fn connect_info(s: IncomingStream<'_, PlainListener>) -> Self {
        Conn {
            remote: *s.remote_addr(),
            client_cert: false,
        }
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Conn {
    fn connect_info(s: IncomingStream<'_, TlsListener>) -> Self {
        let (_, session) = s.io().get_ref();
        Conn {
            remote: *s.remote_addr(),
            client_cert: session.peer_certificates().is_some_and(|c| !c.is_empty()),
        }
    }
}

/// Longest a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; beyond it new connections wait to be accepted.
const HANDSHAKES_IN_FLIGHT: usize = 1024;

/// A listener whose connections have completed their TLS handshake.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts on `tcp` in a task of its own until this listener is dropped.
    pub fn new(tcp: TcpListener, config: Reloadable) -> io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(128);
        let slots = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_IN_FLIGHT));
        tokio::spawn(async move {
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (stream, remote) = tokio::select! {
                    _ = tx.closed() => return,
                    r = tcp.accept() => match r {
                        Ok(v) => v,
                        Err(e) => {
                            // Out of file descriptors, most likely: let some close.
                            tracing::warn!(error = %e, "accepting a connection failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let _ = stream.set_nodelay(true);
                let acceptor = TlsAcceptor::from(config.current());
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, remote)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::info!(%remote, error = %e, "TLS handshake refused")
                        }
                        Err(_) => tracing::info!(%remote, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { ready, local })
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept task ended: nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// Serves `app` on `listener`, over TLS when `tls` is given, until `shutdown` resolves (then
/// drains requests, as `axum::serve` does).
pub async fn serve(
    listener: TcpListener,
    tls: Option<Reloadable>,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let service = app.into_make_service_with_connect_info::<Conn>();
    match tls {
        None => {
            axum::serve(PlainListener(listener), service)
                .with_graceful_shutdown(shutdown)
                .await
        }
        Some(config) => {
            axum::serve(TlsListener::new(listener, config)?, service)
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
}

/// How often the certificate files are checked for a change.
pub const RELOAD_EVERY: Duration = Duration::from_secs(1);

/// Rebuilds the configuration when the files' bytes change (checked every [`RELOAD_EVERY`]) or
/// at SIGHUP, until `stop`; then calls `reloaded` (the peer client takes the new certificate
/// too). Files that do not make a configuration (a rotation caught half-written, a key that does
/// not match) leave the one in use, with a warning, and are tried again at the next change.
pub async fn watch(
    files: TlsFiles,
    config: Reloadable,
    reloaded: impl Fn() + Send + 'static,
    stop: CancellationToken,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let snapshot = |f: &TlsFiles| -> Vec<Option<Vec<u8>>> {
        f.paths().iter().map(|p| std::fs::read(p).ok()).collect()
    };
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; certificates reload when their files change");
            None
        }
    };
    let mut last = snapshot(&files);
    let mut tick = tokio::time::interval(RELOAD_EVERY);
    loop {
        let forced = tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => false,
            Some(()) = async {
                match hup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            } => true,
        };
        let now = snapshot(&files);
        if !forced && now == last {
            continue;
        }
        last = now;
        match server_config(&files) {
            Ok(c) => {
                config.set(c);
                reloaded();
                tracing::info!(cert = %files.cert.display(), "TLS certificate reloaded");
            }
            Err(e) => {
                tracing::warn!(error = %e, "TLS certificate not reloaded; the one in use stays")
            }
        }
    }
}
