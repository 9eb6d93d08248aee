//! The store setting as users write it (`memory`, a folder, `redis://…`, `postgres://…`),
//! parsed into a [`StoreSpec`] with a clear refusal, and URLs redacted for logs.

use std::path::PathBuf;

/// A parsed store setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// In-process, lost on restart.
    Memory,
    /// The embedded store in this folder.
    Embedded(PathBuf),
    /// A Redis/Valkey URL (`redis://`, `rediss://`, `redis+sentinel://`, `rediss+sentinel://`).
    Redis(String),
    /// A PostgreSQL URL (`postgres://` or `postgresql://`).
    Postgres(String),
}

/// Why a store setting was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreSpecError {
    /// Empty setting.
    #[error("the session store setting is empty. {ACCEPTED}")]
    Empty,
    /// A URL scheme we do not know.
    #[error("unknown session store {0:?}. {ACCEPTED}")]
    Unknown(String),
    /// A `redis://` URL without a host.
    #[error(
        "malformed Redis URL {0:?}: expected redis://[user:password@]host:port[/db], rediss://…, \
         or redis+sentinel://[user:password@]host:port[,host:port…]/master-name"
    )]
    BadRedisUrl(String),
    /// A `postgres://` URL without a host or database.
    #[error(
        "malformed PostgreSQL URL {0:?}: expected postgres://[user[:password]@]host[:port]/database[?sslmode=require]"
    )]
    BadPostgresUrl(String),
}

const ACCEPTED: &str = "Accepted: `memory`, a folder path or `file:PATH` (embedded store), \
                        `redis://[user:password@]host:port[/db]`, `rediss://…` (TLS), \
                        `redis://host:port,host:port` (cluster seeds), \
                        `redis+sentinel://host:port[,host:port…]/master-name`, \
                        `postgres://[user[:password]@]host[:port]/database`";

impl std::str::FromStr for StoreSpec {
    type Err = StoreSpecError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text.is_empty() {
            return Err(StoreSpecError::Empty);
        }
        if text == "memory" || text == "memory:" {
            return Ok(Self::Memory);
        }
        if let Some(path) = text
            .strip_prefix("file://")
            .or_else(|| text.strip_prefix("file:"))
        {
            if path.is_empty() {
                return Err(StoreSpecError::Unknown(text.to_owned()));
            }
            return Ok(Self::Embedded(PathBuf::from(path)));
        }
        let lower = text.to_ascii_lowercase();
        let schemes = [
            "redis://",
            "rediss://",
            "redis+sentinel://",
            "rediss+sentinel://",
        ];
        if schemes.iter().any(|s| lower.starts_with(s)) {
            let rest = text.split_once("://").map_or("", |(_, r)| r);
            let hosts = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
            let hosts = hosts.split(['/', '?']).next().unwrap_or("");
            let sentinel = lower.contains("+sentinel://");
            let master = rest
                .rsplit_once('@')
                .map_or(rest, |(_, h)| h)
                .split_once('/');
            let bad_host = hosts
                .split(',')
                .any(|host| host.is_empty() || host.starts_with(':'));
            let no_master =
                sentinel && master.is_none_or(|(_, name)| name.trim_matches('/').is_empty());
            if bad_host || no_master {
                return Err(StoreSpecError::BadRedisUrl(redact(text)));
            }
            return Ok(Self::Redis(text.to_owned()));
        }
        if is_postgres_url(text) {
            let rest = text.split_once("://").map_or("", |(_, r)| r);
            let after_auth = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
            let (host, database) = after_auth.split_once('/').unwrap_or((after_auth, ""));
            let database = database.split('?').next().unwrap_or("");
            if host.is_empty() || host.starts_with(':') || database.is_empty() {
                return Err(StoreSpecError::BadPostgresUrl(redact(text)));
            }
            return Ok(Self::Postgres(text.to_owned()));
        }
        if text.contains("://") {
            return Err(StoreSpecError::Unknown(redact(text)));
        }
        Ok(Self::Embedded(PathBuf::from(text)))
    }
}

/// A URL with any password replaced, fit for messages and logs (in the user part, and in a
/// `password=` query parameter, as PostgreSQL URLs allow).
#[must_use]
pub fn redact(url: &str) -> String {
    let url = match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((auth, host)) => match auth.split_once(':') {
                Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
                // A user name alone is no secret, and `user:***` would suggest a password.
                None => format!("{scheme}://{auth}@{host}"),
            },
            None => url.to_owned(),
        },
        None => url.to_owned(),
    };
    match url.split_once('?') {
        Some((base, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _)) if name.eq_ignore_ascii_case("password") => {
                        format!("{name}=***")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{base}?{}", query.join("&"))
        }
        None => url,
    }
}

/// Whether `url` names PostgreSQL (`postgres://` or `postgresql://`).
pub fn is_postgres_url(url: &str) -> bool {
    let lower = url.trim().to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_specs() {
        assert_eq!("memory".parse(), Ok(StoreSpec::Memory));
        assert_eq!("./data".parse(), Ok(StoreSpec::Embedded("./data".into())));
        assert_eq!(
            "file:/var/x".parse(),
            Ok(StoreSpec::Embedded("/var/x".into()))
        );
        assert_eq!(
            "redis://:pw@10.0.0.3:6379/0".parse(),
            Ok(StoreSpec::Redis("redis://:pw@10.0.0.3:6379/0".into()))
        );
        for url in [
            "redis://a:1,b:2,c:3",
            "redis+sentinel://a:26379,b:26379/sessions",
            "rediss+sentinel://u:p@a:26379/sessions",
        ] {
            assert_eq!(url.parse(), Ok(StoreSpec::Redis(url.into())));
        }
        for bad in [
            "redis+sentinel://a:26379",
            "redis+sentinel://a:1/",
            "redis://a:1,,b:2",
        ] {
            assert!(matches!(
                bad.parse::<StoreSpec>(),
                Err(StoreSpecError::BadRedisUrl(_))
            ));
        }
        assert!(matches!(
            "rediss://".parse::<StoreSpec>(),
            Err(StoreSpecError::BadRedisUrl(_))
        ));
        for url in [
            "postgres://u:pw@db:5432/app",
            "postgresql://db/app?sslmode=require",
        ] {
            assert_eq!(url.parse(), Ok(StoreSpec::Postgres(url.into())));
        }
        for bad in [
            "postgres://",
            "postgres://u:secret@db",
            "postgres://:5432/app",
        ] {
            let err = bad.parse::<StoreSpec>().unwrap_err();
            assert!(matches!(err, StoreSpecError::BadPostgresUrl(_)), "{bad}");
            assert!(!err.to_string().contains("secret"), "{err}");
        }
        let err = "mysql://u:secret@h/db".parse::<StoreSpec>().unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
        assert!(err.to_string().contains("Accepted"));
        assert_eq!("".parse::<StoreSpec>(), Err(StoreSpecError::Empty));
    }

    #[test]
    fn redaction() {
        assert_eq!(redact("redis://user:pw@h:1"), "redis://user:***@h:1");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
        assert_eq!(redact("postgres://app@db/app"), "postgres://app@db/app");
        assert_eq!(redact("redis://:pw@h:1"), "redis://:***@h:1");
        assert_eq!(
            redact("postgres://db/app?sslmode=require&password=pw"),
            "postgres://db/app?sslmode=require&password=***"
        );
        assert_eq!(
            redact("redis+sentinel://:pw@a:1,b:2/m"),
            "redis+sentinel://:***@a:1,b:2/m"
        );
    }
}
