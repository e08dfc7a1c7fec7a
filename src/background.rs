//! One owner for the sidecar's background work: key-ring and file reloads, issuer key refreshes,
//! the decision-log writer, LDAP connection drivers. Every task is spawned through
//! [`Background`], sees the stop signal, and is awaited at shutdown within the grace; nothing is
//! aborted, so the decision log's writer drains its queue and flushes before the process exits.
//! The listeners are owned the same way, by a `Background` of their own: they end by themselves
//! once told to stop, and its stop signal cuts whatever they still hold when the grace is over.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A set of tasks with one stop signal.
#[derive(Clone, Default)]
pub(crate) struct Background {
    stop: CancellationToken,
    tracker: TaskTracker,
}

impl Background {
    /// Runs `work` until it ends or the stop signal, whichever comes first. For loops that
    /// hold nothing between their awaits (reloads, refreshes, connection drivers).
    pub(crate) fn spawn_until_stopped(&self, work: impl Future<Output = ()> + Send + 'static) {
        let stop = self.stop.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = work => {}
            }
        });
    }

    /// Runs `work` to its end; it watches [`Background::stop_signal`] itself to finish what it
    /// holds (the decision log's writer empties its queue first).
    pub(crate) fn spawn_to_the_end(&self, work: impl Future<Output = ()> + Send + 'static) {
        self.tracker.spawn(work);
    }

    /// The signal tasks spawned with [`Background::spawn_to_the_end`] watch.
    pub(crate) fn stop_signal(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// How many tasks are still running.
    pub(crate) fn running(&self) -> usize {
        self.tracker.len()
    }

    /// Waits until every task has ended by itself (listeners: once told to stop).
    pub(crate) async fn finished(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// Gives every task the stop signal and waits for them, at most `grace`. True when all
    /// ended in time; those left are dropped with the runtime.
    pub(crate) async fn stop(&self, grace: Duration) -> bool {
        self.stop.cancel();
        self.tracker.close();
        tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
    }
}
