//! One way every hot-reloaded input is kept fresh — the grants file, the rules, the side port's
//! and ext_authz's TLS files, the signing keys: poll what the inputs look like (a stat, see
//! [`crate::file_stamp`]), rebuild only when that changed (or when asked, for SIGHUP), put a good
//! rebuild in force, and on a bad one keep the last good version and remember why, for
//! `/readyz` and the log.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::Notify;

/// Why an input's last change was refused, kept until a change is accepted.
#[derive(Default)]
pub(crate) struct RefusedChange(ArcSwapOption<String>);

impl RefusedChange {
    /// The reason, while the last good version serves.
    pub(crate) fn reason(&self) -> Option<Arc<String>> {
        self.0.load_full()
    }
}

/// A value in force, swapped whole, and why its last change was refused, if it was.
pub(crate) struct LastGood<T> {
    current: ArcSwap<T>,
    refusal: RefusedChange,
}

impl<T> LastGood<T> {
    /// `first` in force, nothing refused.
    pub(crate) fn new(first: T) -> Self {
        Self {
            current: ArcSwap::from_pointee(first),
            refusal: RefusedChange::default(),
        }
    }

    /// The value in force, without a lock (the request path reads it).
    pub(crate) fn load(&self) -> arc_swap::Guard<Arc<T>> {
        self.current.load()
    }

    /// The value in force, to keep.
    pub(crate) fn load_full(&self) -> Arc<T> {
        self.current.load_full()
    }

    /// Puts `fresh` in force.
    pub(crate) fn store(&self, fresh: T) {
        self.current.store(Arc::new(fresh));
    }

    /// Why the last change was refused, while the last good value serves.
    pub(crate) fn refusal(&self) -> Option<Arc<String>> {
        self.refusal.reason()
    }

    /// Where the refusal is kept, for [`HotReload::refusal`].
    pub(crate) fn refusal_slot(&self) -> &RefusedChange {
        &self.refusal
    }
}

/// An input kept fresh by [`keep_fresh`].
pub(crate) trait HotReload: Send + Sync + 'static {
    /// The value rebuilt from the input.
    type Value: Send;
    /// What the input looks like without reading it (file stamps).
    type Stamp: PartialEq + Send;
    /// Why a rebuild failed.
    type Error: std::fmt::Display + Send;

    /// The input's stamp now; `None` when only a rebuild can tell (a secret's version), so
    /// every poll rebuilds.
    fn stamp(&self) -> Option<Self::Stamp>;

    /// Builds a fresh value from the input.
    fn rebuild(&self) -> impl Future<Output = Result<Self::Value, Self::Error>> + Send;

    /// Puts a fresh value in force and says so.
    fn put_in_force(&self, fresh: Self::Value);

    /// Says (and counts) that a change was refused; the last good value keeps serving.
    fn refused(&self, error: &Self::Error);

    /// Where the reason of the last refusal is kept.
    fn refusal(&self) -> &RefusedChange;
}

/// Rebuilds `input` now: a good value goes in force, a bad one is refused and remembered.
pub(crate) async fn reload_now<R: HotReload>(input: &R) {
    match input.rebuild().await {
        Ok(fresh) => {
            input.put_in_force(fresh);
            input.refusal().0.store(None);
        }
        Err(error) => {
            input.refused(&error);
            input.refusal().0.store(Some(Arc::new(error.to_string())));
        }
    }
}

/// Runs until stopped: every `interval` (or when `nudged`), rebuilds `input` if its stamp
/// changed since the last look.
pub(crate) async fn keep_fresh<R: HotReload>(
    input: Arc<R>,
    interval: Duration,
    nudged: Option<Arc<Notify>>,
) {
    let mut seen = input.stamp();
    loop {
        let forced = match &nudged {
            Some(nudge) => tokio::select! {
                () = tokio::time::sleep(interval) => false,
                () = nudge.notified() => true,
            },
            None => {
                tokio::time::sleep(interval).await;
                false
            }
        };
        let now = input.stamp();
        if forced || now.is_none() || now != seen {
            seen = now;
            reload_now(&*input).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// An input whose stamp and next rebuild the test sets.
    struct Dial {
        stamp: AtomicU32,
        next: AtomicU32,
        in_force: LastGood<u32>,
        rebuilds: AtomicU32,
    }

    impl HotReload for Dial {
        type Value = u32;
        type Stamp = u32;
        // A test input: its refusal is a fixed text, so a String says all there is.
        type Error = String;
        fn stamp(&self) -> Option<u32> {
            Some(self.stamp.load(Ordering::SeqCst))
        }
        async fn rebuild(&self) -> Result<u32, String> {
            self.rebuilds.fetch_add(1, Ordering::SeqCst);
            match self.next.load(Ordering::SeqCst) {
                0 => Err("zero is refused".to_owned()),
                n => Ok(n),
            }
        }
        fn put_in_force(&self, fresh: u32) {
            self.in_force.store(fresh);
        }
        fn refused(&self, _: &String) {}
        fn refusal(&self) -> &RefusedChange {
            self.in_force.refusal_slot()
        }
    }

    /// Waits (at most five seconds) until `done` holds.
    async fn eventually(done: impl Fn() -> bool) -> bool {
        for _ in 0..1000 {
            if done() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        false
    }

    #[tokio::test]
    async fn only_a_changed_stamp_rebuilds_and_a_bad_rebuild_keeps_the_last_good_value() {
        let dial = Arc::new(Dial {
            stamp: AtomicU32::new(1),
            next: AtomicU32::new(1),
            in_force: LastGood::new(1),
            rebuilds: AtomicU32::new(0),
        });
        let nudge = Arc::new(Notify::new());
        // A long interval: only the nudges below and the stamp changes between them count.
        let poll = Duration::from_millis(20);
        tokio::spawn(keep_fresh(dial.clone(), poll, Some(nudge.clone())));

        tokio::time::sleep(poll * 5).await;
        assert_eq!(dial.rebuilds.load(Ordering::SeqCst), 0, "nothing changed");

        dial.next.store(0, Ordering::SeqCst);
        dial.stamp.store(2, Ordering::SeqCst);
        assert!(eventually(|| dial.in_force.refusal().is_some()).await);
        assert_eq!(**dial.in_force.load(), 1, "the last good value serves");
        assert_eq!(
            dial.in_force.refusal().as_deref().map(String::as_str),
            Some("zero is refused")
        );

        dial.next.store(7, Ordering::SeqCst);
        dial.stamp.store(3, Ordering::SeqCst);
        assert!(eventually(|| **dial.in_force.load() == 7).await);
        assert!(
            dial.in_force.refusal().is_none(),
            "a good change clears the refusal"
        );

        let before = dial.rebuilds.load(Ordering::SeqCst);
        dial.next.store(9, Ordering::SeqCst);
        nudge.notify_one();
        assert!(
            eventually(|| **dial.in_force.load() == 9).await,
            "a nudge rebuilds"
        );
        assert_eq!(dial.rebuilds.load(Ordering::SeqCst), before + 1);
    }
}
