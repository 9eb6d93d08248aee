//! Where the cookie-signing keys come from: `SESSION_SECRET`, or in development a generated
//! key kept in the data folder.

use std::path::{Path, PathBuf};

use cloakroom::{KeyRing, KeyRingError};

/// The file a development secret is kept in, inside the data folder.
pub const DEV_SECRET_FILE: &str = "dev-session-secret";

/// Where the key ring came from (for the startup log).
#[derive(Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// `SESSION_SECRET`.
    Environment,
    /// A development secret generated now and saved here.
    Generated(PathBuf),
    /// A development secret generated earlier and read from here.
    Saved(PathBuf),
}

/// Why no key ring could be made.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Production without a secret.
    #[error("SESSION_SECRET is required in production: set it to one or more comma-separated keys of at least 32 bytes (the first signs). Generate one with `cloakroom secret`")]
    MissingInProduction,
    /// A bad secret.
    #[error("invalid SESSION_SECRET: {0}")]
    Invalid(#[from] KeyRingError),
    /// The development secret could not be read or written.
    #[error("cannot keep the development secret in {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Resolves the key ring from `env_value` (the content of `SESSION_SECRET`).
///
/// # Errors
/// [`SecretError`].
pub fn resolve(
    env_value: Option<&str>,
    production: bool,
    data_dir: &Path,
) -> Result<(KeyRing, SecretSource), SecretError> {
    if let Some(value) = env_value.filter(|v| !v.trim().is_empty()) {
        return Ok((
            KeyRing::from_comma_separated(value)?,
            SecretSource::Environment,
        ));
    }
    if production {
        return Err(SecretError::MissingInProduction);
    }
    let path = data_dir.join(DEV_SECRET_FILE);
    let io = |source| SecretError::Io {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(saved) => {
            return Ok((
                KeyRing::from_comma_separated(&saved)?,
                SecretSource::Saved(path),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    std::fs::create_dir_all(data_dir).map_err(io)?;
    let secret = cloakroom::generate_secret().map_err(|e| io(std::io::Error::other(e)))?;
    write_private(&path, &secret).map_err(io)?;
    Ok((
        KeyRing::from_comma_separated(&secret)?,
        SecretSource::Generated(path),
    ))
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn production_needs_a_secret_and_development_keeps_one() {
        let dir = std::env::temp_dir().join(format!("cloakroom-secret-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(matches!(
            resolve(None, true, &dir),
            Err(SecretError::MissingInProduction)
        ));
        let (_, first) = resolve(None, false, &dir).unwrap();
        assert!(matches!(first, SecretSource::Generated(_)));
        let (_, second) = resolve(Some("  "), false, &dir).unwrap();
        assert!(matches!(second, SecretSource::Saved(_)));
        assert!(matches!(
            resolve(Some("short"), true, &dir),
            Err(SecretError::Invalid(_))
        ));
        let good = "k".repeat(32);
        assert_eq!(
            resolve(Some(&good), true, &dir).unwrap().1,
            SecretSource::Environment
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
