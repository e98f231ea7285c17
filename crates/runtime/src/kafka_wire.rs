//! The little of Kafka's wire protocol that `log_identity` and `log_end` speak to a broker
//! directly (librdkafka exposes neither topic ids nor a cheap end-offset query to a service that
//! does not consume): one framed request, one answer, and a reader for the answer's fields.

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// An answer that is not what the protocol says it should be.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct WireError(pub &'static str);

/// Sends one framed request to `address` and returns the answer without its length.
pub async fn exchange(address: &str, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(address).await?;
    stream.write_all(request).await?;
    let length = stream.read_i32().await?;
    let length = usize::try_from(length)
        .ok()
        .filter(|&n| n <= 16 << 20)
        .ok_or_else(|| std::io::Error::other("implausible response length"))?;
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await?;
    Ok(body)
}

/// A request's header: api key, version, correlation id and client id (a classic nullable string,
/// even in flexible versions, whose header v2 then adds an empty tag buffer).
pub fn request_header(api_key: i16, version: i16, correlation_id: i32, flexible: bool) -> Vec<u8> {
    const CLIENT_ID: &[u8] = b"eventline";
    let mut header = Vec::with_capacity(64);
    header.extend_from_slice(&api_key.to_be_bytes());
    header.extend_from_slice(&version.to_be_bytes());
    header.extend_from_slice(&correlation_id.to_be_bytes());
    header.extend_from_slice(&(CLIENT_ID.len() as i16).to_be_bytes());
    header.extend_from_slice(CLIENT_ID);
    if flexible {
        header.push(0);
    }
    header
}

/// Frames `message` with its length.
pub fn framed(message: &[u8]) -> Vec<u8> {
    let mut framed = Vec::with_capacity(message.len() + 4);
    framed.extend_from_slice(&(message.len() as i32).to_be_bytes());
    framed.extend_from_slice(message);
    framed
}

pub fn put_unsigned_varint(buffer: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        buffer.push((value as u8) | 0x80);
        value >>= 7;
    }
    buffer.push(value as u8);
}

/// Reads an answer's fields in order.
pub struct Reader<'a> {
    pub bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.bytes.len() < n {
            return Err(WireError("answer cut short"));
        }
        let (taken, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(taken)
    }

    pub fn byte(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    pub fn i16(&mut self) -> Result<i16, WireError> {
        Ok(i16::from_be_bytes([self.byte()?, self.byte()?]))
    }

    pub fn i32(&mut self) -> Result<i32, WireError> {
        let bytes = self.take(4)?;
        Ok(i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    pub fn i64(&mut self) -> Result<i64, WireError> {
        Ok((i64::from(self.i32()?) << 32) | i64::from(self.i32()? as u32))
    }

    /// A classic (non-compact) array's length; a null array reads as empty.
    pub fn array_len(&mut self) -> Result<usize, WireError> {
        Ok(usize::try_from(self.i32()?).unwrap_or(0))
    }

    /// A classic string (int16 length); null reads as empty.
    pub fn string(&mut self) -> Result<String, WireError> {
        let length = usize::try_from(self.i16()?).unwrap_or(0);
        Ok(String::from_utf8_lossy(self.take(length)?).into_owned())
    }

    fn unsigned_varint(&mut self) -> Result<u64, WireError> {
        let mut value = 0_u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(WireError("varint too long"))
    }

    /// A compact array's or string's length (its encoding is length + 1; 0 is null, read as 0).
    pub fn compact_len(&mut self) -> Result<usize, WireError> {
        let encoded = self.unsigned_varint()?;
        usize::try_from(encoded.saturating_sub(1)).map_err(|_| WireError("length"))
    }

    pub fn compact_string(&mut self) -> Result<Option<String>, WireError> {
        let encoded = self.unsigned_varint()?;
        if encoded == 0 {
            return Ok(None);
        }
        let length = usize::try_from(encoded - 1).map_err(|_| WireError("length"))?;
        let text = self.take(length)?;
        Ok(Some(String::from_utf8_lossy(text).into_owned()))
    }

    pub fn skip_tags(&mut self) -> Result<(), WireError> {
        for _ in 0..self.unsigned_varint()? {
            self.unsigned_varint()?; // tag
            let size = self.unsigned_varint()?;
            self.take(usize::try_from(size).map_err(|_| WireError("tag size"))?)?;
        }
        Ok(())
    }
}
