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
//! Here a thread takes one load after another while a catalog loads (and
//! any reload beside it: they share the threads), and ends once the last
//! of them is loaded and its job is done: its pages are reused from one
//! load to the next, and given back with the thread.
//!
//! A job goes to a free thread, else to a new one: every thread not
//! running a job (one just spawned included) is counted free, and a thread
//! is spawned whenever the queued jobs would outnumber the free threads, so
//! no job waits for another. The threads end when the last holder of the
//! [`Lanes`] drops it, or after [`LINGER`] without work. Owns: those
//! threads and their queue. Must not touch: what the jobs do.

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
    /// [`LINGER`], but for tests.
    linger: Duration,
}

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    /// Threads not running a job and not ending: just spawned, or done
    /// with their last job (which counts its thread here before its caller
    /// hears of the result, so the caller's next job finds it free rather
    /// than starting another).
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
        Lanes::with_linger(LINGER)
    }

    fn with_linger(linger: Duration) -> Lanes {
        Lanes {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                work: Condvar::new(),
                linger,
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
        {
            let mut s = self.shared.lock();
            s.jobs.push_back(job);
            // Every queued job needs a free thread of its own.
            if s.jobs.len() > s.free {
                // Spawned under the lock, so that a failure takes back
                // this job (the last queued) and nothing else.
                let shared = self.shared.clone();
                match std::thread::Builder::new()
                    .name("toolhost-load".into())
                    .spawn(move || work(&shared))
                {
                    Ok(_) => s.free += 1,
                    Err(e) => {
                        s.jobs.pop_back();
                        return Err(format!("no thread to run it on: {e}"));
                    }
                }
            } else {
                self.shared.work.notify_one();
            }
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
/// (or none came for the linger). It starts counted free (by its spawner).
fn work(shared: &Shared) {
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
                    .wait_timeout(s, shared.linger)
                    .unwrap_or_else(PoisonError::into_inner);
                s = guard;
                if waited.timed_out() && s.jobs.is_empty() {
                    break None;
                }
            };
            // Busy with the job (which counts it free again at its end),
            // or ending.
            s.free -= 1;
            job
        };
        let Some(job) = job else { return };
        // A job catches its own panics and counts its thread free before
        // sending; a panic in what follows (dropping a result nobody waits
        // for) must not end a thread counted free, so it goes on.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
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

    /// Lanes whose threads end only when the lanes are dropped.
    fn lanes() -> Lanes {
        Lanes::with_linger(Duration::from_secs(3600))
    }

    /// Whether every thread of the lanes `shared` belonged to has ended
    /// within 5 s.
    async fn threads_end(shared: Arc<Shared>) -> bool {
        for _ in 0..500 {
            if Arc::strong_count(&shared) == 1 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    #[tokio::test]
    async fn jobs_in_turn_share_one_thread_that_ends_with_the_lanes() {
        let lanes = lanes();
        let (name, first) = lanes.run(whoami).await.unwrap();
        assert_eq!(name.as_deref(), Some("toolhost-load"));
        assert_ne!(first, std::thread::current().id());
        for i in 0..100 {
            let (_, next) = lanes.run(whoami).await.unwrap();
            assert_eq!(next, first, "job {i} started a thread of its own");
        }
        let shared = lanes.shared.clone();
        drop(lanes);
        assert!(threads_end(shared).await, "the thread outlived its lanes");
    }

    #[tokio::test]
    async fn jobs_at_once_each_get_a_thread() {
        // Two jobs that each wait for the other to have started: with one
        // thread for both they would never finish. First with no thread,
        // then with exactly one free thread (from a job of its own).
        for round in 0..2 {
            let lanes = lanes();
            if round == 1 {
                lanes.run(|| ()).await.unwrap();
            }
            let barrier = Arc::new(std::sync::Barrier::new(2));
            let (a, b) = (barrier.clone(), barrier);
            let both =
                async { tokio::join!(lanes.run(move || a.wait()), lanes.run(move || b.wait())) };
            let (a, b) = tokio::time::timeout(Duration::from_secs(30), both)
                .await
                .unwrap_or_else(|_| panic!("round {round}: a job waited for the other"));
            a.unwrap();
            b.unwrap();
            let shared = lanes.shared.clone();
            drop(lanes);
            assert!(threads_end(shared).await, "a thread outlived its lanes");
        }
    }

    #[tokio::test]
    async fn a_panic_is_an_error_and_its_thread_goes_on() {
        let lanes = lanes();
        let seen = Arc::new(Mutex::new(Vec::new()));
        // Records the thread a job runs on.
        let note = || {
            let seen = seen.clone();
            move || seen.lock().unwrap().push(std::thread::current().id())
        };
        // A panic's message as a `&str` and as a `String`.
        let (here, n) = (note(), 7);
        let e = lanes.run(move || -> u32 {
            here();
            panic!("the artifact is truncated")
        });
        assert_eq!(
            e.await.unwrap_err(),
            "it panicked: the artifact is truncated"
        );
        let here = note();
        let e = lanes.run(move || -> u32 {
            here();
            panic!("{n} bytes short")
        });
        assert_eq!(e.await.unwrap_err(), "it panicked: 7 bytes short");
        let (_, last) = lanes.run(whoami).await.unwrap();
        assert_eq!(
            *seen.lock().unwrap(),
            [last, last],
            "one thread ran all three"
        );
    }
}
