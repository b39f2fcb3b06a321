//! TLS material (test-only, committed under `certs/`) and the rustls server config.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// PEM of the test CA that signed the server certificate.
pub(crate) const CA_PEM: &str = include_str!("certs/ca.pem");
const SERVER_PEM: &str = include_str!("certs/server.pem");
const SERVER_KEY: &str = include_str!("certs/server.key");

pub(crate) fn server_config() -> anyhow::Result<rustls::ServerConfig> {
    let certs = CertificateDer::pem_slice_iter(SERVER_PEM.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("server.pem: {e:?}"))?;
    let key = PrivateKeyDer::from_pem_slice(SERVER_KEY.as_bytes())
        .map_err(|e| anyhow::anyhow!("server.key: {e:?}"))?;
    // Explicit provider: more than one rustls provider may be compiled into the binary.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(cfg)
}
