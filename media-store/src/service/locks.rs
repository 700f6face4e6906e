//! Per-blob locks: storing and committing a blob, and checking and
//! deleting it (expiry, orphan collection), exclude each other for the same
//! blob path only. A put to object storage can take seconds; uploads of
//! other objects do not wait for it.

use std::collections::HashSet;
use std::sync::Mutex;
use tokio::sync::Notify;

/// A set of locked blob paths.
#[derive(Debug, Default)]
pub(crate) struct PathLocks {
    held: Mutex<HashSet<String>>,
    released: Notify,
}

/// Holds the lock on one path until dropped.
#[derive(Debug)]
pub(crate) struct PathGuard<'a> {
    locks: &'a PathLocks,
    path: String,
}

impl PathLocks {
    /// Waits until `path` is free and takes it.
    pub(crate) async fn lock(&self, path: String) -> PathGuard<'_> {
        loop {
            // Registered before the check, so a release in between wakes us.
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if self
                .held
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(path.clone())
            {
                return PathGuard { locks: self, path };
            }
            released.await;
        }
    }
}

impl Drop for PathGuard<'_> {
    fn drop(&mut self) {
        self.locks
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.path);
        self.locks.released.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn one_holder_per_path_others_proceed() {
        let locks = Arc::new(PathLocks::default());
        let a = locks.lock("s/ab/x".into()).await;
        // Another path is not blocked.
        let _b = locks.lock("s/ab/y".into()).await;
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let l2 = locks.clone();
        let waiter = tokio::spawn(async move {
            let _g = l2.lock("s/ab/x".into()).await;
            tx.send(()).await.unwrap();
        });
        tokio::task::yield_now().await;
        assert!(rx.try_recv().is_err(), "the same path waits");
        drop(a);
        rx.recv().await.expect("taken once released");
        waiter.await.unwrap();
    }
}
