//! Connection limits of the lab tool: at most `max_connections` at once and `max_per_ip` from
//! one address, a connection that neither sends nor receives anything for `idle_timeout` is
//! closed, and a request's head (request line and headers) must arrive whole within
//! `head_timeout`. Without them, 250 idle connections (a slow client, a scan, a forgotten
//! browser tab pool) used up the process's file descriptors and `/api/health` stopped
//! answering; and 130 connections that each sent one header line every 5 s (slowloris) kept
//! every new client out, since each byte restarted the idle timer. axum's own server has none.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How many connections, and how long one may sit idle.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub max_connections: usize,
    /// Connections from one IP address: a quarter of the total keeps room for other clients.
    pub max_per_ip: usize,
    pub idle_timeout: Duration,
    /// From a connection's start, or the server's last answer on it, to the end of the next
    /// request's head (`\r\n\r\n`); the body is not counted (a large upload on a slow link).
    pub head_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            max_connections: 128,
            max_per_ip: 32,
            idle_timeout: Duration::from_secs(10),
            head_timeout: Duration::from_secs(10),
        }
    }
}

/// Open connections per IP address.
type PerIp = Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>;

/// One connection's count in [`PerIp`], given back when the connection is dropped.
struct IpPlace {
    counts: PerIp,
    ip: std::net::IpAddr,
}

impl IpPlace {
    /// A place for `ip`, or None when it has `max` connections already.
    fn take(counts: &PerIp, ip: std::net::IpAddr, max: usize) -> Option<Self> {
        let mut m = counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Self {
            counts: counts.clone(),
            ip,
        })
    }
}

impl Drop for IpPlace {
    fn drop(&mut self) {
        let mut m = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// A listener that enforces [`ConnLimits`]: past the cap, a new connection is closed at once.
pub struct LimitedListener {
    inner: TcpListener,
    limits: ConnLimits,
    slots: Arc<Semaphore>,
    per_ip: PerIp,
}

impl LimitedListener {
    pub fn new(inner: TcpListener, limits: ConnLimits) -> Self {
        Self {
            inner,
            limits,
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            per_ip: Default::default(),
        }
    }
}

impl axum::serve::Listener for LimitedListener {
    type Io = LimitedStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, addr) = match self.inner.accept().await {
                Ok(c) => c,
                Err(_) => {
                    // out of descriptors or a reset connection: wait a little, go on
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Some(ip_place) =
                IpPlace::take(&self.per_ip, addr.ip(), self.limits.max_per_ip.max(1))
            else {
                drop(stream); // this address holds its share: closed at once
                continue;
            };
            let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                drop(stream); // over the cap: closed at once
                continue;
            };
            let (idle, head) = (self.limits.idle_timeout, self.limits.head_timeout);
            return (
                LimitedStream {
                    io: stream,
                    idle,
                    deadline: Box::pin(tokio::time::sleep(idle)),
                    head,
                    head_deadline: Box::pin(tokio::time::sleep(head)),
                    in_head: true,
                    tail: 0,
                    _permit: permit,
                    _ip: ip_place,
                },
                addr,
            );
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection that fails with `TimedOut` once idle for too long, and frees its slot when
/// dropped.
pub struct LimitedStream {
    io: TcpStream,
    idle: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
    head: Duration,
    /// Armed at the start and at each answer; disarmed once the request head has arrived.
    head_deadline: Pin<Box<tokio::time::Sleep>>,
    in_head: bool,
    /// How much of `\r\n\r\n` the bytes read so far end with (0–3).
    tail: u8,
    _permit: OwnedSemaphorePermit,
    _ip: IpPlace,
}

impl LimitedStream {
    /// After an operation: progress resets the deadline; no progress past it is an error.
    fn watch<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(v) => {
                let next = tokio::time::Instant::now() + self.idle;
                self.deadline.as_mut().reset(next);
                Poll::Ready(v)
            }
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connection idle for too long",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

/// After `tail` bytes of `\r\n\r\n` already seen, how many are seen after `bytes`, and
/// whether the whole terminator was.
fn head_end(mut tail: u8, bytes: &[u8]) -> (u8, bool) {
    const END: &[u8; 4] = b"\r\n\r\n";
    for &b in bytes {
        tail = if b == END[tail as usize] {
            tail + 1
        } else if b == b'\r' {
            1
        } else {
            0
        };
        if tail == 4 {
            return (0, true);
        }
    }
    (tail, false)
}

impl AsyncRead for LimitedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if self.in_head {
            if let Poll::Ready(Ok(())) = &r {
                let (tail, ended) = head_end(self.tail, &buf.filled()[before..]);
                self.tail = tail;
                self.in_head = !ended;
            }
            if self.in_head && self.head_deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "request head not complete in time",
                )));
            }
        }
        self.watch(cx, r)
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(_)) = &r {
            // an answer: the next request's head has its own time from here
            let next = tokio::time::Instant::now() + self.head;
            self.head_deadline.as_mut().reset(next);
            self.in_head = true;
            self.tail = 0;
        }
        self.watch(cx, r)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_of_a_request_head_is_found_across_reads() {
        assert_eq!(head_end(0, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), (0, true));
        let (t, done) = head_end(0, b"GET / HTTP/1.1\r\nHost: x\r\n\r");
        assert!(!done);
        assert_eq!(head_end(t, b"\nbody"), (0, true));
        assert_eq!(head_end(0, b"a\r\r\n\r\n"), (0, true));
        assert!(!head_end(0, b"X-A: 1\r\n").1);
    }

    #[test]
    fn one_address_cannot_take_every_place() {
        let counts = PerIp::default();
        let a: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        let b: std::net::IpAddr = "10.0.0.2".parse().unwrap();
        let held: Vec<IpPlace> = (0..3)
            .filter_map(|_| IpPlace::take(&counts, a, 3))
            .collect();
        assert_eq!(held.len(), 3);
        assert!(IpPlace::take(&counts, a, 3).is_none(), "a's share is used");
        assert!(IpPlace::take(&counts, b, 3).is_some(), "b still gets in");
        drop(held);
        assert!(IpPlace::take(&counts, a, 3).is_some(), "places come back");
    }
}
