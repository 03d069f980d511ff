//! The one thread that starts every job's process.
//!
//! A job's process asks the kernel for SIGKILL when its parent dies (`PR_SET_PDEATHSIG`), so that it never
//! outlives its worker. The kernel's "parent" there is the *thread* that forked the process, not the
//! process: forked from one of tokio's threads, the job would be killed when tokio retires that thread
//! (an idle blocking thread goes after ten seconds, and a runtime worker that entered `block_in_place`
//! becomes one). So processes are forked here, on a thread started once that lives as long as this
//! process and does nothing else; they still die with the process, whichever way it ends.

use std::sync::OnceLock;
use std::sync::mpsc;

use tokio::process::{Child, Command};
use tokio::sync::oneshot;

/// A command to start, the runtime its child is reaped by, and where the result goes.
type Request = (
    Command,
    tokio::runtime::Handle,
    oneshot::Sender<std::io::Result<Child>>,
);

static SPAWNER: OnceLock<mpsc::Sender<Request>> = OnceLock::new();

fn spawner() -> &'static mpsc::Sender<Request> {
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("kiln-job-spawner".into())
            .spawn(move || {
                // The senders live in a static, so this loop never ends before the process does.
                for (mut command, runtime, reply) in rx {
                    // tokio's child handles need the runtime that will reap the child.
                    let _entered = runtime.enter();
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("starting the job spawner thread");
        tx
    })
}

/// Starts `command` from the spawner thread and returns its child, reaped by the current runtime.
pub async fn spawn(command: Command) -> std::io::Result<Child> {
    let (reply, answer) = oneshot::channel();
    spawner()
        .send((command, tokio::runtime::Handle::current(), reply))
        .map_err(|_| std::io::Error::other("the job spawner thread is gone"))?;
    answer
        .await
        .map_err(|_| std::io::Error::other("the job spawner thread is gone"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parent-death signal of a process (`/proc/<pid>/status` has no field for it, so the child
    /// reports its own with `prctl`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_child_started_from_a_thread_that_then_exits_lives_on() {
        let (tx, rx) = oneshot::channel();
        // A thread that asks for a child and exits at once, as a retired runtime thread would.
        let handle = tokio::runtime::Handle::current();
        std::thread::spawn(move || {
            let child = handle.block_on(async {
                let mut command = Command::new("sleep");
                command.arg("30").kill_on_drop(true);
                // SAFETY: prctl is async-signal-safe.
                unsafe {
                    command.pre_exec(|| {
                        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
                spawn(command).await.unwrap()
            });
            tx.send(child).unwrap();
        })
        .join()
        .unwrap();
        let mut child = rx.await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(
            child.try_wait().unwrap().is_none(),
            "the child died with the thread that asked for it"
        );
        child.kill().await.unwrap();
    }
}
