//! The threads that loads' blocking work (reading, hashing, deserializing
//! or compiling a component, recording its `describe` answer) runs on.
//!
//! Not the runtime's blocking pool: a pooled thread idles on for tokio's
//! keep-alive (10 s) after the load, and with it what its allocator keeps
//! for it (mimalloc, the binary's, keeps a thread's freed pages until that
//! thread allocates again or ends: 10 MiB of a twenty-component start,
//! BENCHMARKS.md). Not a thread per load either, as before: each new
//! thread started from fresh allocator pages (in `secure` mode, each page's
//! free list is laid out anew), and each ending one gave its pages back
//! with `madvise`, whose TLB shootdowns stalled the other core's load.
//! Here a thread takes one load after another while a catalog loads, and
//! ends once the catalog is loaded: its pages are reused from one load to
//! the next, and given back with the thread.
//!
//! A job goes to an idle thread, else to a new one, so jobs never wait for
//! each other (no job waits on another: a thread more is the worst case).
//! The threads end when the last holder of the [`Lanes`] drops it, or
//! after [`LINGER`] without work. Owns: those threads and their queue.
//! Must not touch: what the jobs do.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

/// How long a thread with nothing to do waits for the next job while its
/// [`Lanes`] are still held (the gap between two loads of one catalog is
/// microseconds; a `describe` between them, milliseconds).
const LINGER: Duration = Duration::from_secs(1);

type Job = Box<dyn FnOnce() + Send>;

/// Threads for loads' blocking work, shared by the loads of one catalog
/// (see the module's doc). Dropping the last holder ends the threads once
/// their jobs are done.
pub(crate) struct Lanes {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    work: Condvar,
}

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    /// Threads done with their last job and not yet ending: each takes the
    /// next queued job. A job counts its thread here before its caller
    /// hears of the result, so the caller's next job never finds its
    /// thread busy and starts another.
    free: usize,
    /// No holder is left: threads end once the queue is empty.
    closed: bool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Lanes {
    pub(crate) fn new() -> Lanes {
        Lanes {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                work: Condvar::new(),
            }),
        }
    }

    /// Run `f` on one of the threads. A panic in `f` is an error naming its
    /// message.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, String> {
        let (done, result) = tokio::sync::oneshot::channel();
        let shared = self.shared.clone();
        let job: Job = Box::new(move || {
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            shared.lock().free += 1;
            drop(done.send(ran.map_err(|p| {
                let message = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(no message)".into());
                format!("it panicked: {message}")
            })));
        });
        let spawn = {
            let mut s = self.shared.lock();
            s.jobs.push_back(job);
            // Every queued job needs a thread of its own to wait for.
            s.jobs.len() > s.free
        };
        if spawn {
            let shared = self.shared.clone();
            if let Err(e) = std::thread::Builder::new()
                .name("toolhost-load".into())
                .spawn(move || work(&shared))
            {
                // No thread: the job is still queued, and an idle thread
                // may yet take it; this call does not wait for that.
                return Err(format!("no thread to run it on: {e}"));
            }
        } else {
            self.shared.work.notify_one();
        }
        result
            .await
            .unwrap_or_else(|_| Err("its thread ended without an answer".into()))
    }
}

impl Drop for Lanes {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.work.notify_all();
    }
}

/// A thread's life: jobs until none is queued and the lanes are closed
/// (or none came for [`LINGER`]).
fn work(shared: &Shared) {
    // Counted in `free` from the end of its first job (the job counts it).
    let mut free = false;
    loop {
        let job = {
            let mut s = shared.lock();
            let job = loop {
                if let Some(job) = s.jobs.pop_front() {
                    break Some(job);
                }
                if s.closed {
                    break None;
                }
                let (guard, waited) = shared
                    .work
                    .wait_timeout(s, LINGER)
                    .unwrap_or_else(PoisonError::into_inner);
                s = guard;
                if waited.timed_out() && s.jobs.is_empty() {
                    break None;
                }
            };
            if free {
                s.free -= 1;
            }
            job
        };
        match job {
            Some(job) => {
                job();
                free = true;
            }
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The name of the thread a job ran on, and its id.
    fn whoami() -> (Option<String>, std::thread::ThreadId) {
        let t = std::thread::current();
        (t.name().map(str::to_string), t.id())
    }

    #[tokio::test]
    async fn jobs_in_turn_share_a_thread_that_ends_with_the_lanes() {
        let lanes = Lanes::new();
        let (name, first) = lanes.run(whoami).await.unwrap();
        assert_eq!(name.as_deref(), Some("toolhost-load"));
        assert_ne!(first, std::thread::current().id());
        let (_, second) = lanes.run(whoami).await.unwrap();
        assert_eq!(first, second, "the second job reused the idle thread");
        // Dropped: the thread ends (its job sees the lanes closed).
        let shared = lanes.shared.clone();
        drop(lanes);
        for _ in 0..500 {
            if Arc::strong_count(&shared) == 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the thread outlived its lanes");
    }

    #[tokio::test]
    async fn jobs_at_once_each_get_a_thread() {
        // Two jobs that each wait for the other to have started: with one
        // thread for both they would never finish.
        let lanes = Lanes::new();
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let (a, b) = (barrier.clone(), barrier);
        let both = async { tokio::join!(lanes.run(move || a.wait()), lanes.run(move || b.wait())) };
        let (a, b) = tokio::time::timeout(Duration::from_secs(30), both)
            .await
            .expect("each job got a thread of its own");
        a.unwrap();
        b.unwrap();
    }

    #[tokio::test]
    async fn a_panic_is_an_error_and_the_lanes_go_on() {
        let lanes = Lanes::new();
        let e = lanes
            .run(|| -> u32 { panic!("the artifact is truncated") })
            .await
            .unwrap_err();
        assert_eq!(e, "it panicked: the artifact is truncated");
        let n = 7;
        let e = lanes
            .run(move || -> u32 { panic!("{n} bytes short") })
            .await
            .unwrap_err();
        assert_eq!(e, "it panicked: 7 bytes short");
        assert_eq!(lanes.run(|| 42).await.unwrap(), 42);
    }
}
