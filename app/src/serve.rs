//! `cloakroom serve`: configuration → backend → session layer → router → listener.

use std::net::SocketAddr;

use cloakroom::{ConfigError, SessionConfig, SessionLayer};
use tokio::net::TcpListener;

use crate::backend::{Backend, BackendError};
use crate::config::{ServeArgs, StoreSpec, StoreSpecError};
use crate::secret::{self, SecretError, SecretSource};
use crate::web::{self, AppState};

/// Why the app could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store setting.
    #[error(transparent)]
    Store(#[from] StoreSpecError),
    /// The backend.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The secret.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The session options.
    #[error("invalid session option: {0}")]
    Config(#[from] ConfigError),
    /// The listener.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// A configured app, ready to serve.
pub struct App {
    /// The router.
    pub router: axum::Router,
    /// The backend (closed on shutdown).
    pub backend: Backend,
    /// The session layer.
    pub sessions: SessionLayer,
}

/// Builds the app from `args`, with `SESSION_SECRET`'s value passed in.
///
/// # Errors
/// [`StartError`] naming what to fix.
pub async fn build(args: &ServeArgs, session_secret: Option<&str>) -> Result<App, StartError> {
    let spec: StoreSpec = args.store.resolve().parse()?;
    let production = args.is_production();
    let backend = Backend::open(&spec, &args.store).await?;
    let data_dir = backend
        .data_dir
        .clone()
        .unwrap_or_else(|| args.data_dir.clone());
    let (keys, source) = secret::resolve(session_secret, production, &data_dir)?;
    match &source {
        SecretSource::Environment => {
            tracing::info!(keys = keys.len(), "signing keys from SESSION_SECRET")
        }
        SecretSource::Generated(path) => tracing::warn!(
            file = %path.display(),
            "no SESSION_SECRET: generated a development secret (set SESSION_SECRET in production)"
        ),
        SecretSource::Saved(path) => tracing::warn!(
            file = %path.display(),
            "no SESSION_SECRET: using the saved development secret (set SESSION_SECRET in production)"
        ),
    }
    // Browsers drop `Secure` cookies sent over plain http, so development on a loopback
    // address goes without it; production always has it unless explicitly switched off.
    let secure = !(args.insecure_cookie || (!production && args.listen_host().is_loopback()));
    if !secure {
        tracing::warn!(
            "session cookie sent without Secure (development on loopback, or --insecure-cookie)"
        );
    }
    let config = SessionConfig::builder(keys)
        .with_cookie_name(args.cookie_name.clone())
        .with_same_site(args.same_site)
        .with_secure(secure)
        .with_idle_timeout(args.idle_timeout)
        .with_absolute_lifetime(args.absolute_lifetime)
        .with_grace(args.grace)
        .with_store_timeout(args.store_timeout)
        .with_failure_policy(args.failure_policy)
        .build()?;
    let sessions = SessionLayer::from_arc(backend.sessions.clone(), config);
    let router = web::router(AppState {
        sessions: sessions.clone(),
        todos: backend.todos.clone(),
    });
    Ok(App {
        router,
        backend,
        sessions,
    })
}

/// Runs the app until SIGTERM or SIGINT; in-flight requests finish, then the store is flushed.
///
/// # Errors
/// [`StartError`].
pub async fn run(args: ServeArgs) -> Result<(), StartError> {
    let secret = std::env::var("SESSION_SECRET").ok();
    let app = build(&args, secret.as_deref()).await?;
    let addr = SocketAddr::new(args.listen_host(), args.port);
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Listen { addr, source })?;
    let local = listener.local_addr().unwrap_or(addr);
    tracing::info!(
        store = %app.backend.description,
        production = args.is_production(),
        "cloakroom listening on http://{local}"
    );
    let served = axum::serve(listener, app.router.clone())
        .with_graceful_shutdown(shutdown_signal())
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "server error");
    }
    app.backend.close();
    tracing::info!("stopped; store flushed and closed");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
