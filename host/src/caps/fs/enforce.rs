//! The `fs` unit's run-time half: what wasmtime-wasi does not bound by
//! itself, enforced per call.
//!
//! - **Open descriptors**: a call holds at most [`FsCaps::max_open`]
//!   (default [`DEFAULT_MAX_OPEN`]) files and directories it opened and
//!   sockets of its outbound connections together ([`CallDescriptors`]),
//!   the calls of one scope at most its `pool-share` of what calls may
//!   hold ([`DescriptorShares`]), and all calls together at most three
//!   quarters of the process's descriptor limit (the host keeps at least
//!   512: [`kept_for_the_host`]), so no call, and no
//!   tenant, can starve the host's own sockets, cache and log, or the
//!   other tenants' calls, of descriptors (`EMFILE` for everyone else). A
//!   file counts while anything holds it: its descriptor, a stream over
//!   it, a write still running.
//! - **Special files**: FIFOs, sockets, devices and anything on a kernel
//!   interface file system (`/proc`, `/sys`, cgroups...) are never handed
//!   to a guest, and never opened blocking (a blocking open of a FIFO
//!   holds a host thread until a peer appears): `open-at` is toolhost's
//!   own, opens non-blocking and checks what it opened.
//! - **Quota**: what writes to a read-write grant with a quota allocate on
//!   disk is charged to that grant's usage, shared by all calls of the
//!   component and measured from the directory at load. Charged in blocks,
//!   not bytes, so sparse writes (one byte every 64 KiB) pay for the block
//!   each allocates: a positioned `write` is charged its bound before it
//!   runs and settled to the file's allocated blocks after, a stream the
//!   blocks it reaches. When a charge would pass the quota, the directory
//!   is measured again (crediting deletions) before the write is refused
//!   with `insufficient-space`.
//! - **Host memory**: a directory listing and every file stream (read or
//!   write: up to 64 KiB of it in flight) are charged to the call's memory
//!   limit while the guest holds them.
//! - **Host work**: a listing is read a batch at a time on the guest's
//!   thread, within its turn ([`Listing`]); a file stream's reads and
//!   writes run on blocking threads, at most [`STREAM_OPS`] of a call's,
//!   its scope's `pool-share` of [`ALL_STREAM_OPS`], and `ALL_STREAM_OPS`
//!   of all calls' at once ([`StreamOps`], [`FileInput`], [`FileOutput`]).
//!
//! How: the few `wasi:filesystem` functions that create descriptors,
//! listings or streams, or write, are shadowed in the linker, each checking
//! and then delegating to wasmtime-wasi's own implementation, except
//! `open-at` (see [`open_at`]), listings and file streams, which are
//! toolhost's own; each stream holds its charge and each write to a quota
//! is charged. Written here because wasmtime-wasi 48 offers no hook for
//! any of it.
//!
//! Must not touch: anything but descriptors and streams of granted
//! directories, and the count of a call's descriptors its connections
//! share (their sockets are `caps::net`'s).

use super::{FsCaps, FsMode, Prepared};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use wasmtime::component::{Linker, LinkerInstance, Resource};
use wasmtime_wasi::filesystem::WasiFilesystemCtxView;
use wasmtime_wasi::p2::bindings::filesystem::{preopens, types as t};
use wasmtime_wasi::p2::{
    DynInputStream, DynOutputStream, InputStream, OutputStream, Pollable, StreamError, StreamResult,
};

/// Descriptors one call may hold open when the host config names no limit
/// (`FsCaps::max_open`'s doc says the number too).
pub const DEFAULT_MAX_OPEN: usize = 256;

/// The descriptors all calls together may hold: a share of the process's
/// limit, the rest kept for the host.
struct ProcessBudget {
    /// The process's (raised) limit.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    total: usize,
    limit: usize,
    used: AtomicUsize,
}

/// The descriptors the host keeps for itself (the process's limit, raised
/// to its hard limit, less what calls may hold): network front ends size
/// their connection caps from it.
#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub(crate) fn host_descriptors() -> usize {
    let b = process_budget();
    b.total - b.limit
}

impl ProcessBudget {
    /// Take `n` descriptors of the share, if they fit.
    fn take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                (u + n <= self.limit).then_some(u + n)
            })
            .is_ok()
    }

    /// Give back `n` descriptors taken.
    fn give(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }

    /// Whether a quarter of the share is still free.
    fn quarter_free(&self) -> bool {
        self.used.load(Ordering::Acquire).saturating_mul(4) <= self.limit.saturating_mul(3)
    }
}

/// Whether a quarter of the process's descriptor share for tools is still
/// free: work that holds descriptors ahead of calls (a prepared sandbox's
/// directories) is done only then, so it never takes the last quarter from
/// the calls that need it (`sandbox::warm`).
pub(crate) fn descriptors_quarter_free() -> bool {
    process_budget().quarter_free()
}

/// The process's descriptor share for tools has no room for a sandbox's
/// granted directories: room other calls hold now, not the tool's fault.
#[derive(Debug, thiserror::Error)]
#[error(
    "all calls together hold {limit} open files, the host's share for tools: no room for this tool's {wanted} granted directories; retry when calls have ended"
)]
pub(crate) struct DescriptorsExhausted {
    pub(crate) limit: usize,
    pub(crate) wanted: usize,
}

/// A scope's share of the descriptors calls may hold (the files they
/// open, their connections' sockets), and of the file-stream operations
/// they run: its `pool-share` of the process's. Found by review: one
/// tenant's calls holding sockets took every descriptor kept for tools,
/// and another tenant's tools could open no file.
pub(crate) struct DescriptorShare {
    limit: AtomicUsize,
    used: AtomicUsize,
    /// The scope's places among [`ALL_STREAM_OPS`]: its `pool-share` of
    /// them, at least one call's [`STREAM_OPS`]. One tenant's calls could
    /// hold all 256 on slow storage, and every other tenant's file streams
    /// waited (a residual of the thirteenth session's review). Resized in
    /// place at a reload (`resize_permits`), with its total beside it.
    ops: Arc<tokio::sync::Semaphore>,
    ops_total: AtomicUsize,
}

impl DescriptorShare {
    fn take(&self) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                (u < self.limit.load(Ordering::Acquire)).then_some(u + 1)
            })
            .is_ok()
    }

    fn give(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

/// Each scope's [`DescriptorShare`], kept for as long as anything holds it:
/// a reload, or a component of the scope with a smaller `pool-share`,
/// resizes it (what is held past a smaller limit stays held; no more is
/// taken until it is back under), rather than handing the scope a fresh
/// one beside what its running calls hold.
#[derive(Default)]
pub(crate) struct DescriptorShares(
    Mutex<HashMap<crate::catalog::Scope, std::sync::Weak<DescriptorShare>>>,
);

impl DescriptorShares {
    /// `scope`'s share, sized to `share` of what calls may hold from now on.
    pub(crate) fn of(&self, scope: &crate::catalog::Scope, share: f64) -> Arc<DescriptorShare> {
        let limit = ((process_budget().limit as f64 * share).floor() as usize).max(1);
        let ops = ((ALL_STREAM_OPS as f64 * share).floor() as usize).max(STREAM_OPS);
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(held) = all.get(scope).and_then(std::sync::Weak::upgrade) {
            held.limit.store(limit, Ordering::Release);
            // Under the map's lock: one resize at a time.
            let total = held.ops_total.load(Ordering::Acquire);
            let total = crate::caps::limits::resize_permits(&held.ops, total, ops);
            held.ops_total.store(total, Ordering::Release);
            return held;
        }
        all.retain(|_, s| s.strong_count() > 0);
        let fresh = Arc::new(DescriptorShare {
            limit: AtomicUsize::new(limit),
            used: AtomicUsize::new(0),
            ops: Arc::new(tokio::sync::Semaphore::new(ops)),
            ops_total: AtomicUsize::new(ops),
        });
        all.insert(scope.clone(), Arc::downgrade(&fresh));
        fresh
    }
}

/// What one call holds open, shared by its [`FsCall`] and its outbound
/// connections (`caps::net::Gate`): files and sockets together within
/// its `max-open` (before, sockets counted against nothing but the call's
/// memory, so one call held 400 with `max-open = 4`: found by review), and
/// within its scope's share once the call joins it.
pub(crate) struct CallDescriptors {
    max_open: usize,
    /// Files and directories the call opened, held weakly: one counts as
    /// open while anything keeps it (its descriptor, a stream over it, a
    /// write still running), not only while its descriptor lives. Shared
    /// so that a connection counts the files open now, not as of the
    /// call's last open (the fix review: closed files kept refusing
    /// connections).
    open: Mutex<Vec<std::sync::Weak<std::fs::File>>>,
    /// A file reserved and being opened (0 or 1), and the call's
    /// connections' sockets.
    opening: AtomicUsize,
    sockets: AtomicUsize,
    scope: OnceLock<Arc<DescriptorShare>>,
    /// The sandbox is prepared ahead of its call (its start-up runs), until
    /// it is handed to its call: its file streams start no operation (see
    /// [`StreamOps`]).
    ahead: std::sync::atomic::AtomicBool,
}

impl CallDescriptors {
    fn new(max_open: usize) -> Arc<CallDescriptors> {
        Arc::new(CallDescriptors {
            max_open,
            open: Mutex::default(),
            opening: AtomicUsize::new(0),
            sockets: AtomicUsize::new(0),
            scope: OnceLock::new(),
            ahead: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Files and directories open now (forgetting those nothing holds).
    fn files(&self) -> usize {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|f| f.strong_count() > 0);
        open.len()
    }

    /// Charge what the call opens from now on to `share` too.
    pub(crate) fn join_scope(&self, share: &Arc<DescriptorShare>) {
        let _ = self.scope.set(share.clone());
    }

    /// One more descriptor for a call that holds `open` files and
    /// sockets: within its `max-open`, its scope's share (if it joined one)
    /// and the process's share for tools, taken from both shares. The
    /// scope's share it was taken from (to give back), or which bound
    /// refused it. Files and sockets both come through here.
    fn take(&self, open: usize) -> Result<Option<Arc<DescriptorShare>>, DescriptorRefusal> {
        if open >= self.max_open {
            return Err(DescriptorRefusal::Call(self.max_open));
        }
        let scope = match self.scope.get() {
            None => None,
            Some(s) if s.take() => Some(s.clone()),
            Some(s) => return Err(DescriptorRefusal::Scope(s.limit.load(Ordering::Acquire))),
        };
        if !process_budget().take(1) {
            if let Some(s) = scope {
                s.give(1);
            }
            return Err(DescriptorRefusal::Process(process_budget().limit));
        }
        Ok(scope)
    }

    /// One descriptor besides the call's files (an outbound connection's
    /// socket, a directory listing's), held until dropped (see
    /// [`CallDescriptors::take`]).
    pub(crate) fn slot(self: &Arc<Self>) -> Result<Slot, DescriptorRefusal> {
        let open = self.files()
            + self.opening.load(Ordering::Acquire)
            + self.sockets.load(Ordering::Acquire);
        let scope = self.take(open)?;
        self.sockets.fetch_add(1, Ordering::AcqRel);
        Ok(Slot {
            call: self.clone(),
            scope,
        })
    }
}

/// Which bound refused a call another descriptor, and its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DescriptorRefusal {
    #[error(
        "this call holds {0} open files and connections, the most one call may (`[fs] max-open` in the host config)"
    )]
    Call(usize),
    #[error(
        "the calls of this tool's tenant hold {0} open files and connections, its share of the host's"
    )]
    Scope(usize),
    #[error("all calls together hold {0} open files and connections, the host's share for tools")]
    Process(usize),
}

/// One descriptor a call holds besides its files (an outbound
/// connection's socket, a directory listing's), counted while it is held
/// (see [`CallDescriptors::slot`]).
pub(crate) struct Slot {
    call: Arc<CallDescriptors>,
    scope: Option<Arc<DescriptorShare>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.call.sockets.fetch_sub(1, Ordering::AcqRel);
        if let Some(s) = &self.scope {
            s.give(1);
        }
        process_budget().give(1);
    }
}

/// What the host keeps of a process limit of `total` descriptors: a
/// quarter, but at least 512 (half, below 1,024). At a common container
/// limit of 1,024, a quarter left the HTTP front end one connection once
/// its own files were set aside (`mcp::accept::connection_cap`; found by
/// review), so one slow call held up every client.
fn kept_for_the_host(total: usize) -> usize {
    (total / 4).max((total / 2).min(512))
}

fn process_budget() -> &'static ProcessBudget {
    static B: OnceLock<ProcessBudget> = OnceLock::new();
    B.get_or_init(|| {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit with a valid pointer.
        let soft = unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
                // Raise the soft limit to the hard one, as servers do; keep
                // the old one if that is refused.
                let raised = libc::rlimit {
                    rlim_cur: r.rlim_max,
                    rlim_max: r.rlim_max,
                };
                if r.rlim_cur < r.rlim_max && libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    r.rlim_max
                } else {
                    r.rlim_cur
                }
            } else {
                1024
            }
        };
        let soft = usize::try_from(soft).unwrap_or(usize::MAX).min(1 << 24);
        ProcessBudget {
            total: soft,
            limit: soft - kept_for_the_host(soft),
            used: AtomicUsize::new(0),
        }
    })
}

/// The usage of one read-write grant with a quota, shared by every call.
#[derive(Debug)]
pub(crate) struct Quota {
    limit: u64,
    used: AtomicU64,
    /// Serializes re-measuring; when the directory was last measured and
    /// how long that took.
    measuring: Mutex<(std::time::Instant, std::time::Duration)>,
    /// Bytes charged to writes that may not be on disk yet: a measure
    /// counts them on top of what it finds, or a write running while the
    /// directory is walked would lose its charge.
    in_flight: AtomicU64,
    /// Bytes landed so far (out of `in_flight`): a measure adds what landed
    /// while it walked, or a write that landed after the walk passed its
    /// file would be counted nowhere.
    landed: AtomicU64,
    /// Removals and renames begun, and finished: a walk during which one
    /// began or was still running may have missed a subtree on the move,
    /// and credits nothing.
    changes: (AtomicU64, AtomicU64),
    /// Charges of writes that were still running when their account was
    /// pushed out of `late`: no descriptor is held for them, and they land
    /// once nothing holds their file.
    stuck: Mutex<Vec<(std::sync::Weak<std::fs::File>, u64)>>,
    /// Measures so far: a give-back is refused across one (the measure
    /// counted what is on disk, not the charge being given back).
    epoch: AtomicU64,
    /// Something was removed or renamed since the last measure: space may
    /// have been freed.
    freed: std::sync::atomic::AtomicBool,
    /// `/proc/self/fd/N` of the quota's own descriptor of the opened
    /// grant (`_root_dir`): measuring walks exactly it, even on a walker
    /// thread that outlives the grant's own descriptor.
    root: PathBuf,
    _root_dir: Option<std::fs::File>,
    /// Accounts of dropped streams, for [`Quota::catch_up`].
    late: Mutex<Vec<StreamAccount>>,
    /// Files opened for writing under the grant: one deleted while still
    /// open keeps its blocks but leaves the directory a measure walks.
    writers: Mutex<Vec<std::sync::Weak<std::fs::File>>>,
    /// What such files took at the last measure.
    orphans: AtomicU64,
    /// The grant's guest path, for messages.
    guest: String,
    /// A measure is running, or about to, on a thread of its own (see
    /// [`Quota::charge`]).
    walking: std::sync::atomic::AtomicBool,
    /// Entries the last whole walk looked at.
    entries: AtomicUsize,
    /// Walks handed to a thread of their own so far.
    walks_beside: AtomicU64,
}

impl Quota {
    pub(crate) fn new(limit: u64, root: PathBuf, guest: String) -> Quota {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        // A descriptor of its own (the grant's magic link is followed):
        // if it cannot be had, the walks fail (an empty path opens
        // nothing) and the quota stays full, rather than walk a
        // descriptor number it does not own.
        let root_dir = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(&root)
            .ok();
        let root = root_dir.as_ref().map_or_else(PathBuf::new, |d| {
            PathBuf::from(format!("/proc/self/fd/{}", d.as_raw_fd()))
        });
        let start = std::time::Instant::now();
        // At most `INLINE_ENTRIES` here, on the load's thread (a front-end
        // thread during a start or reload); a larger grant starts full and
        // is measured beside ([`usage`] asks for it).
        let Walked {
            found,
            complete,
            entries,
            cut,
        } = measure(&root, INLINE_ENTRIES);
        // A grant that cannot be seen whole (deeper than `MAX_DEPTH`, a
        // directory the host cannot read) starts full: what is hidden
        // there was charged once, and a reload must not forget it.
        let used = if complete {
            found
        } else if cut {
            limit
        } else {
            tracing::warn!(
                "the directory granted as `{guest}` cannot be measured whole (deeper than {MAX_DEPTH} levels, or unreadable to the host): its quota counts as used up until it can"
            );
            found.max(limit)
        };
        Quota {
            limit,
            used: AtomicU64::new(used),
            measuring: Mutex::new((std::time::Instant::now(), start.elapsed())),
            in_flight: AtomicU64::new(0),
            landed: AtomicU64::new(0),
            changes: (AtomicU64::new(0), AtomicU64::new(0)),
            stuck: Mutex::new(Vec::new()),
            freed: std::sync::atomic::AtomicBool::new(false),
            root,
            _root_dir: root_dir,
            guest,
            late: Mutex::new(Vec::new()),
            writers: Mutex::new(Vec::new()),
            orphans: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            walking: std::sync::atomic::AtomicBool::new(false),
            entries: AtomicUsize::new(entries),
            walks_beside: AtomicU64::new(0),
        }
    }

    /// Note a file opened for writing under the grant (see
    /// [`Quota::deleted_but_open`]).
    fn track_writer(&self, file: &Arc<std::fs::File>) {
        let mut w = self.writers.lock().unwrap_or_else(|e| e.into_inner());
        if w.len() >= 64 {
            w.retain(|f| f.strong_count() > 0);
        }
        w.push(Arc::downgrade(file));
    }

    /// What files deleted while still open for writing take: a measure
    /// walks the directory, where they no longer are, but their blocks are
    /// held until they are closed, and a call could go on writing to one
    /// past the quota.
    fn deleted_but_open(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        let mut w = self.writers.lock().unwrap_or_else(|e| e.into_inner());
        w.retain(|f| f.strong_count() > 0);
        w.iter()
            .filter_map(std::sync::Weak::upgrade)
            .filter_map(|f| f.metadata().ok())
            .filter(|m| m.nlink() == 0)
            .map(|m| m.blocks().saturating_mul(512))
            .fold(0u64, u64::saturating_add)
    }

    /// The measures so far (see [`Quota::give_back`]).
    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Give back `n` bytes charged since measure `epoch`, unless the quota
    /// was measured since (the measure already set what is used).
    /// A measure running now holds the lock: then nothing is given back
    /// (the next measure counts what is on disk), and this thread does not
    /// wait for the walk.
    fn give_back(&self, n: u64, epoch: u64) {
        let _measuring = match self.measuring.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        if self.epoch() == epoch {
            let _ = self
                .used
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                    Some(u.saturating_sub(n))
                });
        }
    }

    /// What the caller is told when a write is refused.
    fn used_up(&self) -> String {
        let measuring = if self.walking.load(Ordering::Acquire) {
            " (it is being measured again now: retry in a moment if you just deleted files)"
        } else {
            ""
        };
        format!(
            "`{}` is full: its quota of {} bytes is used up (`quota` in the manifest's grant); delete files to free it{measuring}",
            self.guest, self.limit
        )
    }

    /// The quota in bytes.
    #[cfg(test)]
    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }

    /// Charge `n` bytes; `None` (nothing charged) if that passes the quota
    /// even after measuring the directory again. The charge is in flight
    /// (counted by every measure on top of what is on disk) until the
    /// [`Flight`] returned is dropped, which the caller does once its
    /// operation is done.
    fn charge(self: &Arc<Self>, n: u64) -> Option<Flight> {
        // Never fits, and must not touch the counters (near `u64::MAX` it
        // would wrap `in_flight`).
        if n > self.limit {
            return None;
        }
        self.catch_up();
        let e = self.epoch();
        if self.fits(n) {
            return Some(self.fly(n, e));
        }
        // Measuring walks the directory on this thread, so it is not done
        // for every refused write: only when something was deleted or
        // renamed since (space may be free), or when the last measure is a
        // while old (another process may have freed space). Every entry a
        // tool creates is charged, so the walk stays as short as the quota
        // allows.
        //
        // A tool that deletes or renames between refused writes could make
        // every one of them walk the grant, so a walk that took a while
        // (`MEASURE_SLOW`) waits until `MEASURE_DUTY` times as long has
        // passed: walks of a large grant take at most a tenth of a thread
        // and of the lock, and a refused write meanwhile is refused (the
        // tool may try again). A quick walk is not held back: a tool that
        // frees space and writes again at once gets it. A charge that finds
        // another thread walking does not wait for it.
        //
        // A long walk is not the refused call's to wait for either: this
        // thread runs guests, every tenant's (with one guest thread, a walk
        // here stalls them all), or it is the front end's. So the walk here
        // looks at most `INLINE_ENTRIES` entries (a few milliseconds); one
        // that needs more, or that the last whole walk showed would, runs
        // on a thread of its own instead (one per quota, `MAX_WALKERS` in
        // the process, at low priority), and the charge that found it due
        // is refused: one after it sees what it found.
        let mut last = match self.measuring.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                let e = self.epoch();
                return self.fits(n).then(|| self.fly(n, e));
            }
        };
        let (at, took) = *last;
        let since = at.elapsed();
        // A deleted file counted at the last measure and closed since
        // freed its blocks too.
        let orphans = self.orphans.load(Ordering::Acquire);
        if (took < MEASURE_SLOW || since >= took.saturating_mul(MEASURE_DUTY))
            && (since >= REMEASURE_AFTER
                || self.freed.swap(false, Ordering::AcqRel)
                || (orphans > 0 && self.deleted_but_open() < orphans))
        {
            let large = self.entries.load(Ordering::Acquire) > INLINE_ENTRIES;
            if large || self.measure_timed(&mut last, INLINE_ENTRIES).cut {
                drop(last);
                self.measure_beside();
                let e = self.epoch();
                return self.fits(n).then(|| self.fly(n, e));
            }
        }
        // Under the lock no measure runs, so the flight is registered with
        // nothing in between.
        let e = self.epoch();
        let flight = self.fits(n).then(|| self.fly(n, e));
        drop(last);
        flight
    }

    /// Measure now, on this thread, looking at `max_entries` at most, and
    /// note when and for how long.
    fn measure_timed(
        &self,
        last: &mut (std::time::Instant, std::time::Duration),
        max_entries: usize,
    ) -> Walked {
        let start = std::time::Instant::now();
        let walked = self.measure_now(max_entries);
        *last = (std::time::Instant::now(), start.elapsed());
        walked
    }

    /// Measure the whole grant on a thread of its own, at low priority,
    /// unless this quota's walk is already running or waiting there. At
    /// most [`MAX_WALKERS`] such threads run in the process; past that the
    /// walk waits its turn in a queue the walkers take from in order, so
    /// one tenant's huge grants can delay another's walk by the walks
    /// ahead of it in the queue (one per quota at most, since `walking`
    /// keeps a quota in it once), never shut it out. A thread, not a
    /// runtime's blocking pool: a charge may run on the front end's
    /// runtime (a call's first slice), and no runtime's pool is bounded
    /// for this.
    fn measure_beside(self: &Arc<Self>) {
        if self.walking.swap(true, Ordering::AcqRel) {
            return;
        }
        self.walks_beside.fetch_add(1, Ordering::AcqRel);
        let mut w = walks();
        if w.running >= MAX_WALKERS {
            w.queue.push_back(Arc::downgrade(self));
            return;
        }
        w.running += 1;
        drop(w);
        let first = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("toolhost-quota-walk".into())
            .spawn(move || {
                crate::scheduler::lower_priority(crate::config::GuestPriority::Background);
                let mut next = Some(first);
                while let Some(weak) = next {
                    // A quota gone meanwhile (a reload replaced its
                    // grant) is not walked.
                    let q = weak.upgrade();
                    if let Some(q) = &q {
                        // A walk that panics must not take the walker (and
                        // the quotas queued behind it) with it.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            let mut last = q.measuring.lock().unwrap_or_else(|e| e.into_inner());
                            q.measure_timed(&mut last, usize::MAX);
                        }));
                    }
                    let mut w = walks();
                    next = w.queue.pop_front();
                    if next.is_none() {
                        w.running -= 1;
                    }
                    drop(w);
                    if let Some(q) = q {
                        q.walking.store(false, Ordering::Release);
                    }
                }
            });
        if let Err(e) = spawned {
            walks().running -= 1;
            self.walking.store(false, Ordering::Release);
            tracing::warn!(grant = %self.guest, "cannot start a thread to re-measure a quota: {e}");
        }
    }

    /// Add `n` to `used` if it stays within the quota.
    fn fits(&self, n: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(n).filter(|t| *t <= self.limit)
            })
            .is_ok()
    }

    /// Register `n` bytes, just added to `used` (with the measures at
    /// `epoch` then), as in flight. A measure that ran in between may have
    /// set `used` without them and read `in_flight` before they were in
    /// it: they are added to `used` again (counted twice until the next
    /// measure, never not at all).
    fn fly(self: &Arc<Self>, n: u64, epoch: u64) -> Flight {
        let flight = self.fly_uncharged(n);
        if epoch % 2 == 1 || self.epoch.load(Ordering::SeqCst) != epoch {
            self.used.fetch_add(n, Ordering::AcqRel);
        }
        flight
    }

    /// Walk the grant and set `used` to what is on disk, plus files deleted
    /// but open and writes in flight. The epoch is odd while it runs (see
    /// [`Quota::fly`]). A walk that could not see everything (a directory
    /// it could not open, one deeper than [`MAX_DEPTH`], something renamed
    /// or deleted while it ran) credits nothing: `used` only grows then.
    /// Called with `measuring` held.
    fn measure_now(&self, max_entries: usize) -> Walked {
        /// Makes the epoch even again however the walk ends (a panic
        /// too), or every later charge would count twice.
        struct Even<'a>(&'a AtomicU64);
        impl Drop for Even<'_> {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let _even = Even(&self.epoch);
        let orphans = self.deleted_but_open();
        self.orphans.store(orphans, Ordering::Release);
        self.freed.store(false, Ordering::Release);
        let begun = self.changes.0.load(Ordering::SeqCst);
        let landed = self.landed.load(Ordering::SeqCst);
        let walked = measure(&self.root, max_entries);
        let Walked {
            found, complete, ..
        } = walked;
        if complete {
            self.entries.store(walked.entries, Ordering::Release);
        } else if walked.cut {
            // Proof enough that the grant is large, even if no walk can
            // see it whole (a tree buried past `MAX_DEPTH`).
            self.entries.fetch_max(walked.entries, Ordering::AcqRel);
        }
        let moved = self.changes.0.load(Ordering::SeqCst) != begun
            || self.changes.1.load(Ordering::SeqCst) != begun;
        // What is in flight now, and what landed while the walk ran (it may
        // have passed those files before they grew): counted twice at
        // worst, never not at all.
        let used = found
            .saturating_add(orphans)
            .saturating_add(self.in_flight.load(Ordering::SeqCst))
            .saturating_add(self.landed.load(Ordering::SeqCst).wrapping_sub(landed));
        if complete && !moved {
            self.used.store(used, Ordering::Release);
        } else {
            self.used.fetch_max(used, Ordering::AcqRel);
        }
        walked
    }

    /// A removal or rename under the grant begins; the guard marks it
    /// finished (and the quota as possibly freed) when dropped.
    fn change(&self) -> ChangeGuard<'_> {
        self.changes.0.fetch_add(1, Ordering::SeqCst);
        ChangeGuard(self)
    }

    /// A write charged `charged` bytes before it ran turned out to
    /// allocate `allocated`: take what the charge missed (a file system
    /// whose blocks are larger than [`BLOCK`], huge pages, metadata),
    /// without refusing, since the write happened; the next charge sees
    /// it. Nothing is given back here: a file system that reports its
    /// blocks late (ZFS until its transaction group commits) would have a
    /// write given back whole. Only a measure credits, and
    /// [`Quota::give_back`] the unfilled gap of a sparse write.
    fn take_missed(&self, charged: u64, allocated: u64) {
        if allocated > charged {
            self.used.fetch_add(allocated - charged, Ordering::AcqRel);
        }
    }

    /// Take what dropped streams' writes allocated past their charge (see
    /// [`Charged`]): their last writes finish on another thread after the
    /// stream is gone, so they are looked at again here, at the quota's
    /// next charge.
    ///
    /// One whose file something else still holds (the blocking task of a
    /// write wasmtime-wasi could not stop: a stream write is not bounded by
    /// its permit, and may be tens of MiB) stays: its charge is in flight
    /// until that task is done.
    fn catch_up(&self) {
        self.settle_late();
        self.settle_stuck();
    }

    /// Settle the late accounts whose writes are done: only late accounts
    /// hold the file (two streams over one descriptor share it).
    fn settle_late(&self) {
        let mut late = self.late.lock().unwrap_or_else(|e| e.into_inner());
        if late.is_empty() {
            return;
        }
        let all = std::mem::take(&mut *late);
        let done_writing = |l: &StreamAccount| {
            let holders = all.iter().filter(|o| Arc::ptr_eq(&o.file, &l.file)).count();
            Arc::strong_count(&l.file) <= holders
        };
        let ready: Vec<bool> = all.iter().map(done_writing).collect();
        let (done, running): (Vec<_>, Vec<_>) = all.into_iter().zip(ready).partition(|(_, r)| *r);
        *late = running.into_iter().map(|(l, _)| l).collect();
        drop(late);
        for (l, _) in done {
            l.catch_up(self);
        }
    }

    /// Land the `stuck` charges whose files nothing holds any more.
    fn settle_stuck(&self) {
        let mut stuck = self.stuck.lock().unwrap_or_else(|e| e.into_inner());
        if stuck.is_empty() {
            return;
        }
        let mut landed = 0u64;
        stuck.retain(|(f, n)| {
            let running = f.strong_count() > 0;
            if !running {
                landed = landed.saturating_add(*n);
            }
            running
        });
        drop(stuck);
        self.land(landed);
    }

    /// Keep a dropped stream's account for [`Quota::catch_up`]; past
    /// [`MAX_LATE`] kept, the oldest is settled now (its file is held open
    /// until then): what it allocated is taken, and a charge still in
    /// flight moves to `stuck`, holding no descriptor, until its write is
    /// done.
    fn keep_late(&self, l: StreamAccount) {
        let oldest = {
            let mut late = self.late.lock().unwrap_or_else(|e| e.into_inner());
            late.push(l);
            (late.len() > MAX_LATE).then(|| late.remove(0))
        };
        if let Some(mut o) = oldest {
            let flying = std::mem::take(&mut o.flying);
            if flying > 0 {
                self.stuck
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((Arc::downgrade(&o.file), flying));
            }
            o.catch_up(self);
        }
    }

    /// `n` bytes in flight are on disk now (see `in_flight`).
    fn land(&self, n: u64) {
        if n > 0 {
            self.landed.fetch_add(n, Ordering::SeqCst);
            let _ = self
                .in_flight
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |f| {
                    Some(f.saturating_sub(n))
                });
        }
    }

    /// Note `n` bytes as in flight without charging them: what a write over
    /// data the file holds may put back on disk (free, the file held them;
    /// but if the file is truncated and measured before the write lands,
    /// the measure must still count them), and, from [`Quota::fly`], a
    /// charge just taken.
    fn fly_uncharged(self: &Arc<Self>, n: u64) -> Flight {
        let n = n.min(self.limit);
        let _ = self
            .in_flight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |f| {
                Some(f.saturating_add(n))
            });
        Flight {
            quota: self.clone(),
            n,
        }
    }

    /// Note that something under the grant was removed or renamed.
    fn note_freed(&self) {
        self.freed.store(true, Ordering::Release);
    }
}

/// A removal or rename under way (see [`Quota::change`]).
struct ChangeGuard<'a>(&'a Quota);

impl Drop for ChangeGuard<'_> {
    fn drop(&mut self) {
        self.0.note_freed();
        self.0.changes.1.fetch_add(1, Ordering::SeqCst);
    }
}

/// Charged bytes of a write that may not be on disk yet, counted by every
/// measure until the write is done and this is dropped.
#[derive(Debug)]
struct Flight {
    quota: Arc<Quota>,
    n: u64,
}

impl Flight {
    /// Hand the bytes over to be landed later ([`Quota::land`]).
    fn keep(mut self) -> u64 {
        std::mem::take(&mut self.n)
    }

    /// Carry `other`'s bytes (of the same quota) in this flight.
    fn join(&mut self, mut other: Flight) {
        self.n = self.n.saturating_add(std::mem::take(&mut other.n));
    }
}

impl Drop for Flight {
    /// The write is done: what it allocated is on disk, where a measure
    /// finds it.
    fn drop(&mut self) {
        self.quota.land(std::mem::take(&mut self.n));
    }
}

/// A positioned write's charge while it runs. Dropped before the write is
/// done (the call was stopped mid-write; wasmtime-wasi's blocking task
/// goes on writing), its charge goes to the quota's late list, and lands
/// once that task has let go of the file.
struct Landing {
    flight: Option<Flight>,
    file: Arc<std::fs::File>,
    /// The file's allocated bytes before the write.
    base: u64,
    charged: u64,
}

impl Landing {
    /// The write is done: its charge lands now.
    fn done(mut self) {
        self.flight = None;
    }
}

impl Drop for Landing {
    fn drop(&mut self) {
        if let Some(f) = self.flight.take() {
            let quota = f.quota.clone();
            quota.keep_late(StreamAccount {
                file: self.file.clone(),
                base: self.base,
                charged: self.charged,
                flying: f.keep(),
            });
        }
    }
}

/// Bytes the files under `root` (`/proc/self/fd/N` of the grant) take on
/// disk (allocated blocks, so a sparse file counts what it uses), and
/// whether the walk saw everything. Every entry counts at least
/// [`ENTRY_BYTES`], as it was charged when made: an empty file, a short
/// symlink or a small directory takes no block, and a measure counting
/// blocks alone gave back every entry's charge, so a loop of empty files
/// with a pause each second filled the inode table under any quota (found
/// by review). A file's blocks count once however many links it has.
///
/// The walk goes from descriptor to descriptor, never by a path from the
/// root: a directory is opened in its parent's descriptor
/// (`/proc/self/fd/P/NAME`, `O_NOFOLLOW`), so a directory swapped for a
/// symlink while it runs is not followed out of the grant, and no path
/// grows past `PATH_MAX` however deep the tree. Entries are looked at with
/// `fstatat` on the directory read (what `DirEntry::metadata` does).
/// Written here, not with a crate: it is a dozen lines over std, and the
/// descriptors it holds are bounded by [`MAX_DEPTH`].
fn measure(root: &std::path::Path, max_entries: usize) -> Walked {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let open = |p: &std::path::Path, follow: bool| {
        let nofollow = if follow { 0 } else { libc::O_NOFOLLOW };
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | nofollow | libc::O_CLOEXEC)
            .open(p)
    };
    // The root is the grant's own descriptor's magic link: followed.
    let Ok(top) = open(root, true) else {
        return Walked::default();
    };
    let mut total = 0u64;
    let mut complete = true;
    let mut entries = 0usize;
    // Files of more than one link whose blocks are counted (at most one
    // per entry looked at).
    let mut linked: std::collections::HashSet<(u64, u64)> = Default::default();
    // Directories still to read: their parent's descriptor (shared, so at
    // most one per level of the current path stays open) and their name.
    let mut todo: Vec<(Arc<std::fs::File>, Option<std::ffi::OsString>, usize)> =
        vec![(Arc::new(top), None, 0)];
    while let Some((parent, name, depth)) = todo.pop() {
        let dir = match name {
            None => parent,
            Some(name) => {
                let p = std::path::Path::new(&format!("/proc/self/fd/{}", parent.as_raw_fd()))
                    .join(name);
                // (The parent stays open until its child is.)
                let child = open(&p, false);
                drop(parent);
                match child {
                    Ok(d) => Arc::new(d),
                    Err(_) => {
                        complete = false;
                        continue;
                    }
                }
            }
        };
        let Ok(listing) = std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd())) else {
            complete = false;
            continue;
        };
        for e in listing {
            entries += 1;
            if entries > max_entries {
                return Walked {
                    found: total,
                    complete: false,
                    cut: true,
                    entries,
                };
            }
            let Ok(e) = e else {
                complete = false;
                continue;
            };
            let Ok(m) = e.metadata() else {
                complete = false;
                continue;
            };
            let blocks = if m.nlink() > 1 && !m.is_dir() && !linked.insert((m.dev(), m.ino())) {
                0
            } else {
                m.blocks().saturating_mul(512)
            };
            total = total.saturating_add(blocks.max(ENTRY_BYTES));
            if m.is_dir() {
                if depth + 1 > MAX_DEPTH {
                    complete = false;
                } else {
                    todo.push((dir.clone(), Some(e.file_name()), depth + 1));
                }
            }
        }
    }
    Walked {
        found: total,
        complete,
        cut: false,
        entries,
    }
}

/// What a [`measure`] found.
#[derive(Debug, Default, Clone, Copy)]
struct Walked {
    /// Bytes of the blocks seen.
    found: u64,
    /// It saw everything (see [`measure`]).
    complete: bool,
    /// It stopped at its entry budget.
    cut: bool,
    /// Entries it looked at.
    entries: usize,
}

/// How deep a measure walks a grant; past it the walk is incomplete and
/// credits nothing (every directory a tool makes was charged, so the
/// count stays an upper bound).
const MAX_DEPTH: usize = 64;

/// Per-call enforcement state.
pub(crate) struct FsCall {
    /// Its `max-open`, and the files it opened, shared with its
    /// connections' sockets; made for a call that can open either (one
    /// with directories or hosts granted), none for the others (echo's
    /// call path allocates nothing for it).
    descriptors: Option<Arc<CallDescriptors>>,
    max_open: usize,
    /// What this call holds of the process budget: its preopened
    /// directories, and what it opened.
    held: usize,
    /// What it holds of its scope's share (files opened since it joined),
    /// and whether the last reservation took one of it.
    scope_held: usize,
    reserved_scoped: bool,
    /// Its preopened directories (one descriptor each, opened for it).
    preopens: usize,
    /// Guest path and quota of each granted directory.
    grants: Vec<(String, Option<Arc<Quota>>)>,
    /// The grant each descriptor is under (by resource rep).
    grant_of: HashMap<u32, usize>,
    /// The limit this call hit, shared with its charged streams.
    notice: Arc<Notice>,
    /// Room for [`STREAM_OPS`] operations of its file streams at once
    /// (made with its first stream: most calls open none).
    stream_ops: Option<Arc<StreamOps>>,
    /// The call's own key for `metadata-hash` (see
    /// [`shadow_metadata_hashes`]), taken with its first hash.
    hash_nonce: Option<u64>,
}

/// The first limit a call hit, until it is passed on to the caller (once
/// per call is enough: a loop of refused writes sends one warning).
#[derive(Default)]
struct Notice(Mutex<(bool, Option<String>)>);

impl Notice {
    fn note(&self, m: String) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !g.0 {
            *g = (true, Some(m));
        }
    }
    fn take(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).1.take()
    }
}

impl Drop for FsCall {
    fn drop(&mut self) {
        process_budget().give(self.held);
        if let Some(s) = self.descriptors.as_ref().and_then(|d| d.scope.get()) {
            s.give(self.scope_held);
        }
    }
}

impl FsCall {
    /// A call with `prepared`'s grants (none for `describe`), made before
    /// its sandbox opens them: each sandbox opens its grants' directories
    /// anew (one descriptor each, `Prepared::apply`). They are not counted
    /// against the call's `max-open`, but they are taken from the process's
    /// share here, so a sandbox whose directories do not fit is not built.
    /// (The grants per component are bounded at parse time.)
    pub(crate) fn new(prepared: Option<&Prepared>, max_open: usize) -> anyhow::Result<FsCall> {
        let preopens = prepared.map_or(0, |p| p.dirs.len());
        let b = process_budget();
        // Most tools have no directory: nothing to take, no atomic to touch.
        if preopens > 0 && !b.take(preopens) {
            return Err(DescriptorsExhausted {
                limit: b.limit,
                wanted: preopens,
            }
            .into());
        }
        Ok(FsCall {
            descriptors: (preopens > 0).then(|| CallDescriptors::new(max_open)),
            max_open,
            held: preopens,
            scope_held: 0,
            reserved_scoped: false,
            preopens,
            grants: prepared
                .map(|p| {
                    p.dirs
                        .iter()
                        .map(|d| (d.guest.clone(), d.usage.clone()))
                        .collect()
                })
                .unwrap_or_default(),
            grant_of: HashMap::new(),
            notice: Arc::default(),
            stream_ops: None,
            hash_nonce: None,
        })
    }

    /// The call's own number for `metadata-hash`, taken from the
    /// process's count with its first hash.
    fn hash_nonce(&mut self) -> u64 {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        *self
            .hash_nonce
            .get_or_insert_with(|| NEXT.fetch_add(1, Ordering::Relaxed))
    }

    /// The call's open files and sockets together (see
    /// [`CallDescriptors`]): for its connections. Made at the first ask.
    pub(crate) fn descriptors(&mut self) -> &Arc<CallDescriptors> {
        let max_open = self.max_open;
        self.descriptors
            .get_or_insert_with(|| CallDescriptors::new(max_open))
    }

    /// Charge what the call opens from now on to its scope's `share` too,
    /// if it can open anything.
    pub(crate) fn join_scope(&self, share: &Arc<DescriptorShare>) {
        if let Some(d) = &self.descriptors {
            d.join_scope(share);
        }
    }

    /// While `ahead` (a sandbox prepared before its call, until it is
    /// handed to it), its file streams start no operation (see
    /// `StreamOps::held_back`).
    pub(crate) fn prepared_ahead(&self, ahead: bool) {
        if let Some(d) = &self.descriptors {
            d.ahead.store(ahead, Ordering::Release);
        }
    }

    /// Whether the sandbox is prepared ahead and not yet handed to its
    /// call (only one with directories granted says so).
    fn is_ahead(&self) -> bool {
        self.descriptors
            .as_ref()
            .is_some_and(|d| d.ahead.load(Ordering::Acquire))
    }

    /// Forget files nothing holds any more and give their share back;
    /// how many are open.
    fn reconcile(&mut self) -> usize {
        let open = self.descriptors().files();
        let live = open + self.preopens;
        if live < self.held {
            process_budget().give(self.held - live);
            self.held = live;
        }
        // Files opened before it joined its scope were not taken from the
        // share: what is given back never passes what was taken.
        if open < self.scope_held {
            let held = self.scope_held;
            if let Some(s) = self.descriptors().scope.get() {
                s.give(held - open);
            }
            self.scope_held = open;
        }
        open
    }

    /// Take one descriptor from the call's, its scope's and the process's
    /// budgets.
    fn reserve(&mut self) -> Result<(), t::ErrorCode> {
        let open = self.reconcile();
        let d = self.descriptors().clone();
        let scope = match d.take(open + d.sockets.load(Ordering::Acquire)) {
            Ok(scope) => scope,
            Err(why) => {
                self.note(why.to_string());
                return Err(t::ErrorCode::InsufficientMemory);
            }
        };
        self.held += 1;
        self.reserved_scoped = scope.is_some();
        self.scope_held += usize::from(self.reserved_scoped);
        // Counted as open from here (pushed once opened, or given back).
        d.opening.store(1, Ordering::Release);
        Ok(())
    }

    /// The file reserved for is open: it counts while anything holds it.
    fn opened(&mut self, file: &Arc<std::fs::File>) {
        let d = self.descriptors();
        d.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::downgrade(file));
        d.opening.store(0, Ordering::Release);
        self.reserved_scoped = false;
    }

    /// Give back a reservation that was not used.
    fn unreserve(&mut self) {
        self.held -= 1;
        process_budget().give(1);
        if std::mem::take(&mut self.reserved_scoped) {
            self.scope_held -= 1;
            if let Some(s) = self.descriptors().scope.get() {
                s.give(1);
            }
        }
        self.descriptors().opening.store(0, Ordering::Release);
    }

    fn note(&mut self, m: String) {
        self.notice.note(m);
    }

    fn quota_of(&self, rep: u32) -> Option<Arc<Quota>> {
        let i = *self.grant_of.get(&rep)?;
        self.grants.get(i)?.1.clone()
    }

    /// Charge `n` bytes to the quota of `rep`'s grant, if it has one; the
    /// [`Flight`] is held until the operation charged is done.
    fn charge(&mut self, rep: u32, n: u64) -> Result<Option<Flight>, t::ErrorCode> {
        let Some(q) = self.quota_of(rep) else {
            return Ok(None);
        };
        match q.charge(n) {
            Some(f) => Ok(Some(f)),
            None => {
                self.note(q.used_up());
                Err(t::ErrorCode::InsufficientSpace)
            }
        }
    }
}

/// Store data that carries an [`FsCall`] beside its WASI context.
pub(crate) trait FsEnforced: Send + 'static {
    /// The call's enforcement state and its filesystem view, together.
    fn fs_parts(&mut self) -> (&mut FsCall, WasiFilesystemCtxView<'_>);
    /// Tell the caller (a warning event) that the call hit a limit.
    fn fs_warn(&mut self, message: String);
    /// Charge `bytes` to the call's memory limit for as long as the
    /// returned charge lives (a file stream's buffer, a directory
    /// listing); `None`, nothing charged, if it does not fit.
    fn hold_host(&mut self, bytes: usize) -> Option<crate::caps::limits::HostCharge>;
}

/// What one file stream is charged to its call's memory while the guest
/// holds it: wasmtime-wasi keeps a read's data (up to 64 KiB) in the
/// stream until the guest takes it, and a write's while it runs on a
/// blocking thread, plus the stream itself. Without it, 4,096 streams over
/// one open file each holding a 64 KiB read were 256 MiB of host memory
/// outside every limit (found by review): the open-files cap counts files,
/// not streams over them.
pub(crate) const STREAM_BYTES: usize = 68 << 10;

/// Operations one call's file streams may have running at once.
/// wasmtime-wasi starts each read (or skip) of an idle file stream, and
/// each write, on a blocking thread and returns at once: 900 streams over
/// one file, each skipped in turn, kept a hundred blocking threads busy
/// and others' file operations queued (found by review). A call's file
/// streams are toolhost's own ([`FileInput`], [`FileOutput`]): each
/// operation holds a place among the call's `STREAM_OPS` for as long as it
/// runs, given back by the operation itself as it ends (a first version
/// gave it back when the guest looked at the stream again, and a program
/// writing to nine files it kept open waited for good: found by the
/// review of the fix). Without a place, nothing starts: a read returns
/// nothing yet, a write is held (at most `check-write`'s 64 KiB, charged
/// with the stream) and both start from the stream's `ready`.
const STREAM_OPS: usize = 8;

/// The most one operation of a file stream reads or writes (wasmtime-wasi's
/// bound, which [`STREAM_BYTES`] is charged for).
const STREAM_CHUNK: usize = 64 << 10;

/// File-stream operations all calls together may have running: half of
/// the guest runtime's blocking threads (Tokio's 512). An operation outlives
/// the call that started it (its thread cannot be stopped), so a call's
/// own places alone let call after call leave 8 more running on slow
/// storage: 64 calls filled the pool, and every other call's file
/// operations waited behind them (found by the second review of the fix).
/// The other half stays for the rest (opens, stats, reads of descriptors).
/// Each scope's calls hold at most its `pool-share` of them
/// ([`DescriptorShare`]).
const ALL_STREAM_OPS: usize = 256;

fn all_stream_ops() -> &'static Arc<tokio::sync::Semaphore> {
    static ALL: std::sync::LazyLock<Arc<tokio::sync::Semaphore>> =
        std::sync::LazyLock::new(|| Arc::new(tokio::sync::Semaphore::new(ALL_STREAM_OPS)));
    &ALL
}

/// Where a call's file-stream operations take their places: among the
/// call's own [`STREAM_OPS`], its scope's share of [`ALL_STREAM_OPS`] (once
/// the call has joined its scope: looked up at each operation, so a stream
/// a start-up made before the call joined counts too), and all calls'.
struct StreamOps {
    call: Arc<tokio::sync::Semaphore>,
    descriptors: Option<Arc<CallDescriptors>>,
}

impl StreamOps {
    fn scope(&self) -> Option<&Arc<DescriptorShare>> {
        self.descriptors.as_ref().and_then(|d| d.scope.get())
    }

    /// Whether the sandbox is still being prepared ahead of its call: its
    /// start-up's operations would count against no scope (it joins at
    /// hand-out), and outlive the start-up (found by the review of the
    /// fix: eight reads started in each start-up, left running on hung
    /// storage, filled all 256 places in 32 replies). None starts then; a
    /// start-up that waits for one is past its slice, so not prepared.
    fn held_back(&self) -> bool {
        self.descriptors
            .as_ref()
            .is_some_and(|d| d.ahead.load(Ordering::Acquire))
    }
}

/// A running operation's places: among its call's, its scope's and all
/// calls'.
struct Place {
    _call: tokio::sync::OwnedSemaphorePermit,
    _scope: Option<tokio::sync::OwnedSemaphorePermit>,
    _all: tokio::sync::OwnedSemaphorePermit,
}

/// A place for an operation now, if its call, its scope and the process
/// have room.
fn try_place(ops: &StreamOps) -> Option<Place> {
    if ops.held_back() {
        return None;
    }
    let call = ops.call.clone().try_acquire_owned().ok()?;
    let scope = match ops.scope() {
        Some(s) => Some(s.ops.clone().try_acquire_owned().ok()?),
        None => None,
    };
    let all = all_stream_ops().clone().try_acquire_owned().ok()?;
    Some(Place {
        _call: call,
        _scope: scope,
        _all: all,
    })
}

/// A place for an operation, waited for.
async fn place(ops: &StreamOps) -> Place {
    if ops.held_back() {
        // Only a start-up prepared ahead waits here, within the one poll
        // it has: it never comes back.
        std::future::pending::<()>().await;
    }
    let call = ops
        .call
        .clone()
        .acquire_owned()
        .await
        .expect("the call's operations are never closed");
    let scope = match ops.scope() {
        Some(s) => Some(
            s.ops
                .clone()
                .acquire_owned()
                .await
                .expect("a scope's operations are never closed"),
        ),
        None => None,
    };
    let all = all_stream_ops()
        .clone()
        .acquire_owned()
        .await
        .expect("never closed");
    Place {
        _call: call,
        _scope: scope,
        _all: all,
    }
}

/// `f` on a blocking thread, holding `place` until it has run and its
/// thread is back in the pool (given back from a task of its own as the
/// result arrives: given back on the thread, before the thread was idle
/// again, the next operation found no idle thread and the pool grew).
fn run_with<R: Send + 'static>(
    place: Place,
    f: impl FnOnce() -> R + Send + 'static,
) -> tokio::task::JoinHandle<std::io::Result<R>> {
    let running = tokio::task::spawn_blocking(f);
    tokio::spawn(async move {
        let r = running.await.map_err(std::io::Error::other);
        drop(place);
        r
    })
}

/// Where a file input stream is.
enum ReadState {
    Idle,
    Waiting(tokio::task::JoinHandle<std::io::Result<ReadState>>),
    Data(bytes::Bytes),
    Error(std::io::Error),
    Closed,
}

/// A file's input stream (see [`STREAM_OPS`]): reads at its position, one
/// at a time, each on a blocking thread within the call's places.
struct FileInput {
    file: Arc<std::fs::File>,
    position: u64,
    state: ReadState,
    ops: Arc<StreamOps>,
}

impl FileInput {
    fn start(&mut self, place: Place, size: usize) {
        let (file, at) = (self.file.clone(), self.position);
        self.state = ReadState::Waiting(run_with(place, move || read_at(&file, at, size)));
    }

    /// Wait for the read that runs, if one does.
    async fn settle(&mut self) {
        if let ReadState::Waiting(task) = &mut self.state {
            self.state = match task.await {
                Ok(Ok(state)) => state,
                Ok(Err(e)) => ReadState::Error(e),
                Err(e) => ReadState::Error(std::io::Error::other(e)),
            };
        }
    }
}

/// One read of up to `size` bytes of `file` at `at`.
fn read_at(file: &std::fs::File, at: u64, size: usize) -> ReadState {
    use std::os::unix::fs::FileExt;
    let mut buf = bytes::BytesMut::zeroed(size.min(STREAM_CHUNK));
    loop {
        match file.read_at(&mut buf, at) {
            Ok(0) => return ReadState::Closed,
            Ok(n) => {
                buf.truncate(n);
                return ReadState::Data(buf.freeze());
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return ReadState::Error(e),
        }
    }
}

#[async_trait::async_trait]
impl Pollable for FileInput {
    async fn ready(&mut self) {
        if let ReadState::Idle = self.state {
            // Nothing asked for yet: read for the guest, once it has a place.
            let place = place(&self.ops).await;
            self.start(place, STREAM_CHUNK);
        }
        self.settle().await
    }
}

#[async_trait::async_trait]
impl InputStream for FileInput {
    fn read(&mut self, size: usize) -> StreamResult<bytes::Bytes> {
        match &mut self.state {
            ReadState::Idle => {
                if size > 0
                    && let Some(place) = try_place(&self.ops)
                {
                    self.start(place, size);
                }
                Ok(bytes::Bytes::new())
            }
            ReadState::Waiting(_) => Ok(bytes::Bytes::new()),
            ReadState::Data(b) => {
                let chunk = b.split_to(b.len().min(size));
                if b.is_empty() {
                    self.state = ReadState::Idle;
                }
                self.position += chunk.len() as u64;
                Ok(chunk)
            }
            ReadState::Error(_) => match std::mem::replace(&mut self.state, ReadState::Closed) {
                ReadState::Error(e) => Err(StreamError::LastOperationFailed(e.into())),
                _ => unreachable!(),
            },
            ReadState::Closed => Err(StreamError::Closed),
        }
    }

    async fn blocking_read(&mut self, size: usize) -> StreamResult<bytes::Bytes> {
        self.settle().await;
        if let ReadState::Idle = self.state
            && size > 0
        {
            let place = place(&self.ops).await;
            self.start(place, size);
            self.settle().await;
        }
        self.read(size)
    }

    async fn cancel(&mut self) {
        // A read that runs ends first (its thread cannot be stopped).
        self.settle().await;
        self.state = ReadState::Closed;
    }
}

/// Where a file output stream is.
enum WriteState {
    Ready,
    /// Written by the guest, waiting for a place.
    Held(bytes::Bytes),
    Waiting(tokio::task::JoinHandle<std::io::Result<std::io::Result<usize>>>),
    Error(std::io::Error),
    Closed,
}

/// A file's output stream (see [`STREAM_OPS`]): writes at its position (or
/// at the end, appending), one at a time, each on a blocking thread
/// within the call's places.
struct FileOutput {
    file: Arc<std::fs::File>,
    /// Where the next write goes; `None`: the end (an append stream).
    position: Option<u64>,
    state: WriteState,
    ops: Arc<StreamOps>,
}

impl FileOutput {
    fn start(&mut self, place: Place, data: bytes::Bytes) {
        let (file, at) = (self.file.clone(), self.position);
        self.state = WriteState::Waiting(run_with(place, move || write_all_at(&file, &data, at)));
    }

    /// Wait for the write that runs (or start the one held, once it has a
    /// place, and wait for it).
    async fn settle(&mut self) {
        if let WriteState::Held(_) = self.state {
            let place = place(&self.ops).await;
            if let WriteState::Held(data) = std::mem::replace(&mut self.state, WriteState::Ready) {
                self.start(place, data);
            }
        }
        if let WriteState::Waiting(task) = &mut self.state {
            self.state = match task.await.map_err(std::io::Error::other).and_then(|r| r) {
                Ok(Ok(n)) => {
                    if let Some(p) = &mut self.position {
                        *p += n as u64;
                    }
                    WriteState::Ready
                }
                Ok(Err(e)) => WriteState::Error(e),
                Err(e) => WriteState::Error(std::io::Error::other(e)),
            };
        }
    }

    /// The error a write left, once, then closed.
    fn take_error(&mut self) -> StreamError {
        match std::mem::replace(&mut self.state, WriteState::Closed) {
            WriteState::Error(e) => StreamError::LastOperationFailed(e.into()),
            _ => StreamError::Closed,
        }
    }
}

/// All of `data` written to `file`, at `at` or (`None`) at its end.
fn write_all_at(file: &std::fs::File, mut data: &[u8], at: Option<u64>) -> std::io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let total = data.len();
    let mut at = at;
    while !data.is_empty() {
        let n = match at {
            Some(p) => file.write_at(data, p),
            None => append(file, data),
        };
        match n {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                data = &data[n..];
                if let Some(p) = &mut at {
                    *p += n as u64;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(total)
}

/// One write of `data` at the end of `file` (`pwritev2` with `RWF_APPEND`,
/// as wasmtime-wasi writes appends; where the kernel lacks it, the file
/// description's `O_APPEND` for the write).
fn append(file: &std::fs::File, data: &[u8]) -> std::io::Result<usize> {
    use rustix::fs::OFlags;
    use rustix::io::{Errno, ReadWriteFlags};
    match rustix::io::pwritev2(
        file,
        &[std::io::IoSlice::new(data)],
        0,
        ReadWriteFlags::APPEND,
    ) {
        Err(Errno::NOSYS) | Err(Errno::NOTSUP) => {}
        otherwise => return Ok(otherwise?),
    }
    let flags = rustix::fs::fcntl_getfl(file)?;
    rustix::fs::fcntl_setfl(file, flags | OFlags::APPEND)?;
    let r = rustix::io::write(file, data);
    let _ = rustix::fs::fcntl_setfl(file, flags);
    Ok(r?)
}

#[async_trait::async_trait]
impl Pollable for FileOutput {
    async fn ready(&mut self) {
        self.settle().await
    }
}

#[async_trait::async_trait]
impl OutputStream for FileOutput {
    fn write(&mut self, data: bytes::Bytes) -> StreamResult<()> {
        match self.state {
            WriteState::Ready => {}
            WriteState::Closed => return Err(StreamError::Closed),
            _ => {
                return Err(StreamError::Trap(wasmtime::format_err!(
                    "write not permitted: check-write not called first"
                )));
            }
        }
        if data.is_empty() {
            return Ok(());
        }
        match try_place(&self.ops) {
            Some(place) => self.start(place, data),
            None => self.state = WriteState::Held(data),
        }
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        match self.state {
            WriteState::Error(_) => Err(self.take_error()),
            WriteState::Closed => Err(StreamError::Closed),
            _ => Ok(()),
        }
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        match self.state {
            WriteState::Ready => Ok(STREAM_CHUNK),
            WriteState::Held(_) | WriteState::Waiting(_) => Ok(0),
            WriteState::Error(_) => Err(self.take_error()),
            WriteState::Closed => Err(StreamError::Closed),
        }
    }

    async fn blocking_write_and_flush(&mut self, data: bytes::Bytes) -> StreamResult<()> {
        if data.len() > STREAM_CHUNK {
            return Err(StreamError::Trap(wasmtime::format_err!(
                "a blocking write of {} bytes, past the {STREAM_CHUNK} it may write",
                data.len()
            )));
        }
        self.settle().await;
        self.check_write()?;
        if !data.is_empty() {
            let place = place(&self.ops).await;
            self.start(place, data);
            self.settle().await;
        }
        self.flush()
    }

    async fn cancel(&mut self) {
        // A write that runs ends first, and one held runs once it has a
        // place: written and then dropped, it lands, as with wasmtime-wasi
        // (dropping it lost it: found by the second review of the fix).
        self.settle().await;
        self.state = WriteState::Closed;
    }
}

/// A file stream and its charge to the call's memory, given back when the
/// guest drops the stream (the resource table drops this).
struct HeldStream<S> {
    inner: S,
    _charge: crate::caps::limits::HostCharge,
}

#[async_trait::async_trait]
impl<S: Pollable> Pollable for HeldStream<S> {
    async fn ready(&mut self) {
        self.inner.ready().await
    }
}

#[async_trait::async_trait]
impl InputStream for HeldStream<DynInputStream> {
    fn read(&mut self, size: usize) -> StreamResult<bytes::Bytes> {
        self.inner.read(size)
    }
    async fn blocking_read(&mut self, size: usize) -> StreamResult<bytes::Bytes> {
        self.inner.blocking_read(size).await
    }
    fn skip(&mut self, n: usize) -> StreamResult<usize> {
        self.inner.skip(n)
    }
    async fn blocking_skip(&mut self, n: usize) -> StreamResult<usize> {
        self.inner.blocking_skip(n).await
    }
    async fn cancel(&mut self) {
        self.inner.cancel().await
    }
}

/// Refuse (trap) a write of `n` bytes past what `check-write` permits now.
/// wasmtime-wasi's file stream took any length and held it whole while a
/// blocking thread wrote it: a write of 64 MiB on each of many streams,
/// each charged [`STREAM_BYTES`], held gigabytes (found by review). The
/// WASI contract makes such a write a trap; `wasi:http` bodies check it too.
fn within_permit(inner: &mut DynOutputStream, n: usize) -> StreamResult<()> {
    let permit = inner.check_write()?;
    if n > permit {
        return Err(StreamError::Trap(wasmtime::format_err!(
            "a file stream write of {n} bytes, past the {permit} `check-write` permits"
        )));
    }
    Ok(())
}

#[async_trait::async_trait]
impl OutputStream for HeldStream<DynOutputStream> {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        within_permit(&mut self.inner, bytes.len())?;
        self.inner.write(bytes)
    }
    fn flush(&mut self) -> StreamResult<()> {
        self.inner.flush()
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        self.inner.check_write()
    }
    async fn blocking_write_and_flush(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.inner.blocking_write_and_flush(bytes).await
    }
    fn write_zeroes(&mut self, n: usize) -> StreamResult<()> {
        within_permit(&mut self.inner, n)?;
        self.inner.write_zeroes(n)
    }
    async fn write_ready(&mut self) -> StreamResult<usize> {
        self.inner.write_ready().await
    }
    async fn cancel(&mut self) {
        self.inner.cancel().await
    }
}

/// What a new file stream holds of its call: [`STREAM_BYTES`] of its
/// memory, and a share in its room for operations.
struct Held {
    charge: crate::caps::limits::HostCharge,
    ops: Arc<StreamOps>,
}

/// [`Held`] for a new file stream, or the note that its memory does not
/// fit (and `None`).
fn hold_stream<T: FsEnforced>(store: &mut T) -> Option<Held> {
    let Some(charge) = store.hold_host(STREAM_BYTES) else {
        let (call, _) = store.fs_parts();
        call.note(format!(
            "a file stream ({} KiB of host memory while it is held) does not fit this call's memory limit",
            STREAM_BYTES >> 10
        ));
        return None;
    };
    let (call, _) = store.fs_parts();
    let descriptors = call.descriptors.clone();
    let ops = call
        .stream_ops
        .get_or_insert_with(|| {
            Arc::new(StreamOps {
                call: Arc::new(tokio::sync::Semaphore::new(STREAM_OPS)),
                descriptors,
            })
        })
        .clone();
    Some(Held { charge, ops })
}

/// Pass a limit the call just hit on to the caller. The sandbox calls it
/// once more when the call ends, for limits hit inside a stream write.
pub(crate) fn warn<T: FsEnforced>(s: &mut T) {
    let (call, _) = s.fs_parts();
    if let Some(m) = call.notice.take() {
        s.fs_warn(m);
    }
}

/// A file output stream whose writes are charged to a quota.
///
/// A stream writes its bytes one after another from where it was opened,
/// so it is charged the blocks its writes reach, each once: one byte
/// written far past the end of a file costs the block it allocates, not one
/// byte. Its writes complete on another thread, so what they allocated
/// past that (larger blocks, huge pages, a file system that fills gaps) is
/// taken at its next write, and, once it is dropped, at its quota's next
/// charge (`Quota::catch_up`).
struct Charged {
    inner: DynOutputStream,
    quota: Arc<Quota>,
    notice: Arc<Notice>,
    /// Where the next write lands.
    pos: u64,
    /// The end of the blocks already charged (a block boundary).
    charged_to: u64,
    /// The file, its blocks when the stream opened, and what the stream
    /// has been charged (`None`: the file could not be looked at).
    account: Option<StreamAccount>,
    /// The charge of the write running on another thread, if any: it
    /// lands when the stream is ready again.
    flying: Option<Flight>,
    /// An append stream: each write lands at the end of the file as it is
    /// then, whatever `pos` says (another descriptor may have appended).
    append: bool,
}

/// What a stream was charged against what its file's blocks grew by.
#[derive(Debug)]
struct StreamAccount {
    file: Arc<std::fs::File>,
    /// Allocated bytes when the stream opened.
    base: u64,
    charged: u64,
    /// What the stream's last write was charged, still in flight when the
    /// stream was dropped (see `Quota::in_flight`).
    flying: u64,
}

impl StreamAccount {
    /// Take what the file's blocks grew by past the charge; the last write
    /// is on disk by now (or counted there by the next measure).
    fn catch_up(self, quota: &Quota) {
        quota.land(self.flying);
        if let Some((_, now)) = allocation(&self.file) {
            quota.take_missed(self.charged, now.saturating_sub(self.base));
        }
    }
}

/// Dropped streams' accounts a quota keeps for its next charge.
const MAX_LATE: usize = 64;

impl Drop for Charged {
    fn drop(&mut self) {
        // Dropped with the store, not by the guest (which cancels first):
        // a write may still be running.
        if let Some(mut a) = self.account.take() {
            a.flying = self.flying.take().map_or(0, Flight::keep);
            self.quota.keep_late(a);
        }
    }
}

impl Charged {
    fn charge(&mut self, n: usize) -> StreamResult<()> {
        // What the earlier writes allocated past their charge, first.
        if let Some(a) = &mut self.account
            && let Some((_, now)) = allocation(&a.file)
        {
            let grown = now.saturating_sub(a.base);
            self.quota.take_missed(a.charged, grown);
            a.charged = a.charged.max(grown);
        }
        let size = self
            .account
            .as_ref()
            .and_then(|a| a.file.metadata().ok())
            .map(|m| m.len());
        if self.append {
            // Appends land at the end as it is now: never over data.
            if let Some(size) = size {
                self.pos = self.pos.max(size);
            }
        } else if let (Some(a), Some(size)) = (&self.account, size)
            && over_data(&a.file, self.pos, n as u64, size)
        {
            // Over data the file already holds, a stream allocates nothing;
            // in flight all the same (see `Quota::fly_uncharged`).
            let (from, to) = blocks_of(self.pos, n as u64);
            self.carry(self.quota.fly_uncharged(to - from));
            self.pos = self.pos.saturating_add(n as u64);
            return Ok(());
        }
        let (from, to) = blocks_of(self.pos, n as u64);
        let from = from.max(self.charged_to);
        if to > from {
            match self.quota.charge(to - from) {
                Some(f) => self.carry(f),
                None => {
                    let m = self.quota.used_up();
                    self.notice.note(m.clone());
                    return Err(StreamError::LastOperationFailed(wasmtime::Error::msg(m)));
                }
            }
        }
        if let Some(a) = &mut self.account {
            a.charged = a.charged.saturating_add(to.saturating_sub(from));
        }
        self.pos = self.pos.saturating_add(n as u64);
        self.charged_to = self.charged_to.max(to);
        Ok(())
    }

    /// Carry `f` with the stream's write about to run.
    fn carry(&mut self, f: Flight) {
        match &mut self.flying {
            Some(flying) => flying.join(f),
            slot => *slot = Some(f),
        }
    }

    /// The stream is ready again: its last write is done, on disk.
    fn landed(&mut self) {
        self.flying = None;
    }
}

#[async_trait::async_trait]
impl Pollable for Charged {
    async fn ready(&mut self) {
        self.inner.ready().await;
        self.landed();
    }
}

#[async_trait::async_trait]
impl OutputStream for Charged {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.charge(bytes.len())?;
        self.inner.write(bytes)
    }
    fn flush(&mut self) -> StreamResult<()> {
        self.inner.flush()
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        let n = self.inner.check_write()?;
        // Room again means the write before is done (a file stream runs
        // one write at a time).
        if n > 0 {
            self.landed();
        }
        Ok(n)
    }
    fn write_zeroes(&mut self, n: usize) -> StreamResult<()> {
        self.charge(n)?;
        self.inner.write_zeroes(n)
    }
    async fn cancel(&mut self) {
        // Waits for a write still running (wasmtime-wasi's file stream
        // does), so what it allocated is known now, not at the quota's next
        // charge, and the file is not held open meanwhile.
        self.inner.cancel().await;
        self.landed();
        if let Some(a) = self.account.take() {
            a.catch_up(&self.quota);
        }
    }
}

type R<T> = Result<T, t::ErrorCode>;

/// Turn wasmtime-wasi's error into the guest's error code (or a trap).
/// What a special file is, for messages (`None`: a file, directory or
/// symlink, which may be opened).
fn special_kind(ty: t::DescriptorType) -> Option<&'static str> {
    use t::DescriptorType as D;
    match ty {
        D::RegularFile | D::Directory | D::SymbolicLink => None,
        D::Fifo => Some("a FIFO"),
        D::Socket => Some("a socket"),
        D::BlockDevice | D::CharacterDevice => Some("a device"),
        D::Unknown => Some("not a file"),
    }
}

/// The kernel's interface file systems, by `statfs` magic: their files
/// are live state of the host and of other processes, not data. A grant
/// of `/proc` read the host's own environment (`/proc/self/environ`: its
/// bearer token and state key) and could write its memory
/// (`/proc/self/mem`); `/sys`, cgroup, bpf and efivarfs files reconfigure
/// the machine. Found by review. No grant may be one, and no file or
/// directory under a grant may be opened on one (a mount inside a granted
/// tree).
pub(super) const KERNEL_FILE_SYSTEMS: &[(u32, &str)] = &[
    (0x0000_9fa0, "proc"),
    (0x6265_6572, "sysfs"),
    (0x6462_6720, "debugfs"),
    (0x7472_6163, "tracefs"),
    (0x7363_6673, "securityfs"),
    (0x0027_e0eb, "cgroup"),
    (0x6367_7270, "cgroup2"),
    (0xcafe_4a11, "bpf"),
    (0x0000_1cd1, "devpts"),
    (0xde5e_81e4, "efivarfs"),
    (0x6265_6570, "configfs"),
    (0x6165_676c, "pstore"),
    (0x4249_4e4d, "binfmt_misc"),
    (0x6573_5543, "fusectl"),
    (0xf97c_ff8c, "selinuxfs"),
    (0x4341_5d53, "smackfs"),
    (0x1980_0202, "mqueue"),
    (0x0765_5821, "resctrl"),
    (0x6e73_6673, "nsfs"),
    (0x0000_9fa1, "openpromfs"),
    (0x0000_9fa2, "usbdevfs"),
    (0xabba_1974, "xenfs"),
    (0x6759_6969, "rpc_pipefs"),
    (0x9584_58f6, "hugetlbfs"),
    (0x6e66_7364, "nfsd"),
    (0x6c6f_6f70, "binder"),
];

/// The name of the kernel interface file system `f` is on
/// ([`KERNEL_FILE_SYSTEMS`]), if it is on one. A file system `fstatfs`
/// cannot name is reported as `"unknown"`: refused too.
pub(super) fn kernel_fs(f: &impl std::os::fd::AsFd) -> Option<&'static str> {
    use std::os::fd::AsRawFd;
    // SAFETY: fstatfs writes only the struct it is given, and `f` is an
    // open descriptor for the duration of the call.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatfs(f.as_fd().as_raw_fd(), &mut st) } != 0 {
        return Some("unknown");
    }
    // `f_type` is a signed word of a width that differs by architecture;
    // every magic fits in 32 bits.
    let magic = st.f_type as u64 as u32;
    KERNEL_FILE_SYSTEMS
        .iter()
        .find(|(m, _)| *m == magic)
        .map(|(_, name)| *name)
}

/// Why [`open_at`] gave no descriptor.
#[derive(Debug)]
enum Opened {
    /// The entry is a FIFO, socket or device (named for the message).
    Special(&'static str),
    /// Refused before asking the OS (permissions, flag combinations).
    Refused(t::ErrorCode),
    /// The OS refused.
    Io(std::io::Error),
}

/// `descriptor.open-at`, as wasmtime-wasi 48's `Dir::open_at` does it
/// (same flags, permissions and sandboxed path resolution through
/// cap-primitives), except that the entry is opened **non-blocking** and
/// what was opened is checked with `fstat`: a FIFO, socket or device is
/// closed again and refused. Checking first (`stat-at`) and opening after
/// would leave a window in which another call renames a FIFO over the name,
/// and a blocking `open` of a FIFO holds a host thread until a peer
/// appears (SECURITY.md M2). Written here because wasmtime-wasi offers no
/// way to pass open flags of our own.
async fn open_at(
    dir: &wasmtime_wasi::filesystem::Dir,
    pf: t::PathFlags,
    path: String,
    of: t::OpenFlags,
    fl: t::DescriptorFlags,
) -> Result<wasmtime_wasi::filesystem::Descriptor, Opened> {
    use wasmtime_wasi::OpenMode;
    use wasmtime_wasi::filesystem::{Descriptor, Dir, File};

    let (opts, mode) = open_options(pf, of, fl)?;
    if dir.perms.write_not_permitted() && mode.contains(OpenMode::WRITE) {
        return Err(Opened::Refused(t::ErrorCode::NotPermitted));
    }
    let base = dir.dir.clone();
    let want_dir = of.contains(t::OpenFlags::DIRECTORY);
    let opened = tokio::task::spawn_blocking(move || open_checked(&base, &path, &opts))
        .await
        .map_err(|e| Opened::Io(std::io::Error::other(e)))??;
    // wasmtime-wasi's `allow_blocking_current_thread` is off in every
    // sandbox toolhost builds (the default), so descriptors are made so too.
    match opened {
        (true, d) => Ok(Descriptor::Dir(Dir::new(d, dir.perms, mode, false))),
        (false, _) if want_dir => Err(Opened::Refused(t::ErrorCode::NotDirectory)),
        (false, f) => Ok(Descriptor::File(File::new(f, dir.perms, mode, false))),
    }
}

/// The OS open options and the descriptor's mode for `open-at`'s flags, as
/// wasmtime-wasi 48 makes them, plus `O_NONBLOCK | O_NOCTTY`; the flag
/// combinations it refuses, refused.
fn open_options(
    pf: t::PathFlags,
    of: t::OpenFlags,
    fl: t::DescriptorFlags,
) -> Result<(cap_primitives::fs::OpenOptions, wasmtime_wasi::OpenMode), Opened> {
    use cap_primitives::fs::{FollowSymlinks, OpenOptions, OpenOptionsExt};
    use wasmtime_wasi::OpenMode;
    let mut opts = OpenOptions::new();
    let mut mode = OpenMode::empty();
    if of.contains(t::OpenFlags::CREATE) {
        if of.contains(t::OpenFlags::EXCLUSIVE) {
            opts.create_new(true);
        } else {
            opts.create(true);
        }
        opts.write(true);
        mode |= OpenMode::WRITE;
    }
    if of.contains(t::OpenFlags::TRUNCATE) {
        opts.truncate(true).write(true);
        mode |= OpenMode::WRITE;
    }
    if fl.contains(t::DescriptorFlags::READ) {
        opts.read(true);
        mode |= OpenMode::READ;
    }
    if fl.contains(t::DescriptorFlags::WRITE) {
        opts.write(true);
        mode |= OpenMode::WRITE;
    } else {
        // As wasmtime-wasi: open for reading so the OS allows it; the
        // descriptor's permissions refuse what was not asked for.
        opts.read(true);
        mode |= OpenMode::READ;
    }
    // (`_cap_fs_ext_follow` is the public spelling cap-fs-ext uses.)
    opts._cap_fs_ext_follow(if pf.contains(t::PathFlags::SYMLINK_FOLLOW) {
        FollowSymlinks::Yes
    } else {
        FollowSymlinks::No
    });
    // Never block in `open` (FIFOs), never take a controlling terminal.
    opts.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    if fl.intersects(
        t::DescriptorFlags::FILE_INTEGRITY_SYNC
            | t::DescriptorFlags::DATA_INTEGRITY_SYNC
            | t::DescriptorFlags::REQUESTED_WRITE_SYNC,
    ) {
        return Err(Opened::Refused(t::ErrorCode::Unsupported));
    }
    if of.contains(t::OpenFlags::DIRECTORY)
        && of.intersects(t::OpenFlags::CREATE | t::OpenFlags::EXCLUSIVE | t::OpenFlags::TRUNCATE)
    {
        return Err(Opened::Refused(t::ErrorCode::Invalid));
    }
    Ok((opts, mode))
}

/// Open `path` under `base` (blocking: run it off the async threads),
/// refuse what is not a file or directory by what was opened, and set the
/// descriptor back to blocking I/O. Whether it is a directory, and it.
fn open_checked(
    base: &std::fs::File,
    path: &str,
    opts: &cap_primitives::fs::OpenOptions,
) -> Result<(bool, std::fs::File), Opened> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileTypeExt;
    let f = cap_primitives::fs::open(base, path.as_ref(), opts).map_err(Opened::Io)?;
    let ft = f.metadata().map_err(Opened::Io)?.file_type();
    // What was opened is never a symlink (`O_NOFOLLOW` refuses one).
    let ty = if ft.is_file() {
        t::DescriptorType::RegularFile
    } else if ft.is_dir() {
        t::DescriptorType::Directory
    } else if ft.is_fifo() {
        t::DescriptorType::Fifo
    } else if ft.is_socket() {
        t::DescriptorType::Socket
    } else if ft.is_block_device() || ft.is_char_device() {
        t::DescriptorType::CharacterDevice
    } else {
        t::DescriptorType::Unknown
    };
    if let Some(kind) = special_kind(ty) {
        return Err(Opened::Special(kind));
    }
    // A file system mounted inside the granted tree (the grant itself is
    // checked at load, `prepare_one`).
    if kernel_fs(&f).is_some() {
        return Err(Opened::Special("on a kernel interface file system"));
    }
    // Back to blocking I/O, as wasmtime-wasi's descriptors expect (for
    // files and directories the flag changes nothing anyway).
    // SAFETY: fcntl on a descriptor this function owns.
    unsafe {
        let fd = f.as_raw_fd();
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
    }
    Ok((ft.is_dir(), f))
}

fn code(
    view: &mut WasiFilesystemCtxView<'_>,
    e: wasmtime_wasi::p2::FsError,
) -> wasmtime::Result<t::ErrorCode> {
    t::Host::convert_error_code(view, e)
}

/// The disk's block size as quotas count it (the usual file system block
/// and page size; a larger block only means a write is charged less than
/// it took until the next measure).
const BLOCK: u64 = 4096;

/// The block-aligned byte range `[from, to)` that `len` bytes written at
/// `off` reach (empty for an empty write).
fn blocks_of(off: u64, len: u64) -> (u64, u64) {
    if len == 0 {
        return (off, off);
    }
    let end = off.saturating_add(len);
    let from = off - off % BLOCK;
    let to = end.div_ceil(BLOCK).saturating_mul(BLOCK);
    (from, to)
}

/// The most a positioned write of `len` bytes at `off` into a file of
/// `size` bytes can allocate: the blocks it reaches, and the gap it opens
/// past the end of the file (a file system without sparse files fills it).
fn write_bound(off: u64, len: u64, size: u64) -> u64 {
    let (from, to) = blocks_of(off, len);
    (to - from).saturating_add(off.saturating_sub(size))
}

/// Whether the guest opened `fd` for writing. wasmtime-wasi checks only
/// the grant's permissions before a write, not the descriptor's flags, and
/// `create` or `truncate` opens the host file writable whatever they say:
/// a descriptor opened to read could write past the quota's tracking.
fn opened_for_writing(view: &WasiFilesystemCtxView<'_>, fd: &Resource<t::Descriptor>) -> bool {
    match view.table.get(fd) {
        Ok(wasmtime_wasi::filesystem::Descriptor::File(f)) => f
            .open_mode
            .contains(wasmtime_wasi::filesystem::OpenMode::WRITE),
        _ => true,
    }
}

/// The open file behind a guest's descriptor (`None` for a directory).
fn file_of(
    view: &WasiFilesystemCtxView<'_>,
    fd: &Resource<t::Descriptor>,
) -> Option<Arc<std::fs::File>> {
    match view.table.get(fd).ok()? {
        wasmtime_wasi::filesystem::Descriptor::File(f) => Some(f.file.clone()),
        wasmtime_wasi::filesystem::Descriptor::Dir(_) => None,
    }
}

/// Whether `len` bytes at `off` of `file` (`size` bytes long) lie wholly
/// over data it already holds: no hole, not past its end (`SEEK_DATA` and
/// `SEEK_HOLE`; positioned I/O only, so moving the file's offset is
/// harmless). Any doubt says no.
fn over_data(file: &std::fs::File, off: u64, len: u64, size: u64) -> bool {
    use std::os::fd::AsRawFd;
    if len == 0 {
        return true;
    }
    let Some(end) = off.checked_add(len).filter(|e| *e <= size) else {
        return false;
    };
    let Ok(at) = libc::off_t::try_from(off) else {
        return false;
    };
    let fd = file.as_raw_fd();
    // SAFETY: `lseek` on a descriptor `file` owns for the call's length;
    // no memory is passed.
    let (data, hole) = unsafe {
        (
            libc::lseek(fd, at, libc::SEEK_DATA),
            libc::lseek(fd, at, libc::SEEK_HOLE),
        )
    };
    data == at && u64::try_from(hole).is_ok_and(|h| h >= end)
}

/// Size and allocated bytes of an open file (`fstat`).
fn allocation(file: &std::fs::File) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = file.metadata().ok()?;
    Some((m.size(), m.blocks().saturating_mul(512)))
}

/// What a new directory is charged to a quota: one block.
const DIRECTORY_BYTES: u64 = 4096;

/// What a new file, symlink or hard link is charged: one block, so a loop
/// creating empty entries cannot fill the inode table or make measuring slow.
const ENTRY_BYTES: u64 = 4096;

/// A measure that a deletion asks for waits until this many times the last
/// measure's length has passed since it, if that one was slow (see
/// [`Quota::charge`]).
const MEASURE_DUTY: u32 = 9;

/// A measure shorter than this is not held back by [`MEASURE_DUTY`].
const MEASURE_SLOW: std::time::Duration = std::time::Duration::from_millis(1);

/// The walks beside calls: how many threads run them, and the quotas
/// waiting for one (see [`Quota::measure_beside`]).
struct Walks {
    running: usize,
    queue: std::collections::VecDeque<std::sync::Weak<Quota>>,
}

fn walks() -> std::sync::MutexGuard<'static, Walks> {
    static WALKS: Mutex<Walks> = Mutex::new(Walks {
        running: 0,
        queue: std::collections::VecDeque::new(),
    });
    WALKS.lock().unwrap_or_else(|e| e.into_inner())
}

/// The most entries a walk looks at on the thread of the charge that found
/// it due (a few milliseconds); a grant with more is walked on a thread of
/// its own (see [`Quota::charge`]).
const INLINE_ENTRIES: usize = 2048;

/// Walks on threads of their own at once, in the process.
const MAX_WALKERS: usize = 2;

/// How old a measure may be before a refused write measures again even
/// when nothing was deleted through the sandbox.
const REMEASURE_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

const TYPES: &str = "wasi:filesystem/types@0.2.12";
const PREOPENS: &str = "wasi:filesystem/preopens@0.2.12";

/// Shadow the descriptor-creating and writing functions of
/// `wasi:filesystem` in `linker` (which already has wasmtime-wasi's).
pub(crate) fn add_to_linker<T: FsEnforced>(linker: &mut Linker<T>) -> anyhow::Result<()> {
    linker.allow_shadowing(true);
    shadow_get_directories(&mut linker.instance(PREOPENS)?)?;
    let mut i = linker.instance(TYPES)?;
    shadow_read_directory(&mut i)?;
    shadow_open_at(&mut i)?;
    shadow_write(&mut i)?;
    shadow_set_size(&mut i)?;
    shadow_create_directory_at(&mut i)?;
    shadow_links(&mut i)?;
    shadow_set_times_at(&mut i)?;
    shadow_removals(&mut i)?;
    shadow_rename_at(&mut i)?;
    shadow_output_streams(&mut i)?;
    shadow_input_streams(&mut i)?;
    shadow_metadata_hashes(&mut i)?;
    Ok(())
}

/// `get-directories`: notes which grant each preopened directory is, and
/// does not count the preopens against the call's open descriptors.
fn shadow_get_directories<T: FsEnforced>(i: &mut LinkerInstance<'_, T>) -> anyhow::Result<()> {
    i.func_wrap("get-directories", |mut store, (): ()| {
        let (call, mut view) = store.data_mut().fs_parts();
        // A start-up run ahead of its call touches no file: its operations
        // would run outside any call (a blocking one outlived the failed
        // preparation, charged to no one), and what they returned, or did
        // not, told the start-up it ran ahead (found by review). Without
        // the preopens it has no descriptor; asking for them traps (the
        // call builds its own sandbox; after four failures, every call).
        if call.is_ahead() {
            return Err(wasmtime::Error::msg(
                "the component's start-up asks for its directories; it is started with each call instead of ahead of it",
            ));
        }
        let dirs = preopens::Host::get_directories(&mut view)?;
        for (d, guest) in &dirs {
            if let Some(i) = call.grants.iter().position(|(g, _)| g == guest) {
                call.grant_of.insert(d.rep(), i);
            }
        }
        Ok((dirs,))
    })?;
    Ok(())
}

/// Entries a listing reads from the directory at once, and the host
/// memory it holds for them (names of up to 255 bytes, the entries).
const LISTING_BATCH: usize = 128;
const LISTING_BYTES: usize = LISTING_BATCH * (255 + 64) + 1024;

/// A directory listing, read as the guest takes it: `LISTING_BATCH`
/// entries at a time, each batch in the host call that asks for an entry
/// of it, on the guest's thread and within its turn. wasmtime-wasi's read
/// the whole directory, with a `stat` of each entry, on a blocking thread
/// in one host call, and held it all: a guest listing a directory of
/// 200,000 files in a loop spent half a second of host CPU per listing
/// outside its tenant's turn and its fuel, for 8,000 fuel a call (found by
/// review). The type of an entry is the directory's own (`d_type`); only
/// where the file system does not say is the entry looked at.
///
/// The listing reads one descriptor of the directory of its own, opened
/// when the stream is made and counted among the call's open files (a
/// first version opened one per batch and sought to where the last ended,
/// which on an overlayfs directory rebuilt the merged listing at every
/// batch: found by the review of the fix).
struct Listing {
    dir: Arc<std::fs::File>,
    entries: rustix::fs::Dir,
    batch: std::collections::VecDeque<Result<t::DirectoryEntry, t::ErrorCode>>,
    done: bool,
    /// `LISTING_BYTES` of the call's memory, while the stream lives.
    _charge: crate::caps::limits::HostCharge,
    /// Its descriptor, among the call's open files.
    _open: Slot,
}

impl Listing {
    /// A listing of `dir`, through a descriptor of its own (`dir` may be
    /// one that cannot be read, opened for its path only).
    fn open(
        dir: Arc<std::fs::File>,
        charge: crate::caps::limits::HostCharge,
        open: Slot,
    ) -> Result<Listing, t::ErrorCode> {
        use rustix::fs::{Mode, OFlags};
        let fd = rustix::fs::openat(
            &*dir,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOCTTY,
            Mode::empty(),
        )
        .map_err(errno)?;
        Ok(Listing {
            dir,
            entries: rustix::fs::Dir::new(fd).map_err(errno)?,
            batch: Default::default(),
            done: false,
            _charge: charge,
            _open: open,
        })
    }

    fn next(&mut self) -> Result<Option<t::DirectoryEntry>, t::ErrorCode> {
        if self.batch.is_empty() && !self.done {
            self.read_batch();
        }
        self.batch.pop_front().transpose()
    }

    /// The next entries (up to `LISTING_BATCH`); an error is the last.
    fn read_batch(&mut self) {
        use rustix::fs::FileType as F;
        while self.batch.len() < LISTING_BATCH {
            let entry = match self.entries.read() {
                None => {
                    self.done = true;
                    break;
                }
                Some(Err(e)) => {
                    self.done = true;
                    self.batch.push_back(Err(errno(e)));
                    break;
                }
                Some(Ok(entry)) => entry,
            };
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let type_ = match entry.file_type() {
                F::Unknown => rustix::fs::statat(
                    &*self.dir,
                    entry.file_name(),
                    rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_or(F::Unknown, |st| F::from_raw_mode(st.st_mode)),
                known => known,
            };
            let type_ = match type_ {
                F::Directory => t::DescriptorType::Directory,
                F::RegularFile => t::DescriptorType::RegularFile,
                F::Symlink => t::DescriptorType::SymbolicLink,
                F::Fifo => t::DescriptorType::Fifo,
                F::Socket => t::DescriptorType::Socket,
                F::CharacterDevice => t::DescriptorType::CharacterDevice,
                F::BlockDevice => t::DescriptorType::BlockDevice,
                F::Unknown => t::DescriptorType::Unknown,
            };
            self.batch.push_back(match std::str::from_utf8(name) {
                Ok(name) => Ok(t::DirectoryEntry {
                    type_,
                    name: name.to_string(),
                }),
                Err(_) => Err(t::ErrorCode::IllegalByteSequence),
            });
        }
    }
}

/// An error of the system's as WASI names it.
fn errno(e: rustix::io::Errno) -> t::ErrorCode {
    use rustix::io::Errno as E;
    match e {
        E::ACCESS | E::PERM => t::ErrorCode::Access,
        E::NOENT => t::ErrorCode::NoEntry,
        E::NOTDIR => t::ErrorCode::NotDirectory,
        E::NOMEM => t::ErrorCode::InsufficientMemory,
        E::MFILE | E::NFILE => t::ErrorCode::InsufficientMemory,
        E::INVAL => t::ErrorCode::Invalid,
        E::OVERFLOW => t::ErrorCode::Overflow,
        _ => t::ErrorCode::Io,
    }
}

/// `read-directory`, `read-directory-entry` and the listing stream's
/// destructor: toolhost's own [`Listing`], charged to the call's memory
/// while the stream lives.
fn shadow_read_directory<T: FsEnforced>(i: &mut LinkerInstance<'_, T>) -> anyhow::Result<()> {
    i.func_wrap(
        "[method]descriptor.read-directory",
        |mut store, (fd,): (Resource<t::Descriptor>,)| {
            let out = (|| {
                let dir = {
                    let (_, view) = store.data_mut().fs_parts();
                    match view.table.get(&fd)? {
                        wasmtime_wasi::filesystem::Descriptor::Dir(d) => d.dir.clone(),
                        wasmtime_wasi::filesystem::Descriptor::File(_) => {
                            return Ok((R::Err(t::ErrorCode::NotDirectory),));
                        }
                    }
                };
                let Some(charge) = store.data_mut().hold_host(LISTING_BYTES) else {
                    let (call, _) = store.data_mut().fs_parts();
                    call.note(format!(
                        "a directory listing holds {} KiB of host memory while its stream lives, which does not fit this call's memory limit",
                        LISTING_BYTES.div_ceil(1024)
                    ));
                    return Ok((R::Err(t::ErrorCode::InsufficientMemory),));
                };
                let open = {
                    let (call, _) = store.data_mut().fs_parts();
                    match call.descriptors().slot() {
                        Ok(open) => open,
                        Err(why) => {
                            call.note(format!("a directory listing holds a descriptor: {why}"));
                            return Ok((R::Err(t::ErrorCode::InsufficientMemory),));
                        }
                    }
                };
                let listing = match Listing::open(dir, charge, open) {
                    Ok(l) => l,
                    Err(e) => return Ok((R::Err(e),)),
                };
                let (_, view) = store.data_mut().fs_parts();
                let rep = view.table.push(listing)?.rep();
                Ok((R::Ok(Resource::<t::DirectoryEntryStream>::new_own(rep)),))
            })();
            warn(store.data_mut());
            out
        },
    )?;
    i.func_wrap(
        "[method]directory-entry-stream.read-directory-entry",
        |mut store, (stream,): (Resource<t::DirectoryEntryStream>,)| {
            let (_, view) = store.data_mut().fs_parts();
            let listing = view
                .table
                .get_mut(&Resource::<Listing>::new_borrow(stream.rep()))?;
            Ok((listing.next(),))
        },
    )?;
    i.resource(
        "directory-entry-stream",
        wasmtime::component::ResourceType::host::<t::DirectoryEntryStream>(),
        |mut store, rep| {
            let (_, view) = store.data_mut().fs_parts();
            view.table.delete(Resource::<Listing>::new_own(rep))?;
            Ok(())
        },
    )?;
    Ok(())
}

/// `open-at`: toolhost's own [`open_at`], refusing special files, charging a
/// created entry to the quota and counting the new descriptor.
fn shadow_open_at<T: FsEnforced>(i: &mut LinkerInstance<'_, T>) -> anyhow::Result<()> {
    i.func_wrap_async(
        "[method]descriptor.open-at",
        |mut store,
         (fd, pf, path, of, fl): (
            Resource<t::Descriptor>,
            t::PathFlags,
            String,
            t::OpenFlags,
            t::DescriptorFlags,
        )| {
            Box::new(async move {
                let out = async {
                let (call, mut view) = store.data_mut().fs_parts();
                let parent = fd.rep();
                let borrow = || Resource::<t::Descriptor>::new_borrow(parent);
                // A look first: a special file is refused without being
                // opened at all (opening a device runs its driver; opening a
                // FIFO, even non-blocking, lets a waiting peer through).
                // `open_at` checks again what it opened, which is what
                // decides: the name can change between the two.
                let exists =
                    t::HostDescriptor::stat_at(&mut view, borrow(), pf, path.clone()).await;
                if let Ok(st) = &exists
                    && let Some(kind) = special_kind(st.type_)
                {
                    call.note(format!(
                        "`{path}` is not a regular file or directory ({kind}); tools may not open it"
                    ));
                    return Ok((R::Err(t::ErrorCode::Access),));
                }
                // A new entry is charged like any write (the quota's
                // `ENTRY_BYTES`); whether it is new is known only roughly
                // before the open, which is all a charge needs.
                let _flight = if exists.is_err() && of.contains(t::OpenFlags::CREATE) {
                    match call.charge(parent, ENTRY_BYTES) {
                        Ok(f) => f,
                        Err(e) => return Ok((R::Err(e),)),
                    }
                } else {
                    None
                };
                let dir = match view.table.get(&fd)? {
                    wasmtime_wasi::filesystem::Descriptor::Dir(d) => d.clone(),
                    wasmtime_wasi::filesystem::Descriptor::File(_) => {
                        return Ok((R::Err(t::ErrorCode::NotDirectory),));
                    }
                };
                if let Err(e) = call.reserve() {
                    return Ok((R::Err(e),));
                }
                match open_at(&dir, pf, path.clone(), of, fl).await {
                    Ok(desc) => {
                        let held = match &desc {
                            wasmtime_wasi::filesystem::Descriptor::File(f) => &f.file,
                            wasmtime_wasi::filesystem::Descriptor::Dir(d) => &d.dir,
                        };
                        call.opened(held);
                        let d = view.table.push(desc)?;
                        match call.grant_of.get(&parent).copied() {
                            Some(g) => call.grant_of.insert(d.rep(), g),
                            None => call.grant_of.remove(&d.rep()),
                        };
                        // Every file, whatever its flags: any open descriptor
                        // keeps a deleted file's blocks.
                        if let Some(quota) = call.quota_of(d.rep())
                            && let Some(file) = file_of(&view, &d)
                        {
                            quota.track_writer(&file);
                            // Truncating a file that had data frees it (not
                            // a new one: marking that would measure, and so
                            // credit every empty file's entry charge, at each
                            // refusal).
                            if of.contains(t::OpenFlags::TRUNCATE)
                                && exists.as_ref().is_ok_and(|st| st.size > 0)
                            {
                                quota.note_freed();
                            }
                        }
                        Ok((R::Ok(d),))
                    }
                    Err(Opened::Special(kind)) => {
                        call.unreserve();
                        call.note(format!(
                            "`{path}` is not a regular file or directory ({kind}); tools may not open it"
                        ));
                        Ok((R::Err(t::ErrorCode::Access),))
                    }
                    Err(Opened::Refused(e)) => {
                        call.unreserve();
                        Ok((R::Err(e),))
                    }
                    Err(Opened::Io(e)) => {
                        call.unreserve();
                        Ok((R::Err(code(&mut view, e.into())?),))
                    }
                }
                }
                .await;
                warn(store.data_mut());
                out
            })
        },
    )?;
    Ok(())
}

/// `write` (positioned): charged to the quota what it can allocate, settled
/// to what it did.
fn shadow_write<T: FsEnforced>(i: &mut LinkerInstance<'_, T>) -> anyhow::Result<()> {
    i.func_wrap_async(
        "[method]descriptor.write",
        |mut store, (fd, buf, off): (Resource<t::Descriptor>, Vec<u8>, u64)| {
            Box::new(async move {
                let out = async {
                    let (call, mut view) = store.data_mut().fs_parts();
                    // Charged, before it runs, what the write can allocate:
                    // nothing over data the file already holds (asked of the
                    // file system, `SEEK_DATA`/`SEEK_HOLE`), else the blocks
                    // it reaches and the gap it opens; after it, whatever the
                    // file's blocks grew by past that is taken, and the part
                    // of the gap they did not grow by given back. A sparse
                    // write costs its block, an overwrite nothing.
                    let rep = fd.rep();
                    if !opened_for_writing(&view, &fd) {
                        return Ok((R::<u64>::Err(t::ErrorCode::BadDescriptor),));
                    }
                    let charged = match (call.quota_of(rep), file_of(&view, &fd)) {
                        (Some(quota), Some(file)) => {
                            let (size, before) = allocation(&file).unwrap_or((0, 0));
                            let len = buf.len() as u64;
                            let over = over_data(&file, off, len, size);
                            let bound = if over { 0 } else { write_bound(off, len, size) };
                            let flight = if over {
                                // Free, but in flight: a truncate and a
                                // measure before it lands must still see it.
                                let (from, to) = blocks_of(off, len);
                                Some(quota.fly_uncharged(to - from))
                            } else {
                                match call.charge(rep, bound) {
                                    Ok(f) => f,
                                    Err(e) => return Ok((R::<u64>::Err(e),)),
                                }
                            };
                            let gap = off.saturating_sub(size).min(bound);
                            let landing = Landing {
                                flight,
                                file: file.clone(),
                                base: before,
                                charged: bound,
                            };
                            Some((quota.epoch(), quota, file, before, bound, gap, landing))
                        }
                        _ => None,
                    };
                    let written = t::HostDescriptor::write(&mut view, fd, buf, off).await;
                    if let Some((epoch, quota, file, before, bound, gap, landing)) = charged {
                        // On disk now, where a measure finds it (a measure
                        // that ran meanwhile counted the charge instead).
                        landing.done();
                        let after = allocation(&file).map_or(before, |(_, a)| a);
                        let grown = after.saturating_sub(before);
                        quota.take_missed(bound, grown);
                        // The gap a sparse file did not fill is given back
                        // (never the blocks the write reached: a file system
                        // that reports its blocks late must not get a write
                        // for free).
                        quota.give_back(gap.min(bound.saturating_sub(grown)), epoch);
                    }
                    Ok((match written {
                        Ok(n) => Ok(n),
                        Err(e) => Err(code(&mut view, e)?),
                    },))
                }
                .await;
                warn(store.data_mut());
                out
            })
        },
    )?;
    Ok(())
}

/// `set-size`: growing a file is charged to the quota.
fn shadow_set_size<T: FsEnforced>(i: &mut LinkerInstance<'_, T>) -> anyhow::Result<()> {
    i.func_wrap_async(
        "[method]descriptor.set-size",
        |mut store, (fd, size): (Resource<t::Descriptor>, u64)| {
            Box::new(async move {
                let out = async {
                    let (call, mut view) = store.data_mut().fs_parts();
                    let rep = fd.rep();
                    if !opened_for_writing(&view, &fd) {
                        return Ok((R::<()>::Err(t::ErrorCode::BadDescriptor),));
                    }
                    let now = t::HostDescriptor::stat(&mut view, Resource::new_borrow(rep))
                        .await
                        .map(|s| s.size)
                        .unwrap_or(0);
                    let _flight = match call.charge(rep, size.saturating_sub(now)) {
                        Ok(f) => f,
                        Err(e) => return Ok((R::<()>::Err(e),)),
                    };
                    // Shrinking frees blocks: the next refusal measures.
                    if size < now
                        && let Some(q) = call.quota_of(rep)
                    {
                        q.note_freed();
                    }
                    Ok((
                        match t::HostDescriptor::set_size(&mut view, fd, size).await {
                            Ok(()) => Ok(()),
                            Err(e) => Err(code(&mut view, e)?),
                        },
                    ))
                }
                .await;
                warn(store.data_mut());
                out
            })
        },
    )?;
    Ok(())
}

/// `create-directory-at`: a new directory is charged to the quota.
fn shadow_create_directory_at<T: FsEnforced>(i: &mut LinkerInstance<'_, T>) -> anyhow::Result<()> {
    i.func_wrap_async(
        "[method]descriptor.create-directory-at",
        |mut store, (fd, path): (Resource<t::Descriptor>, String)| {
            Box::new(async move {
                let out = async {
                    let (call, mut view) = store.data_mut().fs_parts();
                    // A directory takes a block on disk: charged, so a loop
                    // of `mkdir` cannot fill the disk or its inodes.
                    let _flight = match call.charge(fd.rep(), DIRECTORY_BYTES) {
                        Ok(f) => f,
                        Err(e) => return Ok((R::<()>::Err(e),)),
                    };
                    Ok((
                        match t::HostDescriptor::create_directory_at(&mut view, fd, path).await {
                            Ok(()) => Ok(()),
                            Err(e) => Err(code(&mut view, e)?),
                        },
                    ))
                }
                .await;
                warn(store.data_mut());
                out
            })
        },
    )?;
    Ok(())
}

/// `symlink-at` and `link-at`: a new name is charged to the quota.
fn shadow_links<T: FsEnforced>(i: &mut LinkerInstance<'_, T>) -> anyhow::Result<()> {
    i.func_wrap_async(
        "[method]descriptor.symlink-at",
        |mut store, (fd, old, new): (Resource<t::Descriptor>, String, String)| {
            Box::new(async move {
                let out = async {
                    let (call, mut view) = store.data_mut().fs_parts();
                    let _flight = match call.charge(fd.rep(), ENTRY_BYTES) {
                        Ok(f) => f,
                        Err(e) => return Ok((R::<()>::Err(e),)),
                    };
                    Ok((
                        match t::HostDescriptor::symlink_at(&mut view, fd, old, new).await {
                            Ok(()) => Ok(()),
                            Err(e) => Err(code(&mut view, e)?),
                        },
                    ))
                }
                .await;
                warn(store.data_mut());
                out
            })
        },
    )?;
    i.func_wrap_async(
        "[method]descriptor.link-at",
        |mut store,
         (fd, pf, old, to, new): (
            Resource<t::Descriptor>,
            t::PathFlags,
            String,
            Resource<t::Descriptor>,
            String,
        )| {
            Box::new(async move {
                let out = async {
                    let (call, mut view) = store.data_mut().fs_parts();
                    // A hard link into another grant would put the file's
                    // blocks under a quota that was charged one entry: as a
                    // different device, like a directory renamed across.
                    if call.grant_of.get(&fd.rep()) != call.grant_of.get(&to.rep()) {
                        return Ok((R::<()>::Err(t::ErrorCode::CrossDevice),));
                    }
                    // The new name is charged to the directory it lands in.
                    let _flight = match call.charge(to.rep(), ENTRY_BYTES) {
                        Ok(f) => f,
                        Err(e) => return Ok((R::<()>::Err(e),)),
                    };
                    Ok((
                        match t::HostDescriptor::link_at(&mut view, fd, pf, old, to, new).await {
                            Ok(()) => Ok(()),
                            Err(e) => Err(code(&mut view, e)?),
                        },
                    ))
                }
                .await;
                warn(store.data_mut());
                out
            })
        },
    )?;
    Ok(())
}

/// `metadata-hash` and `metadata-hash-at`: wasmtime-wasi hashes a file's
/// device and inode numbers with SipHash under a fixed key, so a guest
/// inverted its grant's hash in 0.1 s into the host's device and inode
/// numbers, and read an identity of the directory that was the same in
/// every call, tenant and restart (two tenants granted one directory could
/// tell; found by review). WASI asks that the inputs not be computable from
/// the hash. The host's value is hashed again, keyed by a secret of the
/// process and a number of the call's own: equal within the call (what a
/// guest compares it for, as `st_ino`), unrelated across calls.
fn shadow_metadata_hashes<T: FsEnforced>(i: &mut LinkerInstance<'_, T>) -> anyhow::Result<()> {
    i.func_wrap_async(
        "[method]descriptor.metadata-hash",
        |mut store, (fd,): (Resource<t::Descriptor>,)| {
            Box::new(async move {
                let (call, mut view) = store.data_mut().fs_parts();
                let nonce = call.hash_nonce();
                Ok((
                    match t::HostDescriptor::metadata_hash(&mut view, fd).await {
                        Ok(v) => Ok(rekeyed(nonce, v).ok_or_else(no_secret)?),
                        Err(e) => Err(code(&mut view, e)?),
                    },
                ))
            })
        },
    )?;
    i.func_wrap_async(
        "[method]descriptor.metadata-hash-at",
        |mut store, (fd, pf, path): (Resource<t::Descriptor>, t::PathFlags, String)| {
            Box::new(async move {
                let (call, mut view) = store.data_mut().fs_parts();
                let nonce = call.hash_nonce();
                Ok((
                    match t::HostDescriptor::metadata_hash_at(&mut view, fd, pf, path).await {
                        Ok(v) => Ok(rekeyed(nonce, v).ok_or_else(no_secret)?),
                        Err(e) => Err(code(&mut view, e)?),
                    },
                ))
            })
        },
    )?;
    Ok(())
}

fn no_secret() -> wasmtime::Error {
    wasmtime::Error::msg("the host has no random key to hash file identities with")
}

/// `v` hashed again under the process's secret and the call's `nonce`;
/// `None` (the call traps) if the kernel gave no secret: no key is made
/// up in its place.
fn rekeyed(nonce: u64, v: t::MetadataHashValue) -> Option<t::MetadataHashValue> {
    static SECRET: OnceLock<Option<[u8; 32]>> = OnceLock::new();
    let secret = SECRET
        .get_or_init(|| {
            let mut key = [0u8; 32];
            // The kernel's pool is ready long before a tool runs; 32 bytes
            // come whole or not at all.
            rustix::rand::getrandom(&mut key, rustix::rand::GetRandomFlags::empty())
                .ok()
                .filter(|n| *n == key.len())
                .map(|_| key)
        })
        .as_ref()?;
    let mut input = [0u8; 24];
    input[..8].copy_from_slice(&nonce.to_le_bytes());
    input[8..16].copy_from_slice(&v.lower.to_le_bytes());
    input[16..].copy_from_slice(&v.upper.to_le_bytes());
    let out = blake3::keyed_hash(secret, &input);
    let word =
        |k: usize| u64::from_le_bytes(out.as_bytes()[k..k + 8].try_into().unwrap_or_default());
    Some(t::MetadataHashValue {
        lower: word(0),
        upper: word(8),
    })
}

/// `set-times-at` following symlinks. wasmtime-wasi sets a followed
/// target's times by opening it with a blocking `open` (for writing, then
/// for reading): a FIFO in a read-write grant held a host thread until a
/// peer appeared, past the call's end (as `open-at` did, M2), and a
/// device's driver was opened (found by review). The target is opened here
/// as `open-at` opens it (non-blocking, no controlling terminal, checked
/// with `fstat`: a FIFO, socket or device is refused) and its times set on
/// that descriptor. Without `symlink-follow`, wasmtime-wasi sets them
/// through the parent directory (`utimensat`), opening nothing: left to it.
fn shadow_set_times_at<T: FsEnforced>(i: &mut LinkerInstance<'_, T>) -> anyhow::Result<()> {
    i.func_wrap_async(
        "[method]descriptor.set-times-at",
        |mut store,
         (fd, pf, path, atim, mtim): (
            Resource<t::Descriptor>,
            t::PathFlags,
            String,
            t::NewTimestamp,
            t::NewTimestamp,
        )| {
            Box::new(async move {
                let out = async {
                    let (_, mut view) = store.data_mut().fs_parts();
                    let dir = match view.table.get(&fd) {
                        Ok(wasmtime_wasi::filesystem::Descriptor::Dir(d))
                            if pf.contains(t::PathFlags::SYMLINK_FOLLOW) =>
                        {
                            d
                        }
                        // Not following, or not a directory (wasmtime-wasi
                        // says so).
                        _ => {
                            return Ok((
                                match t::HostDescriptor::set_times_at(
                                    &mut view, fd, pf, path, atim, mtim,
                                )
                                .await
                                {
                                    Ok(()) => Ok(()),
                                    Err(e) => Err(code(&mut view, e)?),
                                },
                            ));
                        }
                    };
                    if dir.perms.write_not_permitted() {
                        return Ok((R::<()>::Err(t::ErrorCode::NotPermitted),));
                    }
                    let (Some(a), Some(m)) = (timespec(atim), timespec(mtim)) else {
                        return Ok((R::<()>::Err(t::ErrorCode::Invalid),));
                    };
                    let base = dir.dir.clone();
                    let shown = path.clone();
                    let set = tokio::task::spawn_blocking(move || {
                        set_times_following(&base, &path, [a, m])
                    })
                    .await
                    .map_err(|e| Opened::Io(std::io::Error::other(e)))
                    .and_then(|r| r);
                    let (call, mut view) = store.data_mut().fs_parts();
                    Ok((match set {
                        Ok(()) => Ok(()),
                        Err(Opened::Special(kind)) => {
                            call.note(format!(
                                "`{shown}` is not a regular file or directory ({kind}); tools may not set its times"
                            ));
                            Err(t::ErrorCode::Access)
                        }
                        Err(Opened::Refused(e)) => Err(e),
                        Err(Opened::Io(e)) => Err(code(&mut view, e.into())?),
                    },))
                }
                .await;
                warn(store.data_mut());
                out
            })
        },
    )?;
    Ok(())
}

/// A new timestamp as `futimens` takes it; `None` when out of range.
fn timespec(t: t::NewTimestamp) -> Option<libc::timespec> {
    Some(match t {
        t::NewTimestamp::NoChange => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        t::NewTimestamp::Now => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        t::NewTimestamp::Timestamp(d) if d.nanoseconds < 1_000_000_000 => libc::timespec {
            tv_sec: libc::time_t::try_from(d.seconds).ok()?,
            tv_nsec: libc::c_long::from(d.nanoseconds as i32),
        },
        t::NewTimestamp::Timestamp(_) => return None,
    })
}

/// Set the times of `path` under `base`, symlinks followed, through a
/// descriptor opened as [`open_checked`] opens one (for reading, else for
/// writing, as wasmtime-wasi tries both).
fn set_times_following(
    base: &std::fs::File,
    path: &str,
    times: [libc::timespec; 2],
) -> Result<(), Opened> {
    use std::os::fd::AsRawFd;
    let opened = |fl| {
        let (opts, _) = open_options(t::PathFlags::SYMLINK_FOLLOW, t::OpenFlags::empty(), fl)?;
        open_checked(base, path, &opts)
    };
    let (_, f) = match opened(t::DescriptorFlags::READ) {
        Err(Opened::Io(e)) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            opened(t::DescriptorFlags::WRITE)?
        }
        r => r?,
    };
    // SAFETY: `f` is an open descriptor this function owns, and `times` two
    // valid timespecs.
    if unsafe { libc::futimens(f.as_raw_fd(), times.as_ptr()) } != 0 {
        return Err(Opened::Io(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// `unlink-file-at` and `remove-directory-at`: a removal marks the quota as
/// possibly freed, so a refused write measures again.
fn shadow_removals<T: FsEnforced>(i: &mut LinkerInstance<'_, T>) -> anyhow::Result<()> {
    for name in [
        "[method]descriptor.unlink-file-at",
        "[method]descriptor.remove-directory-at",
    ] {
        i.func_wrap_async(
            name,
            move |mut store, (fd, path): (Resource<t::Descriptor>, String)| {
                Box::new(async move {
                    let (call, mut view) = store.data_mut().fs_parts();
                    let quota = call.quota_of(fd.rep());
                    // Counted from before the syscall: a walk running
                    // meanwhile credits nothing.
                    let change = quota.as_deref().map(Quota::change);
                    let r = if name.ends_with("unlink-file-at") {
                        t::HostDescriptor::unlink_file_at(&mut view, fd, path).await
                    } else {
                        t::HostDescriptor::remove_directory_at(&mut view, fd, path).await
                    };
                    drop(change);
                    Ok((match r {
                        Ok(()) => Ok(()),
                        Err(e) => Err(code(&mut view, e)?),
                    },))
                })
            },
        )?;
    }
    Ok(())
}

/// `rename-at`: a move into another grant is refused as across devices; a
/// move out of a quota marks it as possibly freed.
fn shadow_rename_at<T: FsEnforced>(i: &mut LinkerInstance<'_, T>) -> anyhow::Result<()> {
    i.func_wrap_async(
        "[method]descriptor.rename-at",
        |mut store,
         (fd, old, to, new): (
            Resource<t::Descriptor>,
            String,
            Resource<t::Descriptor>,
            String,
        )| {
            Box::new(async move {
                let out = async {
                    let (call, mut view) = store.data_mut().fs_parts();
                    let from_q = call.quota_of(fd.rep());
                    let to_q = call.quota_of(to.rep());
                    let crosses = match (&from_q, &to_q) {
                        (Some(a), Some(b)) => !Arc::ptr_eq(a, b),
                        (None, Some(_)) => true,
                        _ => false,
                    };
                    if crosses {
                        // Into another grant's quota: refused as across
                        // devices (the tool copies, as `mv` does). A file
                        // still open would go on being written through its
                        // descriptor, charged to the quota it was opened
                        // under while its blocks lie under the other; a
                        // directory would bring a tree in uncounted.
                        return Ok((R::<()>::Err(t::ErrorCode::CrossDevice),));
                    }
                    // Counted from before the syscall: a walk running
                    // meanwhile may miss what moves, and credits nothing.
                    let change = from_q.as_deref().map(Quota::change);
                    let r = t::HostDescriptor::rename_at(&mut view, fd, old, to, new).await;
                    drop(change);
                    Ok((match r {
                        Ok(()) => Ok(()),
                        Err(e) => Err(code(&mut view, e)?),
                    },))
                }
                .await;
                warn(store.data_mut());
                out
            })
        },
    )?;
    Ok(())
}

/// `write-via-stream` and `append-via-stream`: under a quota, the stream is
/// wrapped so each write is charged.
fn shadow_output_streams<T: FsEnforced>(i: &mut LinkerInstance<'_, T>) -> anyhow::Result<()> {
    for (name, append) in [
        ("[method]descriptor.write-via-stream", false),
        ("[method]descriptor.append-via-stream", true),
    ] {
        let wrap = move |store: &mut T, fd: Resource<t::Descriptor>, off: u64| {
            if !opened_for_writing(&store.fs_parts().1, &fd) {
                return Ok((R::Err(t::ErrorCode::BadDescriptor),));
            }
            let Some(held) = hold_stream(store) else {
                return Ok((R::Err(t::ErrorCode::InsufficientMemory),));
            };
            let (call, mut view) = store.fs_parts();
            let quota = call.quota_of(fd.rep());
            let notice = call.notice.clone();
            // An append stream writes from the end of the file as it is now.
            let file = quota.as_ref().and_then(|_| file_of(&view, &fd));
            let now = file.as_deref().and_then(allocation);
            let pos = match (now, append) {
                (Some((size, _)), true) => size,
                _ => off,
            };
            let account = file.zip(now).map(|(file, (_, base))| StreamAccount {
                file,
                base,
                charged: 0,
                flying: 0,
            });
            let written = file_of(&view, &fd);
            let r = if append {
                t::HostDescriptor::append_via_stream(&mut view, fd)
            } else {
                t::HostDescriptor::write_via_stream(&mut view, fd, off)
            };
            let s = match r {
                Ok(s) => s,
                Err(e) => return Ok((R::Err(code(&mut view, e)?),)),
            };
            // wasmtime-wasi's checks passed (a file, open for writing);
            // its stream is replaced by toolhost's own.
            let Some(written) = written else {
                return Ok((R::Err(t::ErrorCode::BadDescriptor),));
            };
            let slot: &mut DynOutputStream = view.table.get_mut(&s)?;
            let mut inner: DynOutputStream = Box::new(FileOutput {
                file: written,
                position: (!append).then_some(off),
                state: WriteState::Ready,
                ops: held.ops.clone(),
            });
            if let Some(quota) = quota {
                inner = Box::new(Charged {
                    inner,
                    quota,
                    notice,
                    pos,
                    charged_to: 0,
                    account,
                    flying: None,
                    append,
                });
            }
            *slot = Box::new(HeldStream {
                inner,
                _charge: held.charge,
            });
            Ok((R::Ok(s),))
        };
        if append {
            i.func_wrap(name, move |mut store, (fd,): (Resource<t::Descriptor>,)| {
                wrap(store.data_mut(), fd, 0)
            })?;
        } else {
            i.func_wrap(
                name,
                move |mut store, (fd, off): (Resource<t::Descriptor>, u64)| {
                    wrap(store.data_mut(), fd, off)
                },
            )?;
        }
    }
    Ok(())
}

/// `read-via-stream`: the stream is charged [`STREAM_BYTES`] to the call's
/// memory while the guest holds it.
fn shadow_input_streams<T: FsEnforced>(i: &mut LinkerInstance<'_, T>) -> anyhow::Result<()> {
    i.func_wrap(
        "[method]descriptor.read-via-stream",
        |mut store, (fd, off): (Resource<t::Descriptor>, u64)| {
            let store = store.data_mut();
            let Some(held) = hold_stream(store) else {
                return Ok((R::Err(t::ErrorCode::InsufficientMemory),));
            };
            let (_, mut view) = store.fs_parts();
            let read = file_of(&view, &fd);
            let s = match t::HostDescriptor::read_via_stream(&mut view, fd, off) {
                Ok(s) => s,
                Err(e) => return Ok((R::Err(code(&mut view, e)?),)),
            };
            // wasmtime-wasi's checks passed (a file, open for reading); its
            // stream is replaced by toolhost's own.
            let Some(read) = read else {
                return Ok((R::Err(t::ErrorCode::BadDescriptor),));
            };
            let slot: &mut DynInputStream = view.table.get_mut(&s)?;
            *slot = Box::new(HeldStream {
                inner: Box::new(FileInput {
                    file: read,
                    position: off,
                    state: ReadState::Idle,
                    ops: held.ops.clone(),
                }) as DynInputStream,
                _charge: held.charge,
            });
            Ok((R::Ok(s),))
        },
    )?;
    Ok(())
}

/// The per-call open-files cap of `caps`.
pub(crate) fn max_open(caps: &FsCaps) -> usize {
    caps.max_open.unwrap_or(DEFAULT_MAX_OPEN)
}

/// The usage tracker of a prepared grant, if it has a quota.
pub(crate) fn usage(
    mode: FsMode,
    quota: Option<u64>,
    root: &std::path::Path,
    guest: &str,
) -> Option<Arc<Quota>> {
    use std::os::unix::fs::MetadataExt;
    /// A directory (device, inode) and its quota.
    type Known = ((u64, u64), std::sync::Weak<Quota>);
    static QUOTAS: Mutex<Vec<Known>> = Mutex::new(Vec::new());
    let (FsMode::ReadWrite, Some(limit)) = (mode, quota) else {
        return None;
    };
    // One count per directory, guest path and bound in the process, for
    // as long as anything holds it: a reload that prepares the grant again
    // (a changed manifest or host config, the same grant) gets the quota
    // its predecessor's calls, still running, charge, not a fresh count
    // beside theirs (two counts would let the directory hold up to twice
    // the quota). Only an identical grant shares: the bound is never
    // changed here, so a load refused later (another scope granting the
    // same directory, refused as an overlap) changes nothing of the
    // running grant (a review of an earlier version, which updated the
    // bound, found that hole).
    let id = std::fs::metadata(root).ok().map(|m| (m.dev(), m.ino()));
    // A quota that could not have a descriptor of its own is never walked
    // (it stays full): not one to hand on.
    let alike = |quotas: &[Known]| {
        let id = id?;
        quotas
            .iter()
            .filter(|(i, _)| *i == id)
            .filter_map(|(_, q)| q.upgrade())
            .find(|q| q.guest == guest && q.limit == limit && q._root_dir.is_some())
    };
    let lock = || QUOTAS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(q) = alike(&lock()) {
        return Some(q);
    }
    // Made outside the lock: it opens and walks the directory, and a slow
    // one must not hold up every grant being prepared in the process.
    let q = Arc::new(Quota::new(limit, root.to_path_buf(), guest.to_owned()));
    let mut quotas = lock();
    quotas.retain(|(_, q)| q.strong_count() > 0);
    if let Some(first) = alike(&quotas) {
        // Another load made one meanwhile.
        return Some(first);
    }
    if let Some(id) = id {
        quotas.push((id, Arc::downgrade(&q)));
    }
    drop(quotas);
    if q.entries.load(Ordering::Acquire) > INLINE_ENTRIES {
        // Too large to walk at load: full until measured beside.
        q.measure_beside();
    }
    Some(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_keeps_a_quarter_of_its_descriptors_and_at_least_512() {
        assert_eq!(kept_for_the_host(1 << 20), 1 << 18);
        assert_eq!(kept_for_the_host(4096), 1024);
        assert_eq!(kept_for_the_host(1024), 512);
        assert_eq!(kept_for_the_host(256), 128);
    }

    /// A call whose `max-open` and scope share allow `max_open` and the
    /// share's room, joined to `share`.
    fn call_in(share: &Arc<DescriptorShare>, max_open: usize) -> Arc<CallDescriptors> {
        let call = CallDescriptors::new(max_open);
        call.join_scope(share);
        call
    }

    /// The review's case: one tenant's calls holding sockets took every
    /// descriptor kept for tools, and another tenant's tools could then
    /// open no file. A scope's calls hold at most its share; another
    /// scope's calls are not stopped by it; a reload resizes the share
    /// the running calls hold; sockets given back free it.
    #[test]
    fn a_scopes_calls_hold_at_most_its_share_of_descriptors() {
        let shares = DescriptorShares::default();
        let (a, b) = (
            crate::catalog::Scope::new("a"),
            crate::catalog::Scope::new("b"),
        );
        // A share of two descriptors (of the process's share for tools).
        let two = 2.5 / process_budget().limit as f64;
        let share_a = shares.of(&a, two);
        let (one, other) = (call_in(&share_a, 100), call_in(&share_a, 100));
        let held = [one.slot().unwrap(), other.slot().unwrap()];
        let refused = one.slot().err().unwrap();
        assert!(matches!(refused, DescriptorRefusal::Scope(2)), "{refused}");
        // Another scope has its own.
        let share_b = shares.of(&b, two);
        let theirs = call_in(&share_b, 100).slot().unwrap();
        // A reload to a larger share: the same one, resized; what the
        // running calls hold still counts.
        let share_a2 = shares.of(&a, 3.5 / process_budget().limit as f64);
        assert!(Arc::ptr_eq(&share_a, &share_a2));
        let third = call_in(&share_a2, 100).slot().unwrap();
        assert!(other.slot().is_err());
        drop(held);
        assert!(other.slot().is_ok());
        drop((theirs, third));
        // A call's own cap counts its sockets with its open files, and
        // only while they are open (the fix review: closed files kept
        // refusing connections).
        let capped = call_in(&share_b, 2);
        let file = Arc::new(std::fs::File::open("/dev/null").unwrap());
        capped.open.lock().unwrap().push(Arc::downgrade(&file));
        let _s = capped.slot().unwrap();
        let e = capped.slot().err().unwrap();
        assert!(e.to_string().contains("max-open"), "{e}");
        drop(file);
        let _t = capped.slot().unwrap();
    }

    /// A residual of the thirteenth session's review: one tenant's calls
    /// could hold all 256 places of the process's file-stream operations
    /// (on slow storage each runs long), and every other tenant's file
    /// streams waited. A scope's calls now hold at most its `pool-share`
    /// of them (at least one call's 8): past it an operation waits, though
    /// each call has room of its own and the process has plenty; another
    /// scope's operations go on; a place given back wakes the one waiting;
    /// and a reload to a larger share lets waiting operations go at once.
    #[tokio::test]
    async fn a_scopes_file_streams_hold_at_most_its_share_of_operations() {
        let shares = DescriptorShares::default();
        let (a, b) = (
            crate::catalog::Scope::new("a"),
            crate::catalog::Scope::new("b"),
        );
        // A twentieth of 256: 12 places.
        let share_a = shares.of(&a, 0.05);
        let ops = |share: &Arc<DescriptorShare>| StreamOps {
            call: Arc::new(tokio::sync::Semaphore::new(STREAM_OPS)),
            descriptors: Some(call_in(share, 100)),
        };
        let calls: Vec<StreamOps> = (0..3).map(|_| ops(&share_a)).collect();
        let mut held = Vec::new();
        for c in &calls[..2] {
            while held.len() < 12
                && let Some(p) = try_place(c)
            {
                held.push(p);
            }
        }
        assert_eq!(held.len(), 12);
        // The third call has all its own 8 and the process room: the
        // scope has none.
        assert!(try_place(&calls[2]).is_none());
        let share_b = shares.of(&b, 0.05);
        let theirs = try_place(&ops(&share_b)).expect("another scope's operation goes on");
        // An operation of another call of scope a, waiting for a place.
        let wait_in_a = || {
            let call = ops(&share_a);
            tokio::spawn(async move { place(&call).await })
        };
        // One waiting, woken by a place given back.
        let waiting = wait_in_a();
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        held.pop();
        let got = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("a place given back wakes the waiting operation")
            .unwrap();
        // Full again; a reload to a larger share (the same share, resized)
        // lets the next waiting one go.
        let next = wait_in_a();
        tokio::task::yield_now().await;
        assert!(!next.is_finished());
        assert!(Arc::ptr_eq(&share_a, &shares.of(&a, 0.1)));
        tokio::time::timeout(Duration::from_secs(10), next)
            .await
            .expect("a larger share lets a waiting operation go")
            .unwrap();
        drop((held, got, theirs));
        assert_eq!(share_a.ops.available_permits(), 25);
        // The fix review's bypass: a sandbox prepared ahead joins its
        // scope only at hand-out, so its start-up's operations counted
        // against no scope. None starts until then.
        let prepared = ops(&share_b);
        let descriptors = prepared.descriptors.as_ref().unwrap();
        descriptors.ahead.store(true, Ordering::Release);
        assert!(try_place(&prepared).is_none());
        let waiting = place(&prepared);
        assert!(futures::FutureExt::now_or_never(waiting).is_none());
        descriptors.ahead.store(false, Ordering::Release);
        assert!(try_place(&prepared).is_some());
    }

    /// As if `q`'s last measure were long past and quick: its next charge
    /// after a free measures again, however long that measure took on a
    /// loaded machine (one over `MEASURE_SLOW` holds the next back).
    fn a_while_ago(q: &Quota) {
        let at = std::time::Instant::now()
            .checked_sub(Duration::from_secs(2))
            .unwrap_or_else(std::time::Instant::now);
        *q.measuring.lock().unwrap() = (at, Duration::from_micros(10));
    }
    use std::time::Duration;
    use wasmtime_wasi::filesystem::{Descriptor, Dir};
    use wasmtime_wasi::{FsPerms, OpenMode};

    /// The share is taken whole or not at all, and given back exactly:
    /// what preopened directories and sockets are charged through.
    #[test]
    fn the_process_share_is_taken_only_where_it_fits() {
        let b = ProcessBudget {
            total: 8,
            limit: 6,
            used: AtomicUsize::new(0),
        };
        assert!(b.take(4));
        assert!(!b.take(3), "4 + 3 is past the limit of 6");
        assert_eq!(b.used.load(Ordering::Acquire), 4);
        assert!(b.take(2));
        assert!(!b.take(1));
        b.give(2);
        assert!(b.take(1) && b.take(0));
        assert_eq!(b.used.load(Ordering::Acquire), 5);
        // Preparing ahead stops short of the last quarter.
        assert!(!b.quarter_free(), "5 of 6 used: less than a quarter free");
        b.give(1);
        assert!(b.quarter_free(), "4 of 6 used: a third free");
    }

    fn dir(path: &std::path::Path, perms: FsPerms) -> Dir {
        Dir::new(
            std::fs::File::open(path).unwrap(),
            perms,
            OpenMode::READ | OpenMode::WRITE,
            false,
        )
    }

    fn mkfifo(p: &std::path::Path) {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    async fn open(
        d: &Dir,
        path: &str,
        pf: t::PathFlags,
        fl: t::DescriptorFlags,
    ) -> Result<Descriptor, Opened> {
        // A blocking open of a FIFO would never return: bound the wait so a
        // regression fails instead of hanging.
        tokio::time::timeout(
            Duration::from_secs(10),
            open_at(d, pf, path.into(), t::OpenFlags::empty(), fl),
        )
        .await
        .expect("open-at must never block on a special file")
    }

    #[test]
    fn only_a_range_wholly_over_data_is_free() {
        use std::io::Write;
        let d = tempfile::tempdir().unwrap();
        let mut f = std::fs::File::create(d.path().join("f")).unwrap();
        f.write_all(&[7u8; 8192]).unwrap();
        f.set_len(1 << 20).unwrap(); // a hole after the data
        let size = 1 << 20;
        assert!(over_data(&f, 0, 8192, size));
        assert!(over_data(&f, 100, 10, size));
        assert!(!over_data(&f, 512 << 10, 1, size), "in the hole");
        assert!(!over_data(&f, 8000, 1000, size), "data, then hole");
        assert!(!over_data(&f, size - 1, 2, size), "past the end");
        assert!(!over_data(&f, u64::MAX, 2, size));
    }

    #[test]
    fn what_a_dropped_stream_allocated_past_its_charge_is_taken_at_the_next_charge() {
        use std::io::Write;
        let d = tempfile::tempdir().unwrap();
        let q = Arc::new(Quota::new(4 << 20, d.path().to_path_buf(), "/out".into()));
        let path = d.path().join("f");
        let file = Arc::new(std::fs::File::create(&path).unwrap());
        // A stream charged one block; its write (finishing after the
        // stream was dropped) allocated 3 MiB.
        let flight = q.charge(4096).expect("fits");
        q.keep_late(StreamAccount {
            file: file.clone(),
            base: 0,
            charged: 4096,
            flying: flight.keep(),
        });
        (&*file).write_all(&vec![7u8; 3 << 20]).unwrap();
        file.sync_all().unwrap();
        drop(file); // the write is done: only the account holds the file
        // The next charge sees it: 3 MiB taken, so 2 MiB more do not fit.
        assert!(q.charge(2 << 20).is_none());
        assert!(q.used.load(Ordering::Acquire) >= 3 << 20);
        assert!(q.late.lock().unwrap().is_empty());
        assert_eq!(q.in_flight.load(Ordering::Acquire), 0, "landed");
    }

    /// A measure while a write runs (forced by a rename, say) used to set
    /// the count to what was on disk, dropping the running write's charge:
    /// twice the quota could be written.
    #[test]
    fn a_measure_counts_the_charges_of_writes_still_running() {
        let d = tempfile::tempdir().unwrap();
        let q = Arc::new(Quota::new(1 << 20, d.path().to_path_buf(), "/out".into()));
        let running = q.charge(768 << 10).expect("fits");
        a_while_ago(&q);
        q.note_freed();
        // Measures (something was freed): nothing on disk yet, but 768 KiB
        // in flight.
        assert!(q.charge(512 << 10).is_none(), "768 + 512 KiB pass 1 MiB");
        assert!(q.epoch() > 0, "it did measure");
        // The write lands; a measure now finds it on disk instead.
        std::fs::write(d.path().join("f"), vec![7u8; 768 << 10]).unwrap();
        drop(running);
        assert_eq!(q.in_flight.load(Ordering::Acquire), 0);
        a_while_ago(&q);
        q.note_freed();
        assert!(q.charge(512 << 10).is_none());
        assert!(q.charge(128 << 10).is_some());
    }

    /// Found by review: a walk by path from the root missed everything
    /// below `PATH_MAX` (a deep tree credited back at every measure), and
    /// followed a directory swapped for a symlink out of the grant.
    #[test]
    fn a_walk_goes_from_descriptor_to_descriptor_never_out_of_the_grant() {
        use std::os::fd::AsRawFd;
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("big"), vec![7u8; 4 << 20]).unwrap();
        let d = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("out")).unwrap();
        // Seventeen levels of 255-byte names: 4.3 KiB of path.
        let mut dir = std::fs::File::open(d.path()).unwrap();
        for _ in 0..17 {
            let p = format!("/proc/self/fd/{}/{}", dir.as_raw_fd(), "d".repeat(255));
            std::fs::create_dir(&p).unwrap();
            dir = std::fs::File::open(&p).unwrap();
        }
        std::fs::write(
            format!("/proc/self/fd/{}/f", dir.as_raw_fd()),
            vec![7u8; 1 << 20],
        )
        .unwrap();
        let root = std::fs::File::open(d.path()).unwrap();
        let Walked {
            found, complete, ..
        } = measure(
            std::path::Path::new(&format!("/proc/self/fd/{}", root.as_raw_fd())),
            usize::MAX,
        );
        assert!(complete);
        assert!(found >= 1 << 20, "the deep file counts: {found}");
        assert!(found < 4 << 20, "nothing outside counts: {found}");
    }

    /// Found by review: empty files, short symlinks and small directories
    /// take no block, so a measure of blocks gave back their charges and a
    /// loop of empty files filled the inode table under any quota. Each
    /// entry counts a block at least; a file's blocks once, however many
    /// links it has.
    #[test]
    fn every_entry_counts_a_block_and_a_files_blocks_count_once() {
        use std::os::fd::AsRawFd;
        let d = tempfile::tempdir().unwrap();
        for i in 0..100 {
            std::fs::write(d.path().join(format!("e{i}")), b"").unwrap();
        }
        std::os::unix::fs::symlink("x", d.path().join("link")).unwrap();
        std::fs::write(d.path().join("big"), vec![7u8; 1 << 20]).unwrap();
        for i in 0..3 {
            std::fs::hard_link(d.path().join("big"), d.path().join(format!("big{i}"))).unwrap();
        }
        let root = std::fs::File::open(d.path()).unwrap();
        let Walked {
            found, complete, ..
        } = measure(
            std::path::Path::new(&format!("/proc/self/fd/{}", root.as_raw_fd())),
            usize::MAX,
        );
        assert!(complete);
        // 101 entries of no block, the file once, its three more links.
        let least = 101 * ENTRY_BYTES + (1 << 20) + 3 * ENTRY_BYTES;
        assert!(found >= least, "{found} < {least}");
        assert!(found < least + (1 << 20), "the file counted twice: {found}");
    }

    /// Found by review: the measure at load ignored an incomplete walk,
    /// so a tree buried deeper than a walk goes was forgotten at a reload.
    #[test]
    fn a_grant_that_cannot_be_measured_whole_starts_full() {
        let d = tempfile::tempdir().unwrap();
        let deep = (0..=MAX_DEPTH).fold(d.path().to_path_buf(), |p, _| p.join("d"));
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(deep.join("f"), vec![7u8; 1 << 20]).unwrap();
        let q = Arc::new(Quota::new(4 << 20, d.path().to_path_buf(), "/out".into()));
        assert!(q.charge(4096).is_none());
    }

    #[test]
    fn a_walk_that_cannot_see_everything_credits_nothing() {
        let d = tempfile::tempdir().unwrap();
        let q = Arc::new(Quota::new(1 << 20, d.path().to_path_buf(), "/out".into()));
        // A tool's writes, charged, then buried deeper than a walk goes.
        drop(q.charge(1 << 20).expect("fits"));
        let deep = (0..=MAX_DEPTH).fold(d.path().to_path_buf(), |p, _| p.join("d"));
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(deep.join("f"), vec![7u8; 1 << 20]).unwrap();
        a_while_ago(&q);
        q.note_freed();
        assert!(q.charge(4096).is_none());
        assert!(q.epoch() >= 2, "it walked");
        assert!(
            q.used.load(Ordering::Acquire) >= 1 << 20,
            "and credited nothing"
        );
    }

    /// Found by review: a charge near `u64::MAX` (a `set-size`, a stream's
    /// `write-zeroes`) wrapped `in_flight` and wiped the charges of writes
    /// still running.
    #[test]
    fn a_charge_past_the_quota_touches_no_counter() {
        let d = tempfile::tempdir().unwrap();
        let q = Arc::new(Quota::new(1 << 20, d.path().to_path_buf(), "/out".into()));
        let running = q.charge(768 << 10).expect("fits");
        a_while_ago(&q);
        q.note_freed();
        assert!(q.charge(u64::MAX).is_none());
        assert!(q.charge((1 << 20) + 1).is_none());
        assert_eq!(q.in_flight.load(Ordering::Acquire), 768 << 10);
        q.note_freed();
        assert!(q.charge(512 << 10).is_none(), "768 KiB still in flight");
        drop(running);
    }

    /// Found by review: a write the call could not stop goes on after its
    /// store is gone; its charge stays in flight until it lets go of the
    /// file.
    #[test]
    fn a_late_charge_lands_only_once_its_file_is_let_go() {
        let d = tempfile::tempdir().unwrap();
        let q = Arc::new(Quota::new(1 << 20, d.path().to_path_buf(), "/out".into()));
        let file = Arc::new(std::fs::File::create(d.path().join("f")).unwrap());
        let writing = file.clone(); // the blocking task's
        // Two streams over one descriptor: two accounts share the file
        // (found by review: neither ever landed).
        for n in [512 << 10, 256 << 10] {
            let flight = q.charge(n).expect("fits");
            q.keep_late(StreamAccount {
                file: file.clone(),
                base: 0,
                charged: n,
                flying: flight.keep(),
            });
        }
        drop(file);
        q.catch_up();
        assert_eq!(
            q.in_flight.load(Ordering::Acquire),
            768 << 10,
            "still running"
        );
        drop(writing);
        q.catch_up();
        assert_eq!(q.in_flight.load(Ordering::Acquire), 0, "landed");
        assert!(q.late.lock().unwrap().is_empty());
    }

    /// A tool deleting between refused writes cannot make each of them
    /// walk the grant: a walk waits for nine times the last one's length.
    #[test]
    fn deleting_between_refused_writes_does_not_walk_the_grant_each_time() {
        let d = tempfile::tempdir().unwrap();
        let q = Arc::new(Quota::new(1 << 20, d.path().to_path_buf(), "/out".into()));
        drop(q.charge(1 << 20).expect("fits"));
        // The last walk took 10 s (a huge grant): one is not due again yet.
        *q.measuring.lock().unwrap() = (std::time::Instant::now(), Duration::from_secs(10));
        q.note_freed();
        assert!(q.charge(1).is_none());
        assert_eq!(q.epoch(), 0, "no walk");
        // A 5 ms walk 100 ms ago: due, and it finds the grant empty.
        *q.measuring.lock().unwrap() = (
            std::time::Instant::now() - Duration::from_millis(100),
            Duration::from_millis(5),
        );
        assert!(
            q.charge(1).is_some(),
            "the deletion noted earlier is measured now"
        );
        assert_eq!(q.epoch(), 2, "one walk (the epoch is odd while it runs)");
    }

    /// A directory with more entries than a walk looks at inline.
    fn large_grant() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for i in 0..INLINE_ENTRIES + 100 {
            std::fs::File::create(d.path().join(format!("f{i}"))).unwrap();
        }
        d
    }

    /// Wait until `q`'s walk beside the calls is done.
    fn walked_beside(q: &Quota) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while q.walking.load(Ordering::Acquire) {
            assert!(std::time::Instant::now() < deadline, "the walk never ended");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// A grant with more entries than a walk may look at on the charging
    /// thread is walked on a thread of its own: the inline walk stops at
    /// its budget (found by review: the last walk's length could be made
    /// short by hiding the tree past `MAX_DEPTH`, so the bound is on this
    /// walk, not the last one), the next is handed over at once (the last
    /// whole walk was large), and a charge after the walk beside gets the
    /// space it found.
    #[test]
    fn a_walk_too_long_for_the_charging_thread_runs_on_its_own() {
        let d = large_grant();
        let q = Arc::new(Quota::new(1 << 30, d.path().to_path_buf(), "/out".into()));
        // As if the last whole walk had been small (the tree hidden past
        // `MAX_DEPTH` then, say).
        q.entries.store(10, Ordering::Release);
        let rest = q.limit - q.used.load(Ordering::Acquire);
        drop(q.charge(rest).expect("fits"));
        a_while_ago(&q);
        q.note_freed();
        let _ = q.charge(1);
        assert_eq!(q.walks_beside.load(Ordering::Acquire), 1);
        walked_beside(&q);
        assert_eq!(q.epoch(), 4, "one inline walk, cut short, and one beside");
        assert!(q.charge(1).is_some(), "the walk found the space");
        assert!(q.entries.load(Ordering::Acquire) > INLINE_ENTRIES);

        // Full again: the next walk is handed over without an inline try.
        let rest = q.limit - q.used.load(Ordering::Acquire);
        drop(q.charge(rest).expect("fits"));
        a_while_ago(&q);
        q.note_freed();
        let _ = q.charge(1);
        assert_eq!(q.walks_beside.load(Ordering::Acquire), 2);
        walked_beside(&q);
        assert_eq!(q.epoch(), 6, "no inline walk this time, one beside");
    }

    /// A grant too large to walk whole at load (on a front-end thread)
    /// starts full and is measured beside: writes fit once that is done.
    #[test]
    fn a_grant_too_large_to_walk_at_load_starts_full_until_measured_beside() {
        let d = large_grant();
        let q = usage(FsMode::ReadWrite, Some(1 << 30), d.path(), "/out").unwrap();
        assert_eq!(q.walks_beside.load(Ordering::Acquire), 1);
        walked_beside(&q);
        assert!(
            q.used.load(Ordering::Acquire) < q.limit,
            "measured: mostly free"
        );
        assert!(q.charge(1 << 20).is_some());
        // A small grant is measured at load, inline, as before.
        let small = tempfile::tempdir().unwrap();
        let q = usage(FsMode::ReadWrite, Some(1 << 20), small.path(), "/out").unwrap();
        assert_eq!(q.walks_beside.load(Ordering::Acquire), 0);
        assert!(q.charge(1 << 19).is_some());
    }

    /// A reload that prepares a grant again, unchanged, gets the quota its
    /// predecessor's calls still charge, so the two generations never
    /// count the same directory twice. A grant with another bound or guest
    /// path, or of another directory, gets a count of its own, and sharing
    /// never changes the running grant's bound.
    #[test]
    fn a_directory_granted_again_alike_keeps_its_one_quota() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), vec![1u8; 1 << 20]).unwrap();
        let old = usage(FsMode::ReadWrite, Some(4 << 20), d.path(), "/out").unwrap();
        // A write of the old generation, still running.
        let _running = old.charge(1 << 20).expect("fits");
        let new = usage(FsMode::ReadWrite, Some(4 << 20), d.path(), "/out").unwrap();
        assert!(Arc::ptr_eq(&old, &new));
        let _writing = new.charge(3 << 19).expect("1 + 1 + 1.5 MiB fit in 4");
        // With a count of its own, the new grant would have seen 1 MiB on
        // disk and let this in too.
        assert!(
            new.charge(1 << 20).is_none(),
            "the old generation's write counts"
        );
        // Another bound, guest path or directory: a count of its own, and
        // the running grant's bound is untouched.
        let larger = usage(FsMode::ReadWrite, Some(64 << 20), d.path(), "/out").unwrap();
        assert!(!Arc::ptr_eq(&larger, &new));
        assert_eq!(new.limit(), 4 << 20);
        let other = usage(FsMode::ReadWrite, Some(4 << 20), d.path(), "/elsewhere").unwrap();
        assert!(!Arc::ptr_eq(&other, &new));
        let e = tempfile::tempdir().unwrap();
        let third = usage(FsMode::ReadWrite, Some(4 << 20), e.path(), "/out").unwrap();
        assert!(!Arc::ptr_eq(&third, &new));
    }

    /// A walk cut at its entry budget saw only part of the grant: it
    /// credits nothing, and it marks the grant as large.
    #[test]
    fn a_walk_cut_short_credits_nothing() {
        let d = large_grant();
        let q = Quota::new(1 << 30, d.path().to_path_buf(), "/out".into());
        q.entries.store(10, Ordering::Release);
        q.used.store(q.limit, Ordering::Release);
        let walked = q.measure_now(INLINE_ENTRIES);
        assert!(walked.cut && !walked.complete);
        assert_eq!(q.used.load(Ordering::Acquire), q.limit, "nothing credited");
        assert!(q.entries.load(Ordering::Acquire) > INLINE_ENTRIES);
        assert_eq!(q.epoch() % 2, 0);
        // A whole walk credits what it found.
        assert!(q.measure_now(usize::MAX).complete);
        assert!(q.used.load(Ordering::Acquire) < q.limit);
    }

    #[test]
    fn a_write_is_bounded_by_the_blocks_it_reaches_and_the_gap_it_opens() {
        assert_eq!(blocks_of(0, 0), (0, 0));
        assert_eq!(blocks_of(0, 1), (0, 4096));
        assert_eq!(blocks_of(4095, 2), (0, 8192));
        assert_eq!(blocks_of(65536, 1), (65536, 69632));
        // Inside the file: its blocks only.
        assert_eq!(write_bound(100, 10, 1 << 20), 4096);
        // Past the end: the gap too, in case the file system fills it.
        assert_eq!(write_bound(1 << 20, 1, 4096), 4096 + (1 << 20) - 4096);
        // No overflow at the top of the range.
        assert_eq!(blocks_of(u64::MAX - 1, 10).1, u64::MAX);
        assert!(write_bound(u64::MAX, u64::MAX, 0) > 0);
    }

    /// A kernel file system mounted inside a grant (here `/proc` under a
    /// grant of `/`) is refused by what was opened: the host's
    /// environment, its memory and the machine's knobs stay out of reach,
    /// files and directories alike.
    #[tokio::test]
    async fn nothing_on_a_kernel_file_system_is_opened_under_a_grant() {
        let d = dir(std::path::Path::new("/"), FsPerms::ReadOnly);
        let read = t::DescriptorFlags::READ;
        let none = t::PathFlags::empty();
        for path in [
            "proc/self/environ",
            "proc/self/mem",
            "proc/sys",
            "sys/kernel",
        ] {
            match open(&d, path, none, read).await {
                Err(Opened::Special(kind)) => assert!(kind.contains("kernel"), "{path}: {kind}"),
                other => panic!("{path}: {:?}", other.err()),
            }
        }
        assert_eq!(
            kernel_fs(&std::fs::File::open("/proc/self/status").unwrap()),
            Some("proc")
        );
        assert_eq!(kernel_fs(&std::fs::File::open("/").unwrap()), None);
    }

    /// What the check-then-open race (SECURITY.md M2) needed: whatever the
    /// name is when the OS opens it, a FIFO is never opened blocking and
    /// never handed to the guest, followed through a symlink or not, for
    /// reading or writing.
    #[tokio::test]
    async fn a_fifo_is_refused_by_what_was_opened_not_by_an_earlier_look() {
        let tmp = tempfile::tempdir().unwrap();
        mkfifo(&tmp.path().join("fifo"));
        std::os::unix::fs::symlink("fifo", tmp.path().join("link")).unwrap();
        std::fs::write(tmp.path().join("file"), "x").unwrap();
        std::fs::create_dir(tmp.path().join("sub")).unwrap();
        let d = dir(tmp.path(), FsPerms::ReadWrite);
        let read = t::DescriptorFlags::READ;
        let follow = t::PathFlags::SYMLINK_FOLLOW;
        for (path, pf) in [("fifo", t::PathFlags::empty()), ("link", follow)] {
            match open(&d, path, pf, read).await {
                Err(Opened::Special(kind)) => assert_eq!(kind, "a FIFO"),
                other => panic!("{path}: {:?}", other.err()),
            }
        }
        // Write-only with no reader: the OS refuses at once (ENXIO).
        assert!(matches!(
            open(&d, "fifo", t::PathFlags::empty(), t::DescriptorFlags::WRITE).await,
            Err(Opened::Io(_) | Opened::Special(_))
        ));
        // Not following a symlink is refused as wasmtime-wasi refuses it.
        assert!(matches!(
            open(&d, "link", t::PathFlags::empty(), read).await,
            Err(Opened::Io(_))
        ));
        // Files and directories open as before, and blocking again.
        match open(&d, "file", t::PathFlags::empty(), read).await {
            Ok(Descriptor::File(f)) => {
                // SAFETY: F_GETFL on an open descriptor.
                let flags = unsafe {
                    libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&*f.file), libc::F_GETFL)
                };
                assert_eq!(flags & libc::O_NONBLOCK, 0);
            }
            other => panic!("file: {:?}", other.err()),
        }
        assert!(matches!(
            open(&d, "sub", t::PathFlags::empty(), read).await,
            Ok(Descriptor::Dir(_))
        ));
        // Escapes stay refused (cap-primitives' sandboxed resolution).
        assert!(matches!(
            open(&d, "../etc/passwd", follow, read).await,
            Err(Opened::Io(_))
        ));
    }

    #[tokio::test]
    async fn a_read_only_grant_opens_nothing_for_writing_and_a_file_is_no_directory() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("file"), "x").unwrap();
        let d = dir(tmp.path(), FsPerms::ReadOnly);
        assert!(matches!(
            open(&d, "file", t::PathFlags::empty(), t::DescriptorFlags::WRITE).await,
            Err(Opened::Refused(t::ErrorCode::NotPermitted))
        ));
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            open_at(
                &d,
                t::PathFlags::empty(),
                "file".into(),
                t::OpenFlags::DIRECTORY,
                t::DescriptorFlags::READ,
            ),
        )
        .await
        .unwrap();
        assert!(matches!(
            r,
            Err(Opened::Refused(t::ErrorCode::NotDirectory))
        ));
    }
}
