//! A connection to one Kafka broker for the few requests the services send without librdkafka:
//! `log_identity` asks Metadata for the cluster id and the topic id (librdkafka exposes no topic
//! ids through a safe API), and `log_end` asks ListOffsets for the query service, which links no
//! librdkafka. The messages are encoded and decoded by the `kafka-protocol` crate; this module
//! only frames them and secures the connection as librdkafka would, from the same settings
//! (`KafkaSecurity`): TLS through rustls, then SASL (PLAIN, SCRAM-SHA-256/512) through the `sasl`
//! crate.

mod sasl;
mod tls;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::config::KafkaSecurity;

/// Why a request got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("SASL authentication failed: {0}")]
    Authentication(String),
    #[error("the broker's answer could not be read: {0}")]
    Protocol(String),
}

impl WireError {
    fn protocol(error: impl std::fmt::Display) -> WireError {
        WireError::Protocol(error.to_string())
    }
}

/// The largest answer we accept (a metadata answer of a large cluster is well below this).
const MAX_ANSWER: usize = 16 << 20;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One connection, secured and authenticated as the settings say.
pub struct Connection {
    stream: Box<dyn Io>,
    correlation_id: i32,
}

impl Connection {
    /// Connects to `address` (`host:port`), then TLS and SASL as `security` says.
    pub async fn open(address: &str, security: &KafkaSecurity) -> Result<Connection, WireError> {
        let tcp = TcpStream::connect(address).await?;
        tcp.set_nodelay(true)?;
        let stream: Box<dyn Io> = if security.uses_tls() {
            Box::new(tls::connect(tcp, address, security).await?)
        } else {
            Box::new(tcp)
        };
        let mut connection = Connection { stream, correlation_id: 0 };
        if security.uses_sasl() {
            sasl::authenticate(&mut connection, security).await?;
        }
        Ok(connection)
    }

    /// Sends `request` as `version` and reads its answer.
    pub async fn send<R: Request>(&mut self, request: &R, version: i16) -> Result<R::Response, WireError> {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("eventline")));
        let mut message = BytesMut::new();
        header.encode(&mut message, R::header_version(version)).map_err(WireError::protocol)?;
        request.encode(&mut message, version).map_err(WireError::protocol)?;
        let length = i32::try_from(message.len()).map_err(WireError::protocol)?;
        self.stream.write_all(&length.to_be_bytes()).await?;
        self.stream.write_all(&message).await?;
        self.stream.flush().await?;

        let length = usize::try_from(self.stream.read_i32().await?)
            .ok()
            .filter(|&n| n <= MAX_ANSWER)
            .ok_or_else(|| WireError::Protocol("implausible answer length".into()))?;
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).await?;
        let mut body = Bytes::from(body);
        let header = ResponseHeader::decode(&mut body, R::Response::header_version(version))
            .map_err(WireError::protocol)?;
        if header.correlation_id != self.correlation_id {
            return Err(WireError::Protocol("the answer is not to our request".into()));
        }
        R::Response::decode(&mut body, version).map_err(WireError::protocol)
    }
}
