//! The HTTPS listener's connections: how many may be open at once, and how long one may be
//! slow or idle.
//!
//! - **The cap.** At most `max_connections` are open. At the cap the connection idle the
//!   longest (no request being handled: waiting for a request, or still sending one) is
//!   closed to admit the next, as nginx does with idle keep-alive connections when it runs out
//!   of them; so a crowd of slow or idle clients never locks out a new one (the health check
//!   included). A connection idle for less than [`EVICTION_GRACE`] is never chosen: a new
//!   client has that long to send its first request however fast others connect. When no
//!   connection can be closed, the next client waits to be accepted.
//! - **A request head** not received in full within `header_read_timeout` of its first byte
//!   (or, for a connection's first request, of the connection's opening, as nginx's
//!   `client_header_timeout`) closes the connection (HTTP/1; HTTP/2 frames its heads).
//! - **Idleness:** no request in progress for `idle_timeout` closes the connection, however
//!   the client keeps it alive.
//!
//! hyper's own header timeout cannot serve: it also runs while a keep-alive connection waits
//! for its next request, which would make it the idle timeout too. So the bytes read are
//! watched here ([`Watched`]), and each connection has a [`watchdog`]. The body deadline is
//! the request pipeline's (`server.rs`), which reads bodies.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// How long a connection is safe from being closed to make room, once accepted or since its
/// last request: time for a new client's TLS handshake and first request, whatever the rate
/// of others connecting (without it, a crowd reconnecting as fast as it is closed would close
/// every newcomer before its first request). Shorter when the deadlines are shorter.
const EVICTION_GRACE: Duration = Duration::from_secs(1);
/// How often the accept loop looks again for a connection to close when none could be.
const ROOM_RETRY: Duration = Duration::from_millis(100);

/// How slow or idle an HTTP(S) connection may be, and how many may be open; zero durations
/// never expire.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HttpLimits {
    pub(crate) header_read_timeout: Duration,
    pub(crate) body_read_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_connections: usize,
}

/// The open connections of one listener.
pub(crate) struct Connections {
    limits: HttpLimits,
    /// The clock the activities count from.
    origin: Instant,
    inner: Mutex<Registry>,
    /// Notified when a connection goes.
    room: Notify,
}

#[derive(Default)]
struct Registry {
    next_id: u64,
    open: HashMap<u64, Arc<Activity>>,
    /// Open and not told to close.
    live: usize,
}

impl Connections {
    pub(crate) fn new(limits: HttpLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            origin: Instant::now(),
            inner: Mutex::default(),
            room: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether another connection may be accepted now: below the cap, or at it once the
    /// connection idle the longest has been told to close. False when every connection has a
    /// request being handled; wait for [`Connections::freed`] then.
    pub(crate) fn make_room(&self) -> bool {
        let mut registry = self.lock();
        if registry.live < self.limits.max_connections {
            return true;
        }
        let grace = [
            EVICTION_GRACE,
            self.limits.header_read_timeout,
            self.limits.idle_timeout,
        ]
        .into_iter()
        .filter(|d| !d.is_zero())
        .min()
        .unwrap_or(EVICTION_GRACE);
        let grace = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
        let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        let idlest = registry
            .open
            .values()
            .filter(|a| {
                !a.evicted.load(Ordering::SeqCst)
                    && a.handling.load(Ordering::SeqCst) == 0
                    && a.last_active.load(Ordering::SeqCst).saturating_add(grace) <= now
            })
            .min_by_key(|a| a.last_active.load(Ordering::SeqCst))
            .cloned();
        match idlest {
            Some(activity) => {
                activity.evict();
                registry.live -= 1;
                true
            }
            None => false,
        }
    }

    /// Completes when a connection has gone since the last call, or when one may have become
    /// closable: time to call [`Connections::make_room`] again.
    pub(crate) async fn freed(&self) {
        tokio::select! {
            () = self.room.notified() => {}
            () = tokio::time::sleep(ROOM_RETRY) => {}
        }
    }

    /// Counts a new connection until the returned slot is dropped.
    pub(crate) fn open(self: &Arc<Self>) -> Slot {
        let activity = Arc::new(Activity::new(self.origin));
        let mut registry = self.lock();
        let id = registry.next_id;
        registry.next_id += 1;
        registry.open.insert(id, activity.clone());
        registry.live += 1;
        drop(registry);
        Slot {
            connections: self.clone(),
            id,
            activity,
        }
    }

    /// Connections open now (those told to close and not gone yet included).
    #[cfg(test)]
    fn open_now(&self) -> usize {
        self.lock().open.len()
    }
}

/// One open connection, counted while it lives.
pub(crate) struct Slot {
    connections: Arc<Connections>,
    id: u64,
    activity: Arc<Activity>,
}

impl Slot {
    pub(crate) fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }

    pub(crate) fn limits(&self) -> &HttpLimits {
        &self.connections.limits
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut registry = self.connections.lock();
        if registry.open.remove(&self.id).is_some() && !self.activity.evicted.load(Ordering::SeqCst)
        {
            registry.live -= 1;
        }
        drop(registry);
        self.connections.room.notify_one();
    }
}

/// What one connection is doing, as its watchdog and the cap see it. Times are milliseconds
/// since the listener's origin.
pub(crate) struct Activity {
    origin: Instant,
    /// Requests received and not yet answered in full.
    in_flight: AtomicUsize,
    /// Of those, the ones being handled (their body read): such a connection is not idle.
    handling: AtomicUsize,
    /// When a request last began or ended, or the connection opened.
    last_active: AtomicU64,
    /// One more than when the first byte of a request head not yet received in full arrived;
    /// 0 when there is none.
    head_since: AtomicU64,
    /// Whether the first bytes read were HTTP/2's preface (its heads are frames).
    http2: AtomicBool,
    first_read: AtomicBool,
    evicted: AtomicBool,
    evict: Notify,
}

impl Activity {
    fn new(origin: Instant) -> Self {
        let activity = Self {
            origin,
            in_flight: AtomicUsize::new(0),
            handling: AtomicUsize::new(0),
            last_active: AtomicU64::new(0),
            // The first request's head is expected from the start.
            head_since: AtomicU64::new(0),
            http2: AtomicBool::new(false),
            first_read: AtomicBool::new(false),
            evicted: AtomicBool::new(false),
            evict: Notify::new(),
        };
        activity.touch();
        activity
            .head_since
            .store(activity.now().saturating_add(1), Ordering::SeqCst);
        activity
    }

    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn touch(&self) {
        self.last_active.store(self.now(), Ordering::SeqCst);
    }

    fn evict(&self) {
        self.evicted.store(true, Ordering::SeqCst);
        self.evict.notify_one();
    }

    /// A request was received (its head in full); counted until the guard is dropped with
    /// its answer.
    pub(crate) fn request(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.head_since.store(0, Ordering::SeqCst);
        self.touch();
        RequestGuard {
            activity: self.clone(),
            handling: AtomicBool::new(false),
        }
    }

    /// Bytes arrived from the client.
    fn read(&self, bytes: &[u8]) {
        if !self.first_read.swap(true, Ordering::SeqCst) && bytes.starts_with(b"PRI ") {
            self.http2.store(true, Ordering::SeqCst);
        }
        if !self.http2.load(Ordering::SeqCst) && self.in_flight.load(Ordering::SeqCst) == 0 {
            let _ = self.head_since.compare_exchange(
                0,
                self.now().saturating_add(1),
                Ordering::SeqCst,
                Ordering::SeqCst,
            );
        }
    }

    /// When the connection is due to close for being slow or idle, if it is.
    fn deadline(&self, limits: &HttpLimits) -> Option<u64> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let head = match self.head_since.load(Ordering::SeqCst) {
            0 => None,
            _ if limits.header_read_timeout.is_zero() || self.http2.load(Ordering::SeqCst) => None,
            since => Some((since - 1).saturating_add(ms(limits.header_read_timeout))),
        };
        let idle = (!limits.idle_timeout.is_zero()).then(|| {
            self.last_active
                .load(Ordering::SeqCst)
                .saturating_add(ms(limits.idle_timeout))
        });
        match (head, idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// A request in progress on its connection.
pub(crate) struct RequestGuard {
    activity: Arc<Activity>,
    handling: AtomicBool,
}

impl RequestGuard {
    /// The request's body is read and it is being handled: its connection is busy, not idle,
    /// until the answer is written.
    pub(crate) fn handling(&self) {
        if !self.handling.swap(true, Ordering::SeqCst) {
            self.activity.handling.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.activity.touch();
        if self.handling.load(Ordering::SeqCst) {
            self.activity.handling.fetch_sub(1, Ordering::SeqCst);
        }
        self.activity.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Completes when the connection must close: told to by the cap, or slow or idle too long.
pub(crate) async fn watchdog(activity: &Activity, limits: &HttpLimits) {
    let shortest = [limits.header_read_timeout, limits.idle_timeout]
        .into_iter()
        .filter(|d| !d.is_zero())
        .min()
        .unwrap_or(Duration::from_secs(5));
    let tick = (shortest / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
    loop {
        if activity.evicted.load(Ordering::SeqCst) {
            return;
        }
        let mut wait = tick;
        if let Some(deadline) = activity.deadline(limits) {
            let now = activity.now();
            if now >= deadline {
                return;
            }
            wait = wait.min(Duration::from_millis(deadline - now));
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = activity.evict.notified() => return,
        }
    }
}

/// A connection's byte stream, with what is read reported to its [`Activity`].
pub(crate) struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Watched<S> {
    pub(crate) fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let read = &buf.filled()[before..];
        if !read.is_empty() {
            this.activity.read(read);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_connections: usize) -> HttpLimits {
        HttpLimits {
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(240),
            max_connections,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_cap_the_idlest_connection_goes_and_busy_ones_stay() {
        let connections = Connections::new(limits(2));
        assert!(connections.make_room());
        let first = connections.open();
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(connections.make_room());
        let second = connections.open();
        // The first is the idlest, but busy: the second goes.
        let busy = first.activity().request();
        busy.handling();
        // The second is too new to close.
        assert!(!connections.make_room());
        tokio::time::advance(EVICTION_GRACE).await;
        assert!(connections.make_room());
        assert!(second.activity().evicted.load(Ordering::SeqCst));
        assert!(!first.activity().evicted.load(Ordering::SeqCst));
        // A request that ended leaves its connection idle again.
        let third = connections.open();
        third.activity().request().handling();
        tokio::time::advance(EVICTION_GRACE).await;
        assert!(connections.make_room());
        assert!(third.activity().evicted.load(Ordering::SeqCst));
        let fourth = connections.open();
        let also_busy = fourth.activity().request();
        also_busy.handling();
        assert!(!connections.make_room(), "nothing idle to close");
        drop(second);
        drop(third);
        assert_eq!(connections.open_now(), 2);
        drop(also_busy);
        drop(fourth);
        // Below the cap: no waiting for anyone's grace.
        assert!(connections.make_room());
        drop(busy);
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_never_finished_and_idleness_close_a_connection() {
        let limits = limits(10);
        let connections = Connections::new(limits);
        let slot = connections.open();
        let activity = slot.activity().clone();
        // A new connection owes its first request head within the header timeout.
        assert_eq!(activity.deadline(&limits), Some(30_000));
        tokio::time::advance(Duration::from_secs(10)).await;
        activity.read(b"GET / HTTP/1.1\r\n");
        assert_eq!(activity.deadline(&limits), Some(30_000));
        let first = activity.request();
        drop(first);
        // Idle after an answer: the idle limit.
        assert_eq!(activity.deadline(&limits), Some(250_000));
        tokio::time::advance(Duration::from_secs(10)).await;
        // A head begins: 30 s from its first byte.
        activity.read(b"GET / HTTP/1.1\r\n");
        assert_eq!(activity.deadline(&limits), Some(50_000));
        // It is received: a request in progress has no deadline here.
        let request = activity.request();
        assert_eq!(activity.deadline(&limits), None);
        activity.read(b"body bytes");
        tokio::time::advance(Duration::from_secs(500)).await;
        assert_eq!(activity.deadline(&limits), None);
        drop(request);
        assert_eq!(activity.deadline(&limits), Some(760_000));
        let watching = watchdog(&activity, &limits);
        tokio::pin!(watching);
        assert!(
            tokio::time::timeout(Duration::from_secs(239), &mut watching)
                .await
                .is_err()
        );
        tokio::time::timeout(Duration::from_secs(2), watching)
            .await
            .expect("closed once idle for the limit");
    }

    #[tokio::test(start_paused = true)]
    async fn http2_frames_are_not_a_request_head() {
        let limits = limits(10);
        let connections = Connections::new(limits);
        let slot = connections.open();
        let activity = slot.activity();
        activity.read(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        activity.read(b"a settings frame");
        assert_eq!(activity.deadline(&limits), Some(240_000));
    }
}
