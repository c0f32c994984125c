//! Keeps an idle AMQP connection open by writing empty frames.
//!
//! The hub closes connections that send nothing for 240 s. fe2o3-amqp only sends empty frames
//! when the remote advertises an idle timeout, and then at the full period rather than half of
//! it, so we cannot rely on it. This wrapper sits between fe2o3 and the byte stream (TLS or
//! WebSocket): when nothing has been written for the keep-alive interval it writes an empty
//! AMQP frame itself, but only between two frames of fe2o3's output, which it tracks by
//! parsing the outgoing length prefixes, and only once the AMQP `open` has gone out.
//!
//! fe2o3 polls the read side all the time, so the timer is driven from `poll_read`.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// An empty AMQP frame: size 8, data offset 2, type 0 (AMQP), channel 0.
const EMPTY_FRAME: [u8; 8] = [0, 0, 0, 8, 2, 0, 0, 0];

/// Follows the outgoing bytes: protocol headers (`AMQP` + 4 bytes) and size-prefixed frames.
#[derive(Debug, Default)]
struct FrameTracker {
    prefix: [u8; 8],
    prefix_len: usize,
    // Bytes of the current frame still to come; 0 at a boundary.
    remaining: usize,
    // The last protocol header was the AMQP one (not SASL).
    in_amqp: bool,
    // Complete frames written since the AMQP header; the first one is `open`.
    amqp_frames: usize,
}

impl FrameTracker {
    fn observe(&mut self, mut bytes: &[u8]) {
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
            // At a boundary: a header is 8 bytes starting with `AMQP`, a frame starts with its
            // 4-byte size (which can never spell `AMQP`: that would be over 1 GB).
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
            if want == 4 && &self.prefix[..4] == b"AMQP" {
                continue; // read the rest of the header
            }
            if want == 8 {
                self.in_amqp = self.prefix[4] == 0;
                self.amqp_frames = 0;
            } else {
                let size = u32::from_be_bytes([
                    self.prefix[0],
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                ]) as usize;
                self.remaining = size.saturating_sub(4);
                if self.remaining == 0 && self.in_amqp {
                    self.amqp_frames += 1;
                }
            }
            self.prefix_len = 0;
        }
    }

    /// Whether an empty frame may be written now.
    fn can_inject(&self) -> bool {
        self.prefix_len == 0 && self.remaining == 0 && self.in_amqp && self.amqp_frames > 0
    }
}

/// A byte stream that writes an empty AMQP frame after `interval` without writes.
pub(crate) struct KeepAlive<S> {
    inner: S,
    interval: Duration,
    timer: Pin<Box<Sleep>>,
    last_write: Instant,
    tracker: FrameTracker,
    // Bytes of the injected frame already written, while one is being written.
    injecting: Option<usize>,
    needs_flush: bool,
}

impl<S> fmt::Debug for KeepAlive<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeepAlive")
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> KeepAlive<S> {
    pub(crate) fn new(inner: S, interval: Duration) -> Self {
        let now = Instant::now();
        Self {
            inner,
            interval,
            timer: Box::pin(tokio::time::sleep_until(now + interval)),
            last_write: now,
            tracker: FrameTracker::default(),
            injecting: None,
            needs_flush: false,
        }
    }

    /// Finishes writing an injected frame, if one is under way.
    fn poll_injection(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(written) = self.injecting {
            if written == EMPTY_FRAME.len() {
                self.injecting = None;
                self.needs_flush = true;
                self.last_write = Instant::now();
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &EMPTY_FRAME[written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.injecting = Some(written + n);
        }
        Poll::Ready(Ok(()))
    }

    /// Starts an injection when the timer says so, and pushes it out. `Pending` only means the
    /// keep-alive work is waiting; the caller goes on with its own I/O.
    fn poll_keep_alive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.injecting.is_some() {
                ready!(self.poll_injection(cx))?;
            }
            if self.needs_flush {
                ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
                self.needs_flush = false;
            }
            ready!(self.timer.as_mut().poll(cx));
            let now = Instant::now();
            let due = self.last_write + self.interval;
            if now < due {
                self.timer.as_mut().reset(due);
            } else if self.tracker.can_inject() {
                tracing::trace!("writing an AMQP empty frame to keep the connection alive");
                self.injecting = Some(0);
                self.timer.as_mut().reset(now + self.interval);
            } else {
                // Mid-frame or before `open`: fe2o3 is writing anyway; look again soon.
                self.timer.as_mut().reset(now + self.interval / 4);
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for KeepAlive<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Poll::Ready(Err(error)) = this.poll_keep_alive(cx) {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for KeepAlive<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_injection(cx))?;
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        this.tracker.observe(&buf[..n]);
        this.last_write = Instant::now();
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_injection(cx))?;
        ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        this.needs_flush = false;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_injection(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const SASL_HEADER: &[u8] = b"AMQP\x03\x01\x00\x00";
    const AMQP_HEADER: &[u8] = b"AMQP\x00\x01\x00\x00";

    fn frame(body_len: usize) -> Vec<u8> {
        let mut frame = ((8 + body_len) as u32).to_be_bytes().to_vec();
        frame.extend([2, 0, 0, 0]);
        frame.extend(std::iter::repeat_n(0xAB, body_len));
        frame
    }

    #[test]
    fn the_tracker_finds_frame_boundaries_in_any_chunking() {
        let mut stream = Vec::new();
        stream.extend(SASL_HEADER);
        stream.extend(frame(20)); // sasl-init
        stream.extend(AMQP_HEADER);
        let open = frame(30);
        stream.extend(&open);
        let begin = frame(5);
        stream.extend(&begin);
        let sasl_end = SASL_HEADER.len() + 28;
        let open_end = sasl_end + AMQP_HEADER.len() + open.len();
        for chunk in 1..=stream.len() {
            let mut tracker = FrameTracker::default();
            let mut position = 0;
            for piece in stream.chunks(chunk) {
                tracker.observe(piece);
                position += piece.len();
                let boundary_after_open = position == open_end || position == stream.len();
                assert_eq!(
                    tracker.can_inject(),
                    boundary_after_open,
                    "chunk {chunk}, position {position}"
                );
            }
            assert!(position > sasl_end);
        }
    }

    #[test]
    fn the_tracker_never_injects_during_sasl() {
        let mut tracker = FrameTracker::default();
        tracker.observe(SASL_HEADER);
        tracker.observe(&frame(3));
        assert!(!tracker.can_inject());
        tracker.observe(AMQP_HEADER);
        assert!(!tracker.can_inject(), "before open");
        tracker.observe(&frame(0));
        assert!(tracker.can_inject());
    }

    #[tokio::test(start_paused = true)]
    async fn empty_frames_are_written_when_idle_and_only_then() {
        let (client, mut server) = tokio::io::duplex(4096);
        let interval = Duration::from_secs(10);
        let mut stream = KeepAlive::new(client, interval);
        stream.write_all(AMQP_HEADER).await.unwrap();
        let open = frame(4);
        stream.write_all(&open).await.unwrap();

        // Something polls the read side, as fe2o3's engine does.
        let (mut read_half, mut write_half) = tokio::io::split(stream);
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 16];
            let _ = read_half.read(&mut buf).await;
        });

        let mut received = vec![0u8; AMQP_HEADER.len() + open.len()];
        server.read_exact(&mut received).await.unwrap();

        // Busy: a write every 6 s means no empty frame.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(6)).await;
            write_half.write_all(&frame(1)).await.unwrap();
            let mut got = vec![0u8; 9];
            server.read_exact(&mut got).await.unwrap();
            assert_eq!(got, frame(1));
        }

        // Idle: one empty frame per interval.
        let started = Instant::now();
        for _ in 0..3 {
            let mut got = [0u8; 8];
            server.read_exact(&mut got).await.unwrap();
            assert_eq!(got, EMPTY_FRAME);
        }
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_secs(25) && elapsed <= Duration::from_secs(31),
            "{elapsed:?}"
        );
        reader.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_injected_before_open() {
        let (client, mut server) = tokio::io::duplex(4096);
        let mut stream = KeepAlive::new(client, Duration::from_secs(1));
        stream.write_all(AMQP_HEADER).await.unwrap();
        let (mut read_half, _write_half) = tokio::io::split(stream);
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 16];
            let _ = read_half.read(&mut buf).await;
        });
        let mut header = [0u8; 8];
        server.read_exact(&mut header).await.unwrap();
        let mut more = [0u8; 1];
        let waited =
            tokio::time::timeout(Duration::from_secs(10), server.read_exact(&mut more)).await;
        assert!(waited.is_err(), "an empty frame was written before open");
        reader.abort();
    }
}
