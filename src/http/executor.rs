//! Where GraphQL documents run: threads of their own, one per core, each with a single-threaded tokio
//! runtime; requests are handed to them in turn.
//!
//! - Heavy documents (parsing, validation, execution and serialising are CPU work) keep these threads
//!   busy, not the runtime that accepts connections, answers `/healthz`, sends downloads and
//!   supervises jobs; and no document waits for a free thread of tokio's blocking pool, which other
//!   work can fill (tokio's `block_in_place`, used before, does).
//! - A request and the DataLoader batches it starts run on one thread, so a batch is sent only when
//!   the request waits for it: every key the request's fields ask for at that point is in one batch,
//!   whatever else the machine is doing.
//! - The threads and their runtimes live as long as the process: database connections opened on them
//!   stay usable by the rest of kiln.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::future::{AbortHandle, Abortable};
use tokio::sync::{mpsc, oneshot};

type Work = Pin<Box<dyn Future<Output = ()> + Send>>;

struct Executor {
    threads: Vec<mpsc::UnboundedSender<Work>>,
    next: AtomicUsize,
}

fn executor() -> &'static Executor {
    static EXECUTOR: OnceLock<Executor> = OnceLock::new();
    EXECUTOR.get_or_init(|| {
        let count = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
        let threads = (0..count)
            .map(|i| {
                let (tx, mut rx) = mpsc::unbounded_channel::<Work>();
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("starting a GraphQL runtime");
                std::thread::Builder::new()
                    .name(format!("kiln-graphql-{i}"))
                    .spawn(move || {
                        runtime.block_on(async move {
                            while let Some(work) = rx.recv().await {
                                tokio::spawn(work);
                            }
                        })
                    })
                    .expect("starting a GraphQL thread");
                tx
            })
            .collect();
        Executor {
            threads,
            next: AtomicUsize::new(0),
        }
    })
}

/// Runs `work` on the next GraphQL thread and returns its output; `work` is abandoned when the caller
/// stops waiting for it (the client went away). `None` when it was abandoned or panicked.
pub async fn run<T: Send + 'static>(work: impl Future<Output = T> + Send + 'static) -> Option<T> {
    let executor = executor();
    let (abort, registration) = AbortHandle::new_pair();
    let (tx, rx) = oneshot::channel();
    let work = Abortable::new(work, registration);
    let task: Work = Box::pin(async move {
        if let Ok(output) = work.await {
            let _ = tx.send(output);
        }
    });
    let thread = executor.next.fetch_add(1, Ordering::Relaxed) % executor.threads.len();
    executor.threads[thread].send(task).ok()?;
    struct AbortOnDrop(AbortHandle);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let _abort = AbortOnDrop(abort);
    rx.await.ok()
}
