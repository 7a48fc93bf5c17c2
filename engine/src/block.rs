//! Waiting for the writer from the blocking API, on any thread.
//!
//! tokio's `blocking_send` and `blocking_recv` panic on a thread that drives a runtime (a
//! worker, or inside `block_on`), to keep a task from blocking the runtime it waits for. The
//! store's writer is an OS thread of its own and needs no runtime, so a blocking call waits
//! here instead: the calling thread parks until the channel wakes it, as any synchronous
//! I/O would block it. An async application should still use [`crate::AsyncStore`].

use std::cell::RefCell;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;

/// Wakes the waiting thread.
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

thread_local! {
    /// This thread's waker, made once.
    static WAKER: RefCell<Option<Waker>> = const { RefCell::new(None) };
}

fn thread_waker() -> Waker {
    WAKER.with(|w| {
        w.borrow_mut()
            .get_or_insert_with(|| Waker::from(Arc::new(Unpark(std::thread::current()))))
            .clone()
    })
}

/// Runs `f`, which blocks, on the calling thread. On a worker of a multi-thread tokio
/// runtime the worker's other tasks are first handed to another thread
/// (`tokio::task::block_in_place`), so that tasks this thread would otherwise hold up (async
/// appends waiting for room in the writer's queue, say) go on while it waits. A thread that
/// runs a current-thread runtime has no other thread to hand them to: it blocks them for the
/// call (see [`crate::Store`]).
pub(crate) fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Runs `fut` to completion on the calling thread (see [`blocking`]), parking it while `fut`
/// is pending.
///
/// `fut` runs outside tokio's cooperative budget: on a runtime's thread, a spent budget
/// would make every poll of a tokio channel return pending (to make the task yield), which
/// here would never end.
pub(crate) fn wait<F: Future>(fut: F) -> F::Output {
    blocking(|| park_until_ready(fut))
}

fn park_until_ready<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(tokio::task::unconstrained(fut));
    let waker = thread_waker();
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        // A wake-up that came before this park makes it return at once; a spurious one
        // just polls again.
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_a_value_sent_from_another_thread() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            tx.send(7u32)
        });
        assert_eq!(wait(rx), Ok(7));
        assert!(t.join().is_ok());
    }

    #[test]
    fn a_runtime_thread_with_a_spent_budget_still_completes() {
        // Inside a task, after many channel operations (which spend the task's budget), a
        // wait must still see the values: without `unconstrained` it would spin forever.
        let rt = tokio::runtime::Builder::new_current_thread().build();
        let Ok(rt) = rt else {
            panic!("runtime");
        };
        let got = rt.block_on(async {
            let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
            let mut sum = 0u64;
            for i in 0..1000u64 {
                wait(tx.send(i)).unwrap_or_default();
                sum += wait(rx.recv()).unwrap_or_default();
            }
            sum
        });
        assert_eq!(got, 999 * 1000 / 2);
    }
}
