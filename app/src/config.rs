//! Command-line flags with environment fallbacks (12-factor), and what they parse into.

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Args, Parser, Subcommand};
use cloakroom::{FailurePolicy, SameSite};

use crate::backend::url::is_postgres_url;

/// Cloakroom: server-side sessions, and a reference app that shows them off.
#[derive(Debug, Parser)]
#[command(name = "cloakroom", version, about, long_about = None)]
pub struct Cli {
    /// What to do; without one, `serve`.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Log lines as text (colour only on a terminal) or one JSON object per line (Cloud
    /// Logging, Loki, ELK).
    #[arg(
        long,
        global = true,
        env = "LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: crate::logs::LogFormat,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the reference app (the default).
    Serve(Box<ServeArgs>),
    /// Print session counts, memory, eviction policy and topology.
    Stats {
        /// Store options.
        #[command(flatten)]
        store: StoreArgs,
        /// Print JSON, for machines.
        #[arg(long, conflicts_with = "watch")]
        json: bool,
        /// Print one line every SECONDS (default 1), like `redis-cli --stat`: sessions,
        /// logins/s, reads/s, writes/s, store p99. Until interrupted, or `--count` lines.
        #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "1")]
        watch: Option<u64>,
        /// With `--watch`: stop after this many lines.
        #[arg(long, requires = "watch")]
        count: Option<u64>,
    },
    /// Size a Redis instance for a number of sessions (no store needed).
    Sizing {
        /// Store options: when a store is given, its measured session size is used.
        #[command(flatten)]
        store: StoreArgs,
        /// How many sessions to plan for.
        #[arg(long, default_value_t = 100_000)]
        sessions: u64,
        /// Average bytes per session, instead of the measured one.
        #[arg(long)]
        avg_bytes: Option<u64>,
    },
    /// Check that the store and the secret are ready for production; exit code 0 only if so.
    Check(StoreArgs),
    /// List a user's sessions.
    List {
        /// Store options.
        #[command(flatten)]
        store: StoreArgs,
        /// The user whose sessions to list.
        #[arg(long)]
        user: String,
    },
    /// Revoke sessions: all of a user's, or one by its key (from `list`).
    Revoke {
        /// Store options.
        #[command(flatten)]
        store: StoreArgs,
        /// Revoke every session of this user.
        #[arg(long, conflicts_with = "key", required_unless_present = "key")]
        user: Option<String>,
        /// Revoke the session with this key.
        #[arg(long)]
        key: Option<String>,
    },
    /// Copy every session to another store, while the app runs with `--migrate-from` (or is
    /// stopped): resumable, idempotent, a progress bar on stderr.
    Migrate {
        /// The store to copy from (the old one).
        #[arg(long)]
        from: String,
        /// The store to copy to (the new one).
        #[arg(long)]
        to: String,
        /// Saves the walk's position after every page, and resumes from it.
        #[arg(long)]
        state: Option<PathBuf>,
        /// Store options (passwords, CA files, schema, prefix) for both stores.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Print a fresh random secret for SESSION_SECRET.
    Secret,
    /// Exit 0 if this instance's `/healthz` answers (the container's health probe: the image
    /// has no curl). Stays healthy while the store is down; readiness is `/readyz`.
    Healthcheck {
        /// The port the instance listens on.
        #[arg(long, env = "PORT", default_value_t = 8080)]
        port: u16,
    },
}

/// Where sessions live.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Session store: `memory`, a folder path or `file:PATH` (embedded store),
    /// `redis://[user:password@]host:port[/db]` / `rediss://…` (one server, a managed
    /// endpoint, or any node of a cluster), `redis://host:port,host:port,…` (cluster seeds),
    /// `redis+sentinel://[user:password@]host:port[,host:port…]/master-name` /
    /// `rediss+sentinel://…`, or `postgres://[user[:password]@]host[:port]/database`
    /// [env: SESSION_STORE, DB, REDIS_URL, or DATABASE_URL when it names PostgreSQL]
    #[arg(long)]
    pub store: Option<String>,
    /// The data folder: the embedded store when no other store is given, and the
    /// development secret. One setting moves both (e.g. `/data` in the image).
    #[arg(long, env = "CLOAKROOM_DATA", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Redis password, used when the URL carries none.
    #[arg(long, env = "REDIS_AUTH", hide_env_values = true)]
    pub redis_password: Option<String>,
    /// A PEM file with the CA certificate to trust for `rediss://` (e.g. Memorystore's).
    #[arg(long, env = "REDIS_CA_CERT")]
    pub redis_ca: Option<PathBuf>,
    /// A PEM file with the CA certificate to trust for PostgreSQL over TLS
    /// (`?sslmode=require`), e.g. a managed database's.
    #[arg(long, env = "PGSSLROOTCERT")]
    pub postgres_ca: Option<PathBuf>,
    /// PostgreSQL only: the schema the session tables (and the app's todo table) live in.
    #[arg(long, env = "SESSION_SCHEMA", default_value = cloakroom_postgres::DEFAULT_SCHEMA)]
    pub postgres_schema: String,
    /// Prefix of the session keys in Redis.
    #[arg(long, env = "SESSION_KEY_PREFIX", default_value = cloakroom_redis::DEFAULT_PREFIX)]
    pub key_prefix: String,
    /// Redis only: keep session records in process, invalidated by Redis (CLIENT TRACKING):
    /// repeat reads cost no round trip; a logout elsewhere arrives one push later. On by
    /// default where the server tracks (on a Cluster, one link per primary); `false` reads strictly.
    #[arg(long, env = "SESSION_READ_CACHE", num_args = 0..=1, default_value = "true", default_missing_value = "true", value_parser = BoolishValueParser::new(), action = ArgAction::Set)]
    pub read_cache: bool,
    /// Redis only: the read cache's memory limit (`64MiB`, `512KiB`, `1GiB`, or bytes).
    #[arg(long, env = "SESSION_READ_CACHE_BYTES", default_value = "64MiB", value_parser = parse_bytes)]
    pub read_cache_bytes: usize,
    /// Redis only: logins, logouts and revocations wait until one replica has them
    /// (`WAIT 1`, at most this long, e.g. `500ms`; `0s` = off), so they survive a failover.
    #[arg(
        long,
        env = "SESSION_DURABLE_WRITES",
        default_value = "0s",
        value_parser = parse_duration
    )]
    pub durable_writes: Duration,
}

impl StoreArgs {
    /// The store setting when one was given (flag or environment), else `None`.
    #[must_use]
    pub fn given(&self) -> Option<String> {
        self.store.clone().or_else(|| {
            ["SESSION_STORE", "DB", "REDIS_URL"]
                .iter()
                .find_map(|v| non_empty_env(v))
                .or_else(database_url)
        })
    }

    /// The store setting: the flag, else `SESSION_STORE`, `DB`, `REDIS_URL`, `DATABASE_URL`
    /// (when it names PostgreSQL), else the embedded store in the data folder.
    #[must_use]
    pub fn resolve(&self) -> String {
        self.given().unwrap_or_else(|| {
            // `file:` so that any folder name reads as a folder (one named `memory` too).
            format!("file:{}", self.data_dir.display())
        })
    }
}

/// `DATABASE_URL`, only when it names PostgreSQL: apps set it for their own database too,
/// and a MySQL or SQLite URL there must not stop the app from starting.
fn database_url() -> Option<String> {
    non_empty_env("DATABASE_URL").filter(|url| is_postgres_url(url))
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The metrics port in production when `METRICS_PORT` is not set.
pub const DEFAULT_METRICS_PORT: u16 = 9090;

/// The data folder used when nothing else is configured.
pub const DEFAULT_DATA_DIR: &str = "./cloakroom-data";

/// Options of `cloakroom serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Port to listen on.
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,
    /// Address to listen on. Defaults to 127.0.0.1, or 0.0.0.0 on Cloud Run (K_SERVICE set).
    #[arg(long, env = "HOST")]
    pub host: Option<std::net::IpAddr>,
    /// Serve `/metrics` on this port, on its own listener (default 9090 in production, where
    /// `/metrics` is never on the public port; in development on the app's port unless set).
    #[arg(long, env = "METRICS_PORT")]
    pub metrics_port: Option<u16>,
    /// Store options.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Production mode: refuse to start without SESSION_SECRET. Also CLOAKROOM_ENV=production.
    #[arg(long)]
    pub production: bool,
    /// Idle timeout, e.g. `30m`, `24h`.
    #[arg(long, env = "SESSION_IDLE_TIMEOUT", default_value = "24h", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Absolute session lifetime, e.g. `7d`.
    #[arg(long, env = "SESSION_ABSOLUTE_LIFETIME", default_value = "7d", value_parser = parse_duration)]
    pub absolute_lifetime: Duration,
    /// Idle timeout and lifetime of a session whose user ticks "remember me" at login (its
    /// cookie then outlives the browser), e.g. `30d`.
    #[arg(long, env = "SESSION_REMEMBER_ME", default_value = "30d", value_parser = parse_duration)]
    pub remember_me: Duration,
    /// Idle timeout of sessions without a logged-in user (a flood of anonymous visitors
    /// costs the store this long, not the full idle timeout).
    #[arg(long, env = "SESSION_ANONYMOUS_IDLE_TIMEOUT", default_value = "1h", value_parser = parse_duration)]
    pub anonymous_idle_timeout: Duration,
    /// Rotate the session ID this often (periodic renewal), e.g. `15m`. Off by default.
    #[arg(long, env = "SESSION_RENEWAL", value_parser = parse_duration)]
    pub renewal: Option<Duration>,
    /// How long an old ID can still read its session after a periodic renewal (a login or
    /// logout never leaves a working old ID).
    #[arg(long, env = "SESSION_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub grace: Duration,
    /// Session cookie name. Default `__Host-sid` (Secure, host-only, Path=/: a sibling
    /// subdomain cannot plant or overwrite it), `sid` with `--insecure-cookie`.
    #[arg(long, env = "SESSION_COOKIE_NAME")]
    pub cookie_name: Option<String>,
    /// Send the cookie without Max-Age, so the browser forgets it when it closes.
    #[arg(long, env = "SESSION_BROWSER_SESSION", num_args = 0..=1, default_value = "false", default_missing_value = "true", value_parser = BoolishValueParser::new(), action = ArgAction::Set)]
    pub browser_session: bool,
    /// Another origin allowed to send unsafe (POST, DELETE) requests, e.g.
    /// `https://admin.example.com`; repeat the flag or separate with commas.
    #[arg(
        long = "trusted-origin",
        env = "SESSION_TRUSTED_ORIGINS",
        value_delimiter = ','
    )]
    pub trusted_origins: Vec<String>,
    /// Proxy address whose X-Forwarded-For is believed when counting invalid cookies per
    /// client; repeat or separate with commas.
    #[arg(long = "trusted-proxy", env = "TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Bind sessions to their client: `user-agent`, `network` (IPv4 /24, IPv6 /48), and
    /// `terminate` to end a session used from elsewhere (otherwise it is only logged).
    #[arg(long, env = "SESSION_BINDING", value_delimiter = ',', value_parser = ["user-agent", "network", "terminate"])]
    pub binding: Vec<String>,
    /// Most sessions one user may have at once; a login past it ends the oldest (0: no
    /// limit).
    #[arg(long, env = "SESSION_MAX_PER_USER", default_value_t = cloakroom::DEFAULT_MAX_SESSIONS_PER_USER)]
    pub max_sessions_per_user: usize,
    /// Answer 429 to a client that keeps sending invalid session cookies.
    #[arg(long, env = "SESSION_THROTTLE_GUESSING", num_args = 0..=1, default_value = "false", default_missing_value = "true", value_parser = BoolishValueParser::new(), action = ArgAction::Set)]
    pub throttle_guessing: bool,
    /// SameSite attribute: lax, strict or none.
    #[arg(long, env = "SESSION_SAME_SITE", default_value = "lax")]
    pub same_site: SameSite,
    /// Development only: send the cookie without `Secure`. Never needed on localhost or
    /// 127.0.0.1 (browsers keep Secure cookies there), nor behind a TLS-terminating proxy.
    #[arg(long, env = "SESSION_INSECURE_COOKIE", num_args = 0..=1, default_value = "false", default_missing_value = "true", value_parser = BoolishValueParser::new(), action = ArgAction::Set)]
    pub insecure_cookie: bool,
    /// Bound on each store call, e.g. `500ms`.
    #[arg(long, env = "SESSION_STORE_TIMEOUT", default_value = "500ms", value_parser = parse_duration)]
    pub store_timeout: Duration,
    /// When the store is down: `fail-closed` (503), `anonymous` (serve as logged out), or
    /// `fallback` (logged-in users stay logged in, read only, from a short-lived encrypted
    /// ticket cookie; others get 503).
    #[arg(long, env = "SESSION_FAILURE_POLICY", default_value = "fail-closed", value_parser = parse_policy)]
    pub failure_policy: FailurePolicy,
    /// With `--failure-policy fallback`: how long a fallback ticket works, e.g. `10m`.
    #[arg(long, env = "SESSION_FALLBACK_LIFETIME", default_value = "10m", value_parser = parse_duration)]
    pub fallback_lifetime: Duration,
    /// Taking over the sessions of an Express or Flask app (`docs/migration.md`).
    #[command(flatten)]
    pub import: ImportArgs,
    /// Moving sessions from this store (a URL or folder, as `--store`) into `--store` while
    /// serving: each session moves when it is next used, and the rest are copied in the
    /// background (`docs/migration.md`). The way to leave the embedded store, whose file only
    /// one process may open.
    #[arg(long, env = "SESSION_MIGRATE_FROM")]
    pub migrate_from: Option<String>,
}

/// Where the sessions of an Express or Flask app being moved to Cloakroom are found: a user
/// logged in there is logged in here on their next request.
#[derive(Debug, Clone, Default, Args)]
pub struct ImportArgs {
    /// express-session's secrets (comma-separated, every one verifies): turns the Express
    /// import on.
    #[arg(
        long,
        env = "SESSION_IMPORT_EXPRESS_SECRET",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub import_express_secret: Vec<String>,
    /// express-session's cookie name.
    #[arg(
        long,
        env = "SESSION_IMPORT_EXPRESS_COOKIE",
        default_value = "connect.sid"
    )]
    pub import_express_cookie: String,
    /// connect-redis's key prefix.
    #[arg(long, env = "SESSION_IMPORT_EXPRESS_PREFIX", default_value = "sess:")]
    pub import_express_prefix: String,
    /// The Flask app's `secret_key`, when Flask-Session signs its cookie
    /// (`SESSION_USE_SIGNER`): turns the Flask import on.
    #[arg(long, env = "SESSION_IMPORT_FLASK_SECRET", hide_env_values = true)]
    pub import_flask_secret: Option<String>,
    /// Turns the Flask import on for unsigned cookies (Flask-Session's default).
    #[arg(long, env = "SESSION_IMPORT_FLASK", num_args = 0..=1, default_value = "false", default_missing_value = "true", value_parser = BoolishValueParser::new(), action = ArgAction::Set)]
    pub import_flask: bool,
    /// Flask's session cookie name.
    #[arg(long, env = "SESSION_IMPORT_FLASK_COOKIE", default_value = "session")]
    pub import_flask_cookie: String,
    /// Flask-Session's key prefix.
    #[arg(long, env = "SESSION_IMPORT_FLASK_PREFIX", default_value = "session:")]
    pub import_flask_prefix: String,
    /// Where the imported session keeps its user: a dotted path such as `user.id`; by
    /// default the first of `userId`, `user_id`, `_user_id`, `user`.
    #[arg(long, env = "SESSION_IMPORT_USER_FIELD", default_value = "")]
    pub import_user_field: String,
    /// The Redis the foreign sessions live in; by default the session store's (required when
    /// the store is not Redis).
    #[arg(long, env = "SESSION_IMPORT_REDIS", hide_env_values = true)]
    pub import_redis: Option<String>,
}

impl ImportArgs {
    /// Whether any import is on.
    #[must_use]
    pub fn any(&self) -> bool {
        !self.import_express_secret.is_empty()
            || self.import_flask
            || self.import_flask_secret.is_some()
    }
}

impl ServeArgs {
    /// Whether production mode is on (flag or `CLOAKROOM_ENV=production`).
    #[must_use]
    pub fn is_production(&self) -> bool {
        self.production
            || std::env::var("CLOAKROOM_ENV").is_ok_and(|v| v.eq_ignore_ascii_case("production"))
    }

    /// The cookie name: the flag, else the library's default (`__Host-sid`, or `sid` with
    /// `--insecure-cookie`), in development as in production.
    #[must_use]
    pub fn cookie_name(&self) -> Option<String> {
        self.cookie_name.clone()
    }

    /// Where `/metrics` is served: its own port, or `None` for the app's port.
    #[must_use]
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_port
            .or_else(|| self.is_production().then_some(DEFAULT_METRICS_PORT))
    }

    /// The listen address.
    #[must_use]
    pub fn listen_host(&self) -> std::net::IpAddr {
        self.host
            .unwrap_or(if std::env::var_os("K_SERVICE").is_some() {
                std::net::IpAddr::from([0, 0, 0, 0])
            } else {
                std::net::IpAddr::from([127, 0, 0, 1])
            })
    }

    /// The defaults, with environment fallbacks applied (what `cloakroom` alone runs).
    ///
    /// # Errors
    /// A clap error (with usage) if an environment variable holds an invalid value.
    pub fn from_env() -> Result<Self, clap::Error> {
        Self::parse_args(std::iter::empty::<&str>())
    }

    /// Parses serve flags (as after `cloakroom serve`), with environment fallbacks.
    ///
    /// # Errors
    /// A clap error naming the bad flag or value.
    pub fn parse_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let argv = std::iter::once(std::ffi::OsString::from("cloakroom"))
            .chain(args.into_iter().map(Into::into));
        Only::try_parse_from(argv).map(|o| o.serve)
    }
}

/// Parses `500ms`, `30s`, `15m`, `24h`, `7d`, `1h 30m`. A bare number is refused: one
/// setting read it as seconds and another as milliseconds, so every duration names its unit.
///
/// # Errors
/// A message naming the accepted forms.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "duration {text:?} has no unit: write e.g. {text}ms or {text}s (units: ms, s, m, h, d)"
        ));
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("invalid duration {text:?} ({e}): use e.g. 500ms, 30s, 15m, 24h, 7d"))
}

/// Parses a size: bytes, or a number with `KiB`, `MiB` or `GiB` (or `KB`, `MB`, `GB`, taken as
/// the same powers of two).
///
/// # Errors
/// A message naming the accepted forms.
pub fn parse_bytes(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => {
            return Err(format!(
                "{text:?}: a size is bytes or a number with KiB, MiB or GiB"
            ))
        }
    };
    number
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| format!("{text:?}: a size is bytes or a number with KiB, MiB or GiB"))
}

fn parse_policy(text: &str) -> Result<FailurePolicy, String> {
    match text {
        "fail-closed" => Ok(FailurePolicy::FailClosed),
        "anonymous" => Ok(FailurePolicy::Anonymous),
        "fallback" => Ok(FailurePolicy::Fallback),
        _ => Err(format!(
            "invalid failure policy {text:?}: use fail-closed, anonymous or fallback"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        for bare in ["45", "500", "0"] {
            let refused = parse_duration(bare).unwrap_err();
            assert!(
                refused.contains("no unit") && refused.contains("ms"),
                "{refused}"
            );
        }
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5_400)));
        assert!(parse_duration("1 fortnight").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("512 KiB"), Ok(512 << 10));
        assert_eq!(parse_bytes("1gb"), Ok(1 << 30));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("0"), Ok(0));
        for bad in ["", "MiB", "12 parsecs", "-1MiB", "99999999999999999999GiB"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
        let args = ServeArgs::parse_args(["--read-cache-bytes", "8MiB"]).unwrap();
        assert_eq!(args.store.read_cache_bytes, 8 << 20);
    }

    /// Booleans as users write them, from a flag or the environment (the same parser).
    #[test]
    fn booleans() {
        let read_cache = |args: &[&str]| ServeArgs::parse_args(args).map(|a| a.store.read_cache);
        assert!(read_cache(&[]).unwrap(), "on by default");
        assert!(read_cache(&["--read-cache"]).unwrap());
        for yes in ["1", "true", "yes", "on", "TRUE"] {
            assert!(read_cache(&["--read-cache", yes]).unwrap(), "{yes}");
        }
        for no in ["0", "false", "no", "off"] {
            assert!(!read_cache(&["--read-cache", no]).unwrap(), "{no}");
        }
        let refused = read_cache(&["--read-cache", "maybe"])
            .unwrap_err()
            .to_string();
        assert!(refused.contains("maybe"), "{refused}");
        let args = ServeArgs::parse_args(["--insecure-cookie=yes", "--browser-session", "1"]);
        let args = args.unwrap();
        assert!(args.insecure_cookie && args.browser_session && !args.throttle_guessing);
    }
}
