//! A clamd client speaking `INSTREAM` over TCP or a Unix socket.
//!
//! Protocol: `zINSTREAM\0`, then chunks each prefixed with a 4-byte
//! big-endian length, then a zero-length chunk; the reply is one
//! NUL-terminated line: `stream: OK`, `stream: <NAME> FOUND`, or
//! `… ERROR` (for instance `INSTREAM size limit exceeded. ERROR`, after
//! which clamd may close the socket while we still write: the reply is read
//! anyway).
//!
//! ```
//! use boardroom::assets::scan::{ClamdAddr, Verdict, parse_reply};
//! assert!(ClamdAddr::parse("tcp://127.0.0.1:3310").is_some());
//! assert!(ClamdAddr::parse("http://x").is_none());
//! assert_eq!(parse_reply("stream: OK"), Ok(Verdict::Clean));
//! assert_eq!(
//!     parse_reply("stream: Test.Eicar.UNOFFICIAL FOUND"),
//!     Ok(Verdict::Infected("Test.Eicar.UNOFFICIAL".into()))
//! );
//! ```

use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Where clamd listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClamdAddr {
    /// `tcp://host:port`.
    Tcp(String),
    /// `unix:///path`.
    Unix(String),
}

impl ClamdAddr {
    /// Parses `tcp://host:port` or `unix:///path`.
    pub fn parse(url: &str) -> Option<Self> {
        if let Some(rest) = url.strip_prefix("tcp://") {
            let (host, port) = rest.rsplit_once(':')?;
            port.parse::<u16>().ok()?;
            (!host.is_empty()).then(|| Self::Tcp(rest.to_owned()))
        } else if let Some(path) = url.strip_prefix("unix://") {
            path.starts_with('/').then(|| Self::Unix(path.to_owned()))
        } else {
            None
        }
    }
}

/// What clamd said about a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No signature matched.
    Clean,
    /// A signature matched (its name).
    Infected(String),
}

/// Why a scan gave no verdict.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    /// clamd could not be reached, or the connection broke: retry later.
    #[error("clamd unreachable: {0}")]
    Unreachable(String),
    /// clamd answered with an error about this file (too large, …).
    #[error("clamd refused the file: {0}")]
    Refused(String),
    /// Reading the file from storage failed.
    #[error("reading the file: {0}")]
    Source(String),
}

/// Parses clamd's reply line (without the NUL).
pub fn parse_reply(reply: &str) -> Result<Verdict, ScanError> {
    let reply = reply.trim_end_matches('\0').trim();
    let body = reply.strip_prefix("stream: ").unwrap_or(reply);
    if body == "OK" {
        return Ok(Verdict::Clean);
    }
    if let Some(name) = body.strip_suffix(" FOUND") {
        return Ok(Verdict::Infected(name.to_owned()));
    }
    Err(ScanError::Refused(body.to_owned()))
}

/// A clamd endpoint.
#[derive(Debug, Clone)]
pub struct Clamd {
    addr: ClamdAddr,
    timeout: Duration,
}

impl Clamd {
    /// A client for `addr`; every call is bounded by `timeout`.
    pub fn new(addr: ClamdAddr, timeout: Duration) -> Self {
        Self { addr, timeout }
    }

    /// `PING` → `PONG` (readiness).
    pub async fn ping(&self) -> Result<(), ScanError> {
        let exchange = async {
            match &self.addr {
                ClamdAddr::Tcp(addr) => ping_on(tokio::net::TcpStream::connect(addr).await?).await,
                ClamdAddr::Unix(path) => {
                    ping_on(tokio::net::UnixStream::connect(path).await?).await
                }
            }
        };
        match tokio::time::timeout(self.timeout.min(Duration::from_secs(2)), exchange).await {
            Ok(Ok(reply)) if reply.trim_end_matches('\0').trim() == "PONG" => Ok(()),
            Ok(Ok(other)) => Err(ScanError::Unreachable(format!("PING answered {other:?}"))),
            Ok(Err(error)) => Err(ScanError::Unreachable(error.to_string())),
            Err(_) => Err(ScanError::Unreachable("PING timed out".into())),
        }
    }

    /// Streams `body` to clamd and returns its verdict.
    pub async fn scan<S>(&self, body: S) -> Result<Verdict, ScanError>
    where
        S: Stream<Item = Result<Bytes, object_store::Error>> + Unpin + Send,
    {
        let exchange = async {
            match &self.addr {
                ClamdAddr::Tcp(addr) => {
                    let socket = tokio::net::TcpStream::connect(addr)
                        .await
                        .map_err(|e| ScanError::Unreachable(e.to_string()))?;
                    instream(socket, body).await
                }
                ClamdAddr::Unix(path) => {
                    let socket = tokio::net::UnixStream::connect(path)
                        .await
                        .map_err(|e| ScanError::Unreachable(e.to_string()))?;
                    instream(socket, body).await
                }
            }
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ScanError::Unreachable("scan timed out".into()))?
    }
}

async fn ping_on<T: AsyncRead + AsyncWrite + Unpin>(mut socket: T) -> std::io::Result<String> {
    socket.write_all(b"zPING\0").await?;
    read_reply(&mut socket).await
}

async fn read_reply<T: AsyncRead + Unpin>(socket: &mut T) -> std::io::Result<String> {
    let mut reply = Vec::new();
    // Replies are one short line; bound them anyway.
    let mut limited = socket.take(4096);
    let mut buf = [0u8; 256];
    loop {
        let n = limited.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
        if reply.contains(&0) {
            break;
        }
    }
    if reply.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "clamd closed the connection without a reply",
        ));
    }
    let end = reply.iter().position(|&b| b == 0).unwrap_or(reply.len());
    Ok(String::from_utf8_lossy(&reply[..end]).into_owned())
}

async fn instream<T, S>(mut socket: T, mut body: S) -> Result<Verdict, ScanError>
where
    T: AsyncRead + AsyncWrite + Unpin,
    S: Stream<Item = Result<Bytes, object_store::Error>> + Unpin,
{
    let unreachable = |e: std::io::Error| ScanError::Unreachable(e.to_string());
    socket
        .write_all(b"zINSTREAM\0")
        .await
        .map_err(unreachable)?;
    let mut write_failed = None;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ScanError::Source(e.to_string()))?;
        // clamd takes chunks up to its StreamMaxLength; 64 KiB pieces keep
        // each write small.
        for piece in chunk.chunks(64 << 10) {
            let len = u32::try_from(piece.len()).unwrap_or(u32::MAX).to_be_bytes();
            let written = async {
                socket.write_all(&len).await?;
                socket.write_all(piece).await
            }
            .await;
            if let Err(error) = written {
                write_failed = Some(error);
                break;
            }
        }
        if write_failed.is_some() {
            break;
        }
    }
    if write_failed.is_none()
        && let Err(error) = socket.write_all(&0u32.to_be_bytes()).await
    {
        write_failed = Some(error);
    }
    // Even after a broken pipe clamd may have said why (size limit): read it.
    match read_reply(&mut socket).await {
        Ok(reply) => parse_reply(&reply),
        Err(read_error) => Err(unreachable(write_failed.unwrap_or(read_error))),
    }
}
