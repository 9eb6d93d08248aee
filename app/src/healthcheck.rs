//! `cloakroom healthcheck`: the container's health probe, run by the binary itself (the
//! image has no curl). It asks this instance's `/healthz`, which never touches the store, so
//! an instance stays healthy while its store is down (readiness is `/readyz`'s job).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long the probe waits for an answer in all.
const TIMEOUT: Duration = Duration::from_secs(3);

/// Whether `GET /healthz` on `127.0.0.1:port` answers `200` within three seconds.
///
/// # Errors
/// Why not, in one line.
pub async fn probe(port: u16) -> Result<(), String> {
    let asked = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("cannot reach 127.0.0.1:{port}: {e}"))?;
        stream
            .write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut head = [0u8; 64];
        let n = stream.read(&mut head).await.map_err(|e| e.to_string())?;
        let status = String::from_utf8_lossy(&head[..n]);
        let line = status.lines().next().unwrap_or_default().to_owned();
        if line.split_whitespace().nth(1) == Some("200") {
            Ok(())
        } else {
            Err(format!("/healthz answered {line:?}"))
        }
    };
    tokio::time::timeout(TIMEOUT, asked)
        .await
        .map_err(|_| format!("/healthz did not answer within {TIMEOUT:?}"))?
}
