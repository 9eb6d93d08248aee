//! Taking over the sessions of an Express or Flask app (`--import-*` flags,
//! `docs/migration.md`): the library's sources over a Redis connection opened on first use,
//! so that a Redis that is late at start (or down for a while) delays imports, not the app.

use std::sync::Arc;

use async_trait::async_trait;
use cloakroom::import::{ForeignSessions, Found};
use cloakroom::StoreError;
use cloakroom_redis::import::{ExpressSessions, FlaskSessions, UserField};
use cloakroom_redis::{RedisConfig, RedisConnection};
use tokio::sync::OnceCell;

use crate::config::ImportArgs;

/// Why the import flags cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// No Redis to read the foreign sessions from.
    #[error("importing Express or Flask sessions needs their Redis: set SESSION_IMPORT_REDIS (the session store is not Redis)")]
    NoRedis,
    /// A setting the source refuses.
    #[error("SESSION_IMPORT_EXPRESS_SECRET: {0}")]
    Express(&'static str),
}

/// The sources the flags ask for, reading the foreign sessions from `import_redis`, else from
/// `store_redis` (the session store's URL when it is Redis).
///
/// # Errors
/// [`ImportError`] saying what to set.
pub fn sources(
    args: &ImportArgs,
    store_redis: Option<&str>,
) -> Result<Vec<Arc<dyn ForeignSessions>>, ImportError> {
    if !args.any() {
        return Ok(Vec::new());
    }
    let url = args
        .import_redis
        .as_deref()
        .or(store_redis)
        .ok_or(ImportError::NoRedis)?;
    let conn = Arc::new(Lazy {
        config: RedisConfig::new(url),
        conn: OnceCell::new(),
    });
    let user = UserField::path(&args.import_user_field);
    let mut out: Vec<Arc<dyn ForeignSessions>> = Vec::new();
    if !args.import_express_secret.is_empty() {
        // Checked now: a bad secret is a start-up error, not a silent failure later.
        let secrets = args.import_express_secret.clone();
        let (cookie, prefix) = (
            args.import_express_cookie.clone(),
            args.import_express_prefix.clone(),
        );
        let (user, check) = (user.clone(), secrets.clone());
        if check.iter().any(String::is_empty) {
            return Err(ImportError::Express("a secret is empty"));
        }
        out.push(Arc::new(OnConnection {
            cookie: cookie.clone(),
            conn: conn.clone(),
            make: Box::new(move |c| {
                Box::new(
                    ExpressSessions::new(c, secrets.clone())
                        .expect("secrets checked at start")
                        .with_cookie(cookie.clone())
                        .with_prefix(prefix.clone())
                        .with_user_field(user.clone()),
                )
            }),
            made: OnceCell::new(),
        }));
    }
    if args.import_flask || args.import_flask_secret.is_some() {
        let secret = args.import_flask_secret.clone();
        let (cookie, prefix) = (
            args.import_flask_cookie.clone(),
            args.import_flask_prefix.clone(),
        );
        out.push(Arc::new(OnConnection {
            cookie: cookie.clone(),
            conn,
            make: Box::new(move |c| {
                let mut flask = FlaskSessions::new(c)
                    .with_cookie(cookie.clone())
                    .with_prefix(prefix.clone())
                    .with_user_field(user.clone());
                if let Some(secret) = &secret {
                    flask = flask.with_signer(secret);
                }
                Box::new(flask)
            }),
            made: OnceCell::new(),
        }));
    }
    Ok(out)
}

/// A Redis connection opened on first use (and tried again at the next use if that failed).
struct Lazy {
    config: RedisConfig,
    conn: OnceCell<RedisConnection>,
}

impl Lazy {
    async fn get(&self) -> Result<RedisConnection, StoreError> {
        self.conn
            .get_or_try_init(|| RedisConnection::open(&self.config))
            .await
            .cloned()
            .map_err(StoreError::unavailable)
    }
}

type Make = Box<dyn Fn(RedisConnection) -> Box<dyn ForeignSessions> + Send + Sync>;

/// A source made once its connection is open.
struct OnConnection {
    cookie: String,
    conn: Arc<Lazy>,
    make: Make,
    made: OnceCell<Box<dyn ForeignSessions>>,
}

impl OnConnection {
    async fn source(&self) -> Result<&dyn ForeignSessions, StoreError> {
        self.made
            .get_or_try_init(|| async { Ok((self.make)(self.conn.get().await?)) })
            .await
            .map(AsRef::as_ref)
    }
}

#[async_trait]
impl ForeignSessions for OnConnection {
    fn cookie_name(&self) -> &str {
        &self.cookie
    }

    /// An imported user is logged in as after a login here: a user name the login would
    /// accept, and the fields the login writes set as it sets them.
    async fn find(&self, value: &str) -> Result<Found, StoreError> {
        let found = self.source().await?.find(value).await?;
        let Found::Session(mut imported) = found else {
            return Ok(found);
        };
        let Some(user) = imported.user.clone() else {
            return Ok(Found::Session(imported));
        };
        // A user name this app would not accept at its own login is not logged in here.
        let Ok(user) = crate::identity::validate_username(&user) else {
            tracing::info!(
                source = self.cookie,
                "foreign session not imported: its user is not a valid user name here"
            );
            return Ok(Found::Nothing);
        };
        // The fields the app's login owns are the app's, whatever the old app kept there.
        let text = |v: String| serde_json::Value::String(v).to_string();
        imported.fields.insert(
            crate::identity::LOGIN_TIME.to_owned(),
            text(crate::identity::rfc3339(cloakroom::now_millis())),
        );
        imported
            .fields
            .insert("user".to_owned(), text(user.clone()));
        imported.user = Some(user);
        Ok(Found::Session(imported))
    }

    async fn end(&self, handle: &str) -> Result<(), StoreError> {
        self.source().await?.end(handle).await
    }
}
