//! Our accept loop (instead of `axum::serve`) so that connections can be limited and
//! protected: TLS through rustls, a cap on connections served at once (one more gets a 429
//! answer through the normal layers, so it is audited, and is closed), a cap on the size of
//! a request head (431) and on the time a client may take to send it (slowloris; also the
//! TLS handshake). Graceful shutdown: stop accepting, let open connections finish.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tower::Service;

use super::SecurityError;
use crate::error::ApiError;

#[derive(Clone)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

/// A rustls server configuration from PEM files (certificate chain, private key).
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, SecurityError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| SecurityError::Tls(format!("{}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(SecurityError::Tls(format!(
            "{}: no certificate in the file",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| SecurityError::Tls(format!("{}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SecurityError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| SecurityError::Tls(format!("certificate and key do not fit: {e}")))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// Serve `app` on `listener` until `shutdown` turns true, then wait for open connections.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    over_limit: Router,
    limits: ConnLimits,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    // Over-limit connections get one answer each; past twice the limit they are just closed.
    let overflow = Arc::new(Semaphore::new(limits.max_connections.max(16)));
    let graceful = GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            // (The guard wait_for returns is not Send: drop it inside.)
            _ = async { drop(shutdown.wait_for(|&d| d).await) } => break,
        };
        let _ = tcp.set_nodelay(true);
        let (router, permit, keep_alive) = match permits.clone().try_acquire_owned() {
            Ok(p) => (app.clone(), Some(p), true),
            Err(_) => match overflow.clone().try_acquire_owned() {
                Ok(p) => (over_limit.clone(), Some(p), false),
                Err(_) => continue,
            },
        };
        let watcher = graceful.watcher();
        let limits = limits.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                let mut r = router.clone();
                async move { r.call(req).await }
            });
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .max_buf_size(limits.max_header_bytes.max(8192))
                .keep_alive(keep_alive);
            match &limits.tls {
                None => serve_conn(&http, tcp, svc, watcher).await,
                Some(acceptor) => {
                    let hs = tokio::time::timeout(limits.header_read_timeout, acceptor.accept(tcp));
                    match hs.await {
                        Ok(Ok(tls)) => serve_conn(&http, tls, svc, watcher).await,
                        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

async fn serve_conn<I, S>(
    http: &hyper::server::conn::http1::Builder,
    io: I,
    svc: S,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming> + Send + 'static,
    S::Future: Send + 'static,
    S::ResBody: Send + 'static,
    <S::ResBody as hyper::body::Body>::Data: Send,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conn = http.serve_connection(TokioIo::new(io), svc);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!("connection ended: {e}");
    }
}

/// The handler over-limit connections get (inside the request-id and audit layers).
pub async fn too_many_connections() -> axum::response::Response {
    let mut r = ApiError {
        status: StatusCode::TOO_MANY_REQUESTS,
        message: "Too many connections to this server; retry shortly.".into(),
        kind: "rate_limit_error",
        param: None,
        code: Some("too_many_connections".into()),
    }
    .into_response();
    r.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from_static("1"),
    );
    r
}
