//! Which devices and modules are connected over MQTT now (one connection each: a new one
//! closes the old), whether each listens for direct methods, and the subscriptions kept for
//! CleanSession 0 across reconnects.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::{Notify, mpsc, oneshot};

use super::topics::{Identity, Subscription};

/// Most sessions kept for CleanSession 0 (each a handful of bytes); beyond it the oldest
/// identities' are forgotten, as if they had connected with CleanSession 1.
const MAX_SAVED_SESSIONS: usize = 100_000;

/// A direct-method call for a connected device: the request, and where its answer goes.
#[derive(Debug)]
pub(crate) struct MethodCall {
    pub(crate) name: String,
    pub(crate) payload: Value,
    /// The device's status and payload.
    pub(crate) reply: oneshot::Sender<(i32, Value)>,
}

/// What the hub asks of a live connection.
#[derive(Debug)]
pub(crate) enum Command {
    /// Another connection of the same identity arrived: close.
    Replaced,
    /// Deliver a direct-method request.
    Method(MethodCall),
}

struct Live {
    connection: u64,
    tx: mpsc::Sender<Command>,
    /// The connection's subscriptions (which say whether it listens for methods), handed to
    /// the connection that replaces it with CleanSession 0.
    subscriptions: BTreeSet<Subscription>,
    wake: Arc<Wake>,
}

/// A connection attached: its number, what wakes it, and the subscriptions it carries on
/// (CleanSession 0).
pub(crate) struct Attached {
    pub(crate) connection: u64,
    pub(crate) wake: Arc<Wake>,
    pub(crate) restored: Option<BTreeSet<Subscription>>,
}

/// What wakes one connection: only the identities concerned are woken (a change to one
/// twin does not wake ten thousand idle devices). A `Notify` keeps one permit, so a wake-up
/// that comes while the connection is busy is not lost.
#[derive(Default)]
pub(crate) struct Wake {
    /// A cloud-to-device message may be deliverable.
    pub(crate) c2d: Notify,
    /// The device's registry entry changed (its twin, its status, its modules).
    pub(crate) identity: Notify,
}

/// Where a direct method for an identity goes.
pub(crate) enum MethodRoute {
    /// Not connected over MQTT: the control API's handlers answer, if any.
    NotOverMqtt,
    /// Connected over MQTT, but not subscribed to `$iothub/methods/POST/#`.
    NotListening,
    /// Connected and listening.
    Listening(mpsc::Sender<Command>),
}

/// The endpoint's sessions.
#[derive(Default)]
pub(crate) struct Registry {
    /// Ordered by device, then module: a device's connections (itself and its modules) are
    /// one range.
    live: Mutex<BTreeMap<Identity, Live>>,
    saved: Mutex<HashMap<Identity, BTreeSet<Subscription>>>,
    next: AtomicU64,
    open: AtomicUsize,
}

/// One open connection, counted while it lives.
pub(crate) struct Open<'a>(&'a Registry);

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Registry {
    fn live(&self) -> std::sync::MutexGuard<'_, BTreeMap<Identity, Live>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a connection as open until the guard drops.
    pub(crate) fn opened(&self) -> Open<'_> {
        self.open.fetch_add(1, Ordering::SeqCst);
        Open(self)
    }

    /// Connections open now, authenticated or not.
    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Makes `tx` the identity's connection, telling the one it replaces to close. With
    /// CleanSession 0 the session carries on: the replaced connection's subscriptions, else
    /// those kept since the last one ended; with CleanSession 1 both are forgotten.
    pub(crate) fn attach(
        &self,
        who: &Identity,
        tx: mpsc::Sender<Command>,
        clean_session: bool,
    ) -> Attached {
        let connection = self.next.fetch_add(1, Ordering::SeqCst);
        let wake = Arc::new(Wake::default());
        let old = self.live().insert(
            who.clone(),
            Live {
                connection,
                tx,
                subscriptions: BTreeSet::new(),
                wake: wake.clone(),
            },
        );
        let saved = self
            .saved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(who);
        let mut restored = None;
        if let Some(old) = old {
            let _ = old.tx.try_send(Command::Replaced);
            restored = Some(old.subscriptions);
        }
        Attached {
            connection,
            wake,
            restored: if clean_session {
                None
            } else {
                restored.or(saved)
            },
        }
    }

    /// Wakes the connections of a device and of its modules: its registry entry changed.
    pub(crate) fn device_changed(&self, device: &str) {
        let live = self.live();
        let start = Identity {
            device: device.to_owned(),
            module: None,
        };
        for (_, l) in live
            .range(start..)
            .take_while(|(who, _)| who.device == device)
        {
            l.wake.identity.notify_one();
        }
    }

    /// Wakes the connection of a device (or module) a message became deliverable for.
    pub(crate) fn c2d_arrived(&self, device: &str, module: Option<&str>) {
        let who = Identity {
            device: device.to_owned(),
            module: module.map(str::to_owned),
        };
        if let Some(l) = self.live().get(&who) {
            l.wake.c2d.notify_one();
        }
    }

    /// Wakes every connection for everything (a follower of the changes lagged behind).
    pub(crate) fn wake_all(&self) {
        for l in self.live().values() {
            l.wake.c2d.notify_one();
            l.wake.identity.notify_one();
        }
    }

    /// Forgets the identity's connection if it is still `connection`; true if it was (the
    /// identity is now disconnected), false if another connection replaced it.
    pub(crate) fn detach(&self, who: &Identity, connection: u64) -> bool {
        let mut live = self.live();
        if live.get(who).is_some_and(|l| l.connection == connection) {
            live.remove(who);
            true
        } else {
            false
        }
    }

    /// Records the connection's subscriptions (whether it listens for direct methods among
    /// them).
    pub(crate) fn set_subscriptions(
        &self,
        who: &Identity,
        connection: u64,
        subscriptions: &BTreeSet<Subscription>,
    ) {
        if let Some(l) = self.live().get_mut(who)
            && l.connection == connection
        {
            l.subscriptions.clone_from(subscriptions);
        }
    }

    /// Where a direct method for the device (or module) goes.
    pub(crate) fn method_route(&self, device: &str, module: Option<&str>) -> MethodRoute {
        let who = Identity {
            device: device.to_owned(),
            module: module.map(str::to_owned),
        };
        match self.live().get(&who) {
            None => MethodRoute::NotOverMqtt,
            Some(l) if l.subscriptions.contains(&Subscription::Methods) => {
                MethodRoute::Listening(l.tx.clone())
            }
            Some(_) => MethodRoute::NotListening,
        }
    }

    /// Keeps the identity's subscriptions for its next CleanSession 0 connection.
    pub(crate) fn save(&self, who: &Identity, subscriptions: BTreeSet<Subscription>) {
        let mut saved = self.saved.lock().unwrap_or_else(|e| e.into_inner());
        if saved.len() >= MAX_SAVED_SESSIONS && !saved.contains_key(who) {
            // No order is kept: drop any one. Bounded memory matters more than which.
            if let Some(k) = saved.keys().next().cloned() {
                saved.remove(&k);
            }
        }
        saved.insert(who.clone(), subscriptions);
    }

    /// Forgets the kept session of the identity (CleanSession 1, or the device deleted).
    pub(crate) fn forget_saved(&self, who: &Identity) {
        self.saved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(who);
    }
}
