//! Raw HTTP/1.1 over a TCP socket, for what reqwest will not send: malformed and
//! smuggling-shaped heads, absolute-form targets, bytes dribbled slowly.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One client connection to keygate, written to and read from by hand.
pub struct RawConn {
    sock: TcpStream,
    read: Vec<u8>,
    closed: bool,
}

impl RawConn {
    pub async fn connect(port: u16) -> RawConn {
        let sock = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect to keygate");
        RawConn {
            sock,
            read: Vec::new(),
            closed: false,
        }
    }

    /// Writes `bytes`; `false` when the server had already closed the connection.
    pub async fn send(&mut self, bytes: &[u8]) -> bool {
        self.sock.write_all(bytes).await.is_ok() && self.sock.flush().await.is_ok()
    }

    /// Reads what arrives for up to `wait`, stopping early when the server closes the
    /// connection (or resets it). Returns everything read so far on this connection.
    pub async fn read_for(&mut self, wait: Duration) -> &[u8] {
        let deadline = Instant::now() + wait;
        let mut buf = vec![0u8; 64 * 1024];
        while !self.closed {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match tokio::time::timeout(left, self.sock.read(&mut buf)).await {
                Err(_) => break,
                Ok(Ok(0) | Err(_)) => self.closed = true,
                Ok(Ok(n)) => self.read.extend_from_slice(&buf[..n]),
            }
        }
        &self.read
    }

    /// Reads until the server closes the connection (at most `wait`); `true` if it did.
    pub async fn closed_within(&mut self, wait: Duration) -> bool {
        self.read_for(wait).await;
        self.closed
    }

    /// Closes the connection with a TCP reset (linger 0) instead of a FIN: a client
    /// that vanishes.
    pub fn reset(self) {
        if let Ok(std) = self.sock.into_std() {
            let sock = socket2::Socket::from(std);
            let _ = sock.set_linger(Some(Duration::ZERO));
        }
    }

    /// Everything read so far, as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.read).into_owned()
    }

    /// The status of the first response read, if one was.
    pub fn status(&self) -> Option<u16> {
        status_of(&self.read)
    }

    /// How many responses were read: status lines (`HTTP/1.1 ` and three digits),
    /// wherever they start (a response follows the previous body directly).
    pub fn responses(&self) -> usize {
        let text = self.text();
        text.match_indices("HTTP/1.1 ")
            .filter(|(at, m)| {
                let code = text.get(at + m.len()..at + m.len() + 3).unwrap_or("");
                code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit())
            })
            .count()
    }
}

/// Sends one request on a fresh connection and reads the answer until the server
/// closes or `wait` passes.
pub async fn exchange(port: u16, request: &[u8], wait: Duration) -> RawConn {
    let mut conn = RawConn::connect(port).await;
    conn.send(request).await;
    conn.read_for(wait).await;
    conn
}

fn status_of(bytes: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(bytes.get(..12)?).ok()?;
    text.strip_prefix("HTTP/1.1 ")?.parse().ok()
}
