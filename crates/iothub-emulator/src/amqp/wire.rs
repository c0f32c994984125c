//! The byte stream under fe2o3: replays the protocol header we peeked, follows the client's
//! frames, enforces the idle timeout, and can be cut.
//!
//! The hub advertises half of its idle limit in `open`, as AMQP asks ("to avoid spurious
//! timeouts … half the peer's actual timeout threshold"), and closes connections silent for
//! the whole limit. fe2o3's acceptor, though, enforces exactly what it advertises, and drops
//! the socket without a `close`. So this wrapper keeps fe2o3's timer from firing by handing
//! it an empty frame (a heartbeat, which fe2o3 ignores) between two of the client's frames
//! while the client is within the real limit, and when the client has been silent for the
//! whole limit it tells the connection, which closes with an error. It also refuses frame
//! sizes below the AMQP minimum of 8, on which fe2o3's decoder would panic.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

/// An empty AMQP frame: size 8, data offset 2, type 0 (AMQP), channel 0.
const EMPTY_FRAME: [u8; 8] = [0, 0, 0, 8, 2, 0, 0, 0];

/// Shared between a [`Wire`] and its connection.
#[derive(Debug, Default)]
pub(crate) struct WireControl {
    killed: AtomicBool,
    reader: Mutex<Option<Waker>>,
    /// Notified once when the client has been silent for the idle limit.
    pub(crate) idle: Notify,
}

impl WireControl {
    /// Cuts the stream: reads see the end, writes fail.
    pub(crate) fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
        let waker = self.reader.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn killed(&self) -> bool {
        self.killed.load(Ordering::SeqCst)
    }
}

/// Follows the incoming bytes: protocol headers (`AMQP` + 4 bytes) and size-prefixed frames.
#[derive(Debug, Default)]
struct FrameTracker {
    prefix: [u8; 8],
    prefix_len: usize,
    /// Bytes of the current frame still to come; 0 at a boundary.
    remaining: usize,
    /// The last protocol header was AMQP's (not SASL's).
    in_amqp: bool,
    /// Complete frames since that header; the first is `open`.
    amqp_frames: usize,
}

impl FrameTracker {
    fn observe(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            if self.remaining > 0 {
                let n = self.remaining.min(bytes.len());
                self.remaining -= n;
                bytes = &bytes[n..];
                if self.remaining == 0 && self.in_amqp {
                    self.amqp_frames += 1;
                }
                continue;
            }
            // A frame's 4-byte size can never spell `AMQP`: that would be over 1 GB.
            let want = if self.prefix_len >= 4 && &self.prefix[..4] == b"AMQP" {
                8
            } else {
                4
            };
            let n = (want - self.prefix_len).min(bytes.len());
            self.prefix[self.prefix_len..self.prefix_len + n].copy_from_slice(&bytes[..n]);
            self.prefix_len += n;
            bytes = &bytes[n..];
            if self.prefix_len < want {
                continue;
            }
            if want == 8 {
                self.in_amqp = self.prefix[4] == 0;
                self.amqp_frames = 0;
                self.prefix_len = 0;
                continue;
            }
            if &self.prefix[..4] == b"AMQP" {
                // The first half of a header: read the rest.
                continue;
            }
            let size = u32::from_be_bytes([
                self.prefix[0],
                self.prefix[1],
                self.prefix[2],
                self.prefix[3],
            ]);
            if size < 8 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("AMQP frame size {size} is below the minimum of 8"),
                ));
            }
            self.prefix_len = 0;
            self.remaining = usize::try_from(size - 4).unwrap_or(usize::MAX);
        }
        Ok(())
    }

    /// Between two frames of an open AMQP connection, where an empty frame may go.
    fn can_inject(&self) -> bool {
        self.in_amqp && self.amqp_frames > 0 && self.remaining == 0 && self.prefix_len == 0
    }
}

/// A client's byte stream as fe2o3 sees it.
pub(crate) struct Wire<S> {
    inner: S,
    /// The header read before choosing an acceptor, replayed first.
    replay: [u8; 8],
    replayed: usize,
    tracker: FrameTracker,
    /// How much of an injected empty frame has been handed out (8 = none pending).
    injected: usize,
    /// Zero disables the idle limit.
    idle_limit: Duration,
    last_heard: Instant,
    last_handed: Instant,
    idle_reported: bool,
    timer: Pin<Box<Sleep>>,
    control: std::sync::Arc<WireControl>,
}

impl<S> fmt::Debug for Wire<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wire")
            .field("idle_limit", &self.idle_limit)
            .finish_non_exhaustive()
    }
}

impl<S> Wire<S> {
    pub(crate) fn new(
        inner: S,
        header: [u8; 8],
        idle_limit: Duration,
        control: std::sync::Arc<WireControl>,
    ) -> Self {
        let now = Instant::now();
        Self {
            inner,
            replay: header,
            replayed: 0,
            tracker: FrameTracker::default(),
            injected: EMPTY_FRAME.len(),
            idle_limit,
            last_heard: now,
            last_handed: now,
            idle_reported: false,
            timer: Box::pin(tokio::time::sleep_until(now)),
            control,
        }
    }

    /// Nothing from the client: report idleness, or hand fe2o3 a heartbeat when due.
    /// Returns true when an empty frame was started.
    fn on_quiet(&mut self, cx: &mut Context<'_>) -> bool {
        if self.idle_limit.is_zero() {
            return false;
        }
        // fe2o3 times out at the advertised half of the limit: refresh it well before.
        let keepalive = self.idle_limit / 4;
        loop {
            let now = Instant::now();
            if !self.idle_reported && now >= self.last_heard + self.idle_limit {
                self.idle_reported = true;
                self.control.idle.notify_one();
            }
            if self.idle_reported {
                // From here on fe2o3's own timer is the backstop.
                return false;
            }
            let inject_at = self.last_handed + keepalive;
            if self.tracker.can_inject() && now >= inject_at {
                self.injected = 0;
                return true;
            }
            let mut next = self.last_heard + self.idle_limit;
            if self.tracker.can_inject() {
                next = next.min(inject_at);
            }
            self.timer.as_mut().reset(next);
            if self.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Wire<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        *this
            .control
            .reader
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
        if this.control.killed() || buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if this.injected < EMPTY_FRAME.len() || this.replayed < this.replay.len() {
            let from_replay = this.injected >= EMPTY_FRAME.len();
            let (source, pos) = if from_replay {
                (&this.replay[..], &mut this.replayed)
            } else {
                (&EMPTY_FRAME[..], &mut this.injected)
            };
            let n = (source.len() - *pos).min(buf.remaining());
            let chunk = &source[*pos..*pos + n];
            buf.put_slice(chunk);
            *pos += n;
            if from_replay {
                this.tracker.observe(chunk)?;
            }
            this.last_handed = Instant::now();
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let fresh = &buf.filled()[before..];
                if !fresh.is_empty() {
                    this.tracker.observe(fresh)?;
                    let now = Instant::now();
                    this.last_heard = now;
                    this.last_handed = now;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if this.on_quiet(cx) {
                    let n = EMPTY_FRAME.len().min(buf.remaining());
                    buf.put_slice(&EMPTY_FRAME[..n]);
                    this.injected = n;
                    this.last_handed = Instant::now();
                    return Poll::Ready(Ok(()));
                }
                Poll::Pending
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Wire<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.control.killed() {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.control.killed() {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, duplex};

    use super::*;

    const AMQP: &[u8; 8] = b"AMQP\x00\x01\x00\x00";
    const SASL: &[u8; 8] = b"AMQP\x03\x01\x00\x00";

    fn frame(body_len: usize) -> Vec<u8> {
        let size = u32::try_from(8 + body_len).unwrap();
        let mut f = size.to_be_bytes().to_vec();
        f.extend([2, 0, 0, 0]);
        f.extend(std::iter::repeat_n(0x40, body_len));
        f
    }

    #[test]
    fn tracker_follows_headers_and_frames_split_anywhere() {
        let mut stream = SASL.to_vec();
        stream.extend(frame(5)); // sasl-init
        stream.extend(AMQP);
        stream.extend(frame(20)); // open
        stream.extend(frame(0)); // a heartbeat
        for split in 1..stream.len() {
            let mut t = FrameTracker::default();
            let (a, b) = stream.split_at(split);
            t.observe(a).unwrap();
            t.observe(b).unwrap();
            assert!(t.in_amqp);
            assert_eq!(t.amqp_frames, 2, "split at {split}");
            assert!(t.can_inject());
        }
        let mut t = FrameTracker::default();
        t.observe(SASL).unwrap();
        t.observe(&frame(5)).unwrap();
        assert!(!t.can_inject(), "no heartbeats in SASL");
        t.observe(AMQP).unwrap();
        assert!(!t.can_inject(), "none before open");
        t.observe(&frame(3)[..6]).unwrap();
        assert!(!t.can_inject(), "none inside a frame");
    }

    #[test]
    fn frames_below_the_minimum_size_are_refused() {
        let mut t = FrameTracker::default();
        t.observe(AMQP).unwrap();
        assert!(t.observe(&[0, 0, 0, 5]).is_err());
    }

    async fn read_some(wire: &mut Wire<tokio::io::DuplexStream>) -> Vec<u8> {
        let mut buf = [0u8; 64];
        let n = wire.read(&mut buf).await.unwrap();
        buf[..n].to_vec()
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeats_keep_fe2o3_alive_until_the_client_is_idle_too_long() {
        let (mut client, server) = duplex(1024);
        let control = Arc::new(WireControl::default());
        let mut wire = Wire::new(server, *AMQP, Duration::from_secs(4), control.clone());
        let start = Instant::now();
        assert_eq!(read_some(&mut wire).await, AMQP);
        client.write_all(&frame(4)).await.unwrap();
        assert_eq!(read_some(&mut wire).await, frame(4));

        // A silent client: a heartbeat each second (a quarter of the limit) ...
        for second in 1..=3 {
            assert_eq!(read_some(&mut wire).await, EMPTY_FRAME);
            assert_eq!(start.elapsed(), Duration::from_secs(second));
        }
        // ... until the limit, when the connection hears of it and heartbeats stop.
        let idle_at = async {
            control.idle.notified().await;
            start.elapsed()
        };
        let read = tokio::time::timeout(Duration::from_secs(30), read_some(&mut wire));
        let (idle_at, read) = tokio::join!(idle_at, read);
        assert_eq!(idle_at, Duration::from_secs(4));
        assert!(read.is_err(), "nothing more is handed out");
    }

    #[tokio::test(start_paused = true)]
    async fn client_heartbeats_keep_the_connection() {
        let (mut client, server) = duplex(1024);
        let control = Arc::new(WireControl::default());
        let mut wire = Wire::new(server, *AMQP, Duration::from_secs(4), control.clone());
        let reader = tokio::spawn(async move {
            let mut total = 0;
            let mut buf = [0u8; 64];
            while let Ok(n @ 1..) = wire.read(&mut buf).await {
                total += n;
            }
            total
        });
        client.write_all(&frame(1)).await.unwrap();
        for _ in 0..5 {
            // The client's own heartbeat every 3 s, under the 4 s limit.
            tokio::time::sleep(Duration::from_secs(3)).await;
            client.write_all(&EMPTY_FRAME).await.unwrap();
        }
        let idle = tokio::time::timeout(Duration::ZERO, control.idle.notified()).await;
        assert!(idle.is_err(), "never idle");
        // Now silent: idle at the limit.
        let start = Instant::now();
        control.idle.notified().await;
        assert_eq!(start.elapsed(), Duration::from_secs(4));
        control.kill();
        // Header, open, five client heartbeats, and ours in between (a multiple of 8).
        let total = reader.await.unwrap();
        assert_eq!((total - AMQP.len() - frame(1).len()) % 8, 0);
        assert!(total >= AMQP.len() + frame(1).len() + 5 * 8);
    }

    #[tokio::test]
    async fn kill_ends_reads_and_fails_writes() {
        let (_client, server) = duplex(64);
        let control = Arc::new(WireControl::default());
        let mut wire = Wire::new(server, *AMQP, Duration::ZERO, control.clone());
        read_some(&mut wire).await;
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            let n = wire.read(&mut buf).await.unwrap();
            (n, wire.write_all(b"x").await.is_err())
        });
        tokio::task::yield_now().await;
        control.kill();
        assert_eq!(reader.await.unwrap(), (0, true));
    }
}
