//! Time as an input. Production reads the system clock; tests hold a manual clock and advance
//! it by hand, which wakes the sweeper at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use dispatch_domain::Millis;
use tokio::sync::Notify;

/// A clock shared by the engine and the in-memory store.
#[derive(Clone)]
pub struct Clock(Arc<Inner>);

struct Inner {
    /// `Some` for a manual clock: the current time in epoch milliseconds.
    manual: Option<AtomicI64>,
    /// Woken when a manual clock moves.
    moved: Notify,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self(Arc::new(Inner { manual: None, moved: Notify::new() }))
    }

    /// A clock that stands still at `start` until [`Clock::advance`] moves it.
    pub fn manual(start: Millis) -> Self {
        Self(Arc::new(Inner { manual: Some(AtomicI64::new(start)), moved: Notify::new() }))
    }

    /// Now, in epoch milliseconds.
    pub fn now(&self) -> Millis {
        match &self.0.manual {
            Some(t) => t.load(Ordering::SeqCst),
            #[allow(clippy::disallowed_methods)] // the one place that reads the system clock
            None => chrono::Utc::now().timestamp_millis(),
        }
    }

    /// Moves a manual clock forward by `ms` and wakes whoever waits on [`Clock::moved`].
    ///
    /// # Panics
    /// On the system clock, which cannot be moved.
    pub fn advance(&self, ms: u64) {
        let t = self.0.manual.as_ref().expect("only a manual clock can be advanced");
        t.fetch_add(ms as i64, Ordering::SeqCst);
        self.0.moved.notify_waiters();
    }

    /// Resolves when a manual clock moves; never for the system clock.
    pub async fn moved(&self) {
        if self.0.manual.is_some() {
            self.0.moved.notified().await;
        } else {
            std::future::pending::<()>().await;
        }
    }

    /// Whether this is a manual clock.
    pub fn is_manual(&self) -> bool {
        self.0.manual.is_some()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clock").field("manual", &self.is_manual()).field("now", &self.now()).finish()
    }
}
