//! TLS for managed PostgreSQL (`sslmode=require`): rustls with the public web roots, plus a
//! CA the operator names. With the default `sslmode=prefer` a server without TLS is still
//! reached in plain text, as libpq does.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::PostgresError;

pub(crate) fn connector(ca_pem: Option<&[u8]>) -> Result<MakeRustlsConnect, PostgresError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = ca_pem {
        let mut found = false;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| PostgresError::Certificate(e.to_string()))?;
            roots
                .add(cert)
                .map_err(|e| PostgresError::Certificate(e.to_string()))?;
            found = true;
        }
        if !found {
            return Err(PostgresError::Certificate(
                "no PEM certificate in the file".into(),
            ));
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| PostgresError::Certificate(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}
