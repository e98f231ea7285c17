//! TLS to a broker with rustls: the CA file of `KAFKA_SSL_CA_LOCATION` (else the system's CAs),
//! the broker's name checked against its certificate (librdkafka's default,
//! `ssl.endpoint.identification.algorithm=https`), and a client certificate when one is given.

use std::io::BufReader;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::WireError;
use crate::config::KafkaSecurity;

pub async fn connect(
    tcp: TcpStream,
    address: &str,
    security: &KafkaSecurity,
) -> Result<TlsStream<TcpStream>, WireError> {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(host.to_owned()).map_err(|e| WireError::Tls(format!("{host}: {e}")))?;
    let connector = TlsConnector::from(Arc::new(client_config(security)?));
    connector.connect(name, tcp).await.map_err(|e| WireError::Tls(format!("{address}: {e}")))
}

fn client_config(security: &KafkaSecurity) -> Result<rustls::ClientConfig, WireError> {
    let mut roots = rustls::RootCertStore::empty();
    match &security.ssl_ca_location {
        Some(path) => {
            for certificate in read_certificates(path)? {
                roots.add(certificate).map_err(|e| WireError::Tls(format!("{}: {e}", path.display())))?;
            }
        }
        None => {
            for certificate in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(certificate);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| WireError::Tls(e.to_string()))?
        .with_root_certificates(roots);
    match (&security.ssl_certificate_location, &security.ssl_key_location) {
        (Some(certificate), Some(key_path)) => {
            let chain = read_certificates(certificate)?;
            let key = std::fs::File::open(key_path)
                .and_then(|file| rustls_pemfile::private_key(&mut BufReader::new(file)))
                .map_err(|e| WireError::Tls(format!("{}: {e}", key_path.display())))?
                .ok_or_else(|| WireError::Tls(format!("{}: no private key", key_path.display())))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| WireError::Tls(e.to_string()))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// The certificates of a PEM file (at least one).
fn read_certificates(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, WireError> {
    let unreadable = |e: std::io::Error| WireError::Tls(format!("{}: {e}", path.display()));
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let certificates: Vec<_> = rustls_pemfile::certs(&mut BufReader::new(file))
        .collect::<std::io::Result<_>>()
        .map_err(unreadable)?;
    if certificates.is_empty() {
        return Err(WireError::Tls(format!("{}: no certificate in the file", path.display())));
    }
    Ok(certificates)
}
