//! `cloakroom serve`: configuration → backend → session layer → router → listener.

use std::net::SocketAddr;
use std::sync::Arc;

use cloakroom::{Binding, ConfigError, GuessingPolicy, SessionConfig, SessionLayer};
use tokio::net::TcpListener;

use crate::backend::url::{StoreSpec, StoreSpecError};
use crate::backend::{Backend, BackendError};
use crate::config::ServeArgs;
use crate::secret::{self, SecretError, SecretSource};
use crate::todos::GuardedTodos;
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
    /// The import options.
    #[error(transparent)]
    Import(#[from] crate::import::ImportError),
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

/// One audit line per login and per session end (target `audit`, at INFO): the user and the
/// session's fingerprint, never its ID.
fn audit(event: cloakroom::events::SessionEvent) {
    use cloakroom::events::SessionEvent;
    match event {
        SessionEvent::LoggedIn { user, session } => {
            tracing::info!(target: "audit", user, session, "audit: login");
        }
        SessionEvent::Ended {
            user,
            session,
            reason,
        } => {
            tracing::info!(target: "audit", user = user.unwrap_or_default(), session, reason = reason.as_str(), "audit: session ended");
        }
        _ => {}
    }
}

/// The store that moves sessions from `from` into the backend's as they are used, with the
/// rest copied in the background (logged as it goes).
async fn migrating_from(
    from: &str,
    args: &crate::config::StoreArgs,
    backend: &Backend,
) -> Result<Arc<dyn cloakroom::SessionStore>, StartError> {
    let spec: StoreSpec = from.parse()?;
    let old = Backend::open(&spec, args).await?;
    tracing::info!(from = %old.description, "moving sessions from the old store as they are used, and copying the rest");
    let store =
        cloakroom::MigratingStore::from_arcs(old.sessions.clone(), backend.sessions.clone());
    let copier = store.clone();
    tokio::spawn(async move {
        let mut last = std::time::Instant::now();
        let copied =
            crate::ops::migrate::copy_all(&copier, old.sessions.as_ref(), None, |c, total| {
                if last.elapsed() >= std::time::Duration::from_secs(5) {
                    last = std::time::Instant::now();
                    tracing::info!(
                        moved = c.moved,
                        already_there = c.skipped,
                        expired = c.expired,
                        total,
                        "copying sessions"
                    );
                }
            })
            .await;
        match copied {
            Ok(c) => tracing::info!(moved = c.moved, already_there = c.skipped, expired = c.expired, "every session copied from the old store; remove --migrate-from after one idle timeout"),
            Err(e) => tracing::error!(error = %e, "copying sessions from the old store stopped; restart to resume (sessions still move as they are used)"),
        }
    });
    Ok(Arc::new(store))
}

/// A configured app, ready to serve.
pub struct App {
    /// The router.
    pub router: axum::Router,
    /// `/metrics` on its own port, when it is not on the app's.
    pub metrics: Option<(u16, axum::Router)>,
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
    let backend = Backend::open_serving(&spec, &args.store).await?;
    let data_dir = backend
        .data_dir
        .clone()
        .unwrap_or_else(|| args.store.data_dir.clone());
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
    // Secure always, unless switched off explicitly: browsers keep Secure cookies from
    // http://localhost and http://127.0.0.1, so development needs no exception.
    let secure = !args.insecure_cookie;
    if !secure {
        tracing::warn!("--insecure-cookie: the session cookie is sent without Secure; never do this in production");
    }
    if !args.listen_host().is_loopback() {
        tracing::warn!(
            host = %args.listen_host(),
            "listening on a non-loopback address over plain HTTP: put a TLS-terminating proxy in \
             front (browsers send the Secure session cookie only over HTTPS or to localhost)"
        );
    }
    let mut config = SessionConfig::builder(keys)
        .with_same_site(args.same_site)
        .with_secure(secure)
        .with_browser_session(args.browser_session)
        .with_idle_timeout(args.idle_timeout)
        .with_anonymous_idle_timeout(Some(args.anonymous_idle_timeout))
        .with_absolute_lifetime(args.absolute_lifetime)
        // "Remember me" may lengthen a session to this, never shorten the default.
        .with_max_expiry(
            args.remember_me.max(args.idle_timeout),
            args.remember_me.max(args.absolute_lifetime),
        )
        .with_grace(args.grace)
        .with_store_timeout(args.store_timeout)
        .with_failure_policy(args.failure_policy)
        // What the pages show of a session during an outage, besides the user.
        .with_fallback_fields([crate::identity::LOGIN_TIME])
        .with_fallback_lifetime(args.fallback_lifetime)
        .with_guessing_policy(
            GuessingPolicy::default()
                .with_throttle(args.throttle_guessing)
                .with_trusted_proxies(args.trusted_proxies.iter().copied()),
        );
    if let Some(every) = args.renewal {
        config = config.with_renewal(every);
    }
    if let Some(name) = args.cookie_name() {
        config = config.with_cookie_name(name);
    }
    // 0: no limit.
    config = config.with_max_sessions_per_user(Some(args.max_sessions_per_user).filter(|&n| n > 0));
    let bound = |what: &str| args.binding.iter().any(|b| b == what);
    config = config.with_binding(
        Binding::new()
            .with_user_agent(bound("user-agent"))
            .with_network(bound("network"))
            .with_terminate(bound("terminate")),
    );
    let store_redis = match &spec {
        crate::backend::url::StoreSpec::Redis(url) => Some(url.as_str()),
        _ => None,
    };
    for source in crate::import::sources(&args.import, store_redis)? {
        tracing::info!(cookie = source.cookie_name(), "importing foreign sessions");
        config = config.with_import(source);
    }
    let store = match &args.migrate_from {
        None => backend.sessions.clone(),
        Some(from) => migrating_from(from, &args.store, &backend).await?,
    };
    let sessions = SessionLayer::from_arc(store, config.build()?).on_event(audit);
    let mut state = AppState {
        sessions: sessions.clone(),
        todos: Arc::new(GuardedTodos::new(backend.todos.clone(), sessions.clone())),
        security: web::Security {
            trusted_origins: args.trusted_origins.clone(),
            hsts: production,
        },
        redis: backend.redis.clone(),
        late: backend.late.clone(),
        store_check: Arc::default(),
        public_metrics: args.metrics_port().is_none(),
        metrics: Arc::default(),
    };
    state.metrics = Arc::new(web::ops::registry(&state));
    let metrics = args
        .metrics_port()
        .map(|port| (port, web::metrics_only(state.clone())));
    let router = web::router(state);
    Ok(App {
        router,
        metrics,
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
    // The embedded store's file is this process's alone: operators ask through here.
    if let Some(dir) = &app.backend.data_dir {
        crate::ops::admin::spawn(
            crate::ops::admin::socket_path(dir),
            app.sessions.clone(),
            app.backend.embedded().cloned(),
        );
    }
    tracing::info!(
        store = %app.backend.description,
        production = args.is_production(),
        "cloakroom listening on http://{local}"
    );
    if let Some((port, router)) = app.metrics.clone() {
        let addr = SocketAddr::new(args.listen_host(), port);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Listen { addr, source })?;
        tracing::info!("metrics on http://{addr}/metrics");
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
    }
    // The peer address lets the layer count invalid cookies per client.
    let service = app
        .router
        .clone()
        .into_make_service_with_connect_info::<SocketAddr>();
    let served = axum::serve(listener, service)
        .with_graceful_shutdown(shutdown_signal())
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "server error");
    }
    app.backend.close();
    if let Some(dir) = &app.backend.data_dir {
        let _ = std::fs::remove_file(crate::ops::admin::socket_path(dir));
    }
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
