//! The per-call store data: one `CallState` lives exactly as long as one
//! call. It is assembled from the component's prepared grants by each
//! capability unit's `apply` step, and implements the host interfaces the
//! guest imports (WASI, wasi:http through the network gate, and
//! `toolhost:tool/host`). It owns the guest's clocks (`CallClock`), which
//! skip the time a sandbox sat prepared.

use super::PoolShape;
use super::bindings::v1::toolhost::tool::host as wit_host;
use super::bindings::v2::toolhost::tool::host as wit_host2;
use crate::caps::fs::enforce::{FsCall, FsEnforced};
use crate::caps::{Grants, client::CallClient, limits::Limiter, net::Gate, stdio::CallOutput};
use crate::model::{CallEvent, LogLevel};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

pub(crate) struct CallState {
    /// First, so dropped first: it closes the call's connections before
    /// the resource table drops their request bodies, which hyper would
    /// otherwise end as if complete (a request cut off by a trap, deadline
    /// or cancel reaching its server looking whole).
    gate: Gate,
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    pub(crate) limiter: Limiter,
    pub(crate) output: CallOutput,
    pub(crate) client: CallClient,
    cancel: Option<tokio_util::sync::CancellationToken>,
    /// Open files, special files and quotas of the call's directories.
    fs: FsCall,
    /// The handle cap of this call, for error messages.
    pub(crate) handle_limit: usize,
    /// Its scope's turns at the guest threads, once the call has a scope
    /// (see `scheduler::CpuTurn`).
    pub(crate) cpu: Option<crate::scheduler::CpuTurn>,
    /// When the current first slice started, until the first epoch tick
    /// after it (see `sandbox::start_first_slice`).
    pub(crate) first_slice: Option<std::time::Instant>,
    /// Where the guest's monotonic clock starts: moved on at hand-out.
    clock: CallClock,
}

/// The guest's clocks, counted from the sandbox's making, less the time it
/// sat prepared. wasmtime-wasi's monotonic clock counts from when the WASI
/// context was built: in a sandbox prepared ahead, that told the guest how
/// long ago the previous call of its component in its scope, maybe another
/// client's, was answered (found by review). The wall clock told the same
/// to a start-up that read it (found by a later review: a start function
/// kept the time it was prepared in memory, and the next call subtracted).
/// So until the sandbox is handed to its call, the wall clock reads the
/// monotonic one from the Unix epoch (1970, plus the start-up's own time);
/// from then on, the host's. The base is one shared number (nanoseconds
/// since the process's first clock), not a lock: the guest reads it at
/// every `now`.
#[derive(Clone)]
struct CallClock(std::sync::Arc<ClockBase>);

struct ClockBase {
    base: std::sync::atomic::AtomicU64,
    /// Prepared ahead and not yet handed to its call.
    ahead: std::sync::atomic::AtomicBool,
}

/// The instant every `CallClock` counts from.
static CLOCK_EPOCH: std::sync::LazyLock<std::time::Instant> =
    std::sync::LazyLock::new(std::time::Instant::now);

impl CallClock {
    fn since_epoch(at: std::time::Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(*CLOCK_EPOCH).as_nanos()).unwrap_or(u64::MAX)
    }

    fn starting(at: std::time::Instant) -> CallClock {
        CallClock(std::sync::Arc::new(ClockBase {
            base: std::sync::atomic::AtomicU64::new(Self::since_epoch(at)),
            ahead: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    /// Whether it is prepared ahead and not yet handed to its call.
    fn is_ahead(&self) -> bool {
        self.0.ahead.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Prepared ahead of its call: the wall clock shows nothing of the
    /// host's time until [`CallClock::skip`].
    fn ahead(&self) {
        self.0
            .ahead
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Skip `waited`: the time the sandbox sat prepared, which the guest
    /// does not see pass. Its start-up's readings stay behind the call's
    /// (the clock never goes back: found by the review of the fix, which
    /// set it to 0 at hand-out). The wall clock is the host's from now on.
    fn skip(&self, waited: std::time::Duration) {
        let waited = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
        self.0
            .base
            .fetch_add(waited, std::sync::atomic::Ordering::Relaxed);
        self.0
            .ahead
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

impl wasmtime_wasi::HostMonotonicClock for CallClock {
    fn resolution(&self) -> u64 {
        // The host's monotonic clock's, as wasmtime-wasi's own reports.
        static RESOLUTION: std::sync::LazyLock<u64> = std::sync::LazyLock::new(|| {
            wasmtime_wasi::HostMonotonicClock::resolution(
                &wasmtime_wasi::clocks::MonotonicClock::new(),
            )
        });
        *RESOLUTION
    }

    fn now(&self) -> u64 {
        let base = self.0.base.load(std::sync::atomic::Ordering::Relaxed);
        Self::since_epoch(std::time::Instant::now()).saturating_sub(base)
    }
}

/// The guest's wall clock (`wasi:clocks/wall-clock`): see [`CallClock`].
struct CallWallClock(CallClock);

impl wasmtime_wasi::HostWallClock for CallWallClock {
    fn resolution(&self) -> std::time::Duration {
        static RESOLUTION: std::sync::LazyLock<std::time::Duration> =
            std::sync::LazyLock::new(|| {
                wasmtime_wasi::HostWallClock::resolution(&wasmtime_wasi::clocks::WallClock::new())
            });
        *RESOLUTION
    }

    fn now(&self) -> std::time::Duration {
        if self.0.is_ahead() {
            return std::time::Duration::from_nanos(wasmtime_wasi::HostMonotonicClock::now(
                &self.0,
            ));
        }
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
    }
}

const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// Shadow `subscribe-duration` and `subscribe-instant` of
/// `wasi:clocks/monotonic-clock` in `linker` (which already has
/// wasmtime-wasi's): a sandbox prepared ahead of its call may not make a
/// clock's pollable. Its deadline is the host's time, not the guest's
/// clock: one made by a start-up and waited on by the call measured how
/// long the sandbox sat prepared, so when the previous call was answered,
/// past both clocks' skipping (found by review: 1.5, 0.2 and 2.5 s
/// pauses read back to the millisecond). The start-up traps, and the
/// call builds its own sandbox, where the clocks are the call's from the
/// start; after four such failures the component is prepared no more
/// (`warm::MAX_FAILURES`).
pub(super) fn add_clocks_to_linker(
    linker: &mut wasmtime::component::Linker<CallState>,
) -> anyhow::Result<()> {
    use wasmtime_wasi::clocks::WasiClocksView as _;
    use wasmtime_wasi::p2::bindings::clocks::monotonic_clock::Host as _;
    linker.allow_shadowing(true);
    let mut i = linker.instance(MONOTONIC_CLOCK)?;
    i.func_wrap("subscribe-duration", |mut store, (d,): (u64,)| {
        let state = store.data_mut();
        state.no_clock_ahead()?;
        Ok((state.clocks().subscribe_duration(d)?,))
    })?;
    i.func_wrap("subscribe-instant", |mut store, (when,): (u64,)| {
        let state = store.data_mut();
        state.no_clock_ahead()?;
        Ok((state.clocks().subscribe_instant(when)?,))
    })?;
    Ok(())
}

/// The most random bytes one `get-random-bytes` (or its insecure twin)
/// returns; more traps. The host builds the whole answer before lowering
/// it into the guest, whose `realloc` may then take its time: at
/// wasmtime-wasi's default of 64 MiB, a tool with a 1 MiB memory limit held
/// 64 MiB of host memory per call (found by review). Seeds and keys are
/// tens of bytes; a tool wanting more asks again.
const MAX_RANDOM: u64 = 1 << 20;

/// Largest size of one wasi:http `fields` resource; with the handle cap
/// derived from it (see `CallState::new`) and outgoing bodies buffering at
/// most `caps::net::BODY_CHUNK` each, the host memory wasi:http resources
/// can hold for a call stays within a quarter of the call's memory limit.
/// Open connections are charged to the call's memory itself
/// (`caps::net::Gate`).
const HTTP_FIELD_LIMIT: usize = 16 << 10;

impl CallState {
    /// The state of one new call. `with_grants: false` (for `describe`)
    /// grants nothing: no directories, variables, hosts or client.
    pub(crate) fn new(
        grants: &Grants,
        cx: super::CallContext,
        with_grants: bool,
        shape: PoolShape,
        memory: &std::sync::Arc<crate::caps::limits::SharedMemory>,
    ) -> anyhow::Result<CallState> {
        let mut b = WasiCtxBuilder::new();
        let clock = CallClock::starting(std::time::Instant::now());
        b.monotonic_clock(clock.clone());
        b.wall_clock(CallWallClock(clock.clone()));
        let limiter = Limiter::new(grants.limits.memory, Some(memory.clone()), shape);
        let output = grants.stdio.apply(&mut b, cx.events, limiter.budget());
        // No sockets and no DNS, ever: outbound traffic is wasi:http only.
        b.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .max_random_size(MAX_RANDOM.min(grants.limits.memory));
        // The directories' descriptors are taken from the process's share
        // before they are opened.
        let mut fs = FsCall::new(with_grants.then_some(&grants.fs), grants.fs.max_open)?;
        if with_grants {
            grants.env.apply(&mut b);
            grants.fs.apply(&mut b)?;
        }
        let mut handle_limit = grants.handles;
        if grants.net.any() {
            let budget = (grants.limits.memory / 4) as usize;
            handle_limit = handle_limit.min((budget / HTTP_FIELD_LIMIT).max(64));
        }
        let mut table = ResourceTable::new();
        table.set_max_capacity(handle_limit);
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(HTTP_FIELD_LIMIT);
        Ok(CallState {
            wasi: b.build(),
            table,
            http,
            gate: if with_grants {
                let mut gate = grants.net.gate(Some(limiter.budget()));
                gate.run_on(cx.guests);
                if grants.net.any() {
                    gate.count_descriptors(fs.descriptors().clone());
                }
                gate
            } else {
                crate::caps::net::Prepared::default().gate(None)
            },
            limiter,
            output,
            client: if with_grants {
                grants.client.apply(cx.client)
            } else {
                CallClient::none()
            },
            cancel: cx.cancel,
            fs,
            handle_limit,
            cpu: None,
            first_slice: None,
            clock,
        })
    }
}

impl CallState {
    /// Hand a sandbox prepared ahead (with no call's data: no client, no
    /// event sink, no cancellation token) to its one call:
    /// everything that depends on the call is set here. The rest (WASI
    /// context, pipes, resource table, fs budgets, memory) was built for
    /// this sandbox alone and is charged to this call from now on. Its
    /// clocks skip the `waited` it sat prepared: the guest sees
    /// its start-up and its call, not when it was made.
    pub(crate) fn begin(&mut self, cx: super::CallContext, waited: std::time::Duration) {
        self.clock.skip(waited);
        self.fs.prepared_ahead(false);
        self.output.attach(cx.events);
        // Prepared with the same grants (a sandbox prepared before a
        // reload is never handed to a call after it): only the client is
        // the call's.
        self.client.attach(cx.client);
        self.cancel = cx.cancel;
        self.gate.run_on(cx.guests);
    }

    /// Built ahead of its call (see `sandbox::warm`): until [`begin`],
    /// its start-up's file streams start nothing and its wall clock shows
    /// no time of the host's.
    ///
    /// [`begin`]: CallState::begin
    pub(crate) fn prepared_ahead(&mut self) {
        self.fs.prepared_ahead(true);
        self.clock.ahead();
    }

    /// Tell the caller why the call's first refused request was refused
    /// (a warning event), once.
    pub(crate) fn warn_refused_request(&mut self) {
        if let Some(why) = self.gate.take_refusal() {
            self.warn(why);
        }
    }

    /// A warning event to the call's caller (counted in its output).
    fn warn(&mut self, message: String) {
        self.output.emit(
            message.len(),
            CallEvent::Log {
                level: LogLevel::Warning,
                message,
            },
        );
    }

    /// A trap if the sandbox is prepared ahead of its call (see
    /// [`add_clocks_to_linker`]).
    fn no_clock_ahead(&self) -> wasmtime::Result<()> {
        if self.clock.is_ahead() {
            return Err(wasmtime::Error::msg(
                "the component's start-up waits on a clock; it is started with each call instead of ahead of it",
            ));
        }
        Ok(())
    }

    /// Take the call's name lookups from its scope's share too (see
    /// `caps::net::LookupShares`).
    pub(crate) fn share_lookups(&mut self, scope: &std::sync::Arc<tokio::sync::Semaphore>) {
        self.gate.share_lookups(scope);
    }

    /// Take the files and sockets the call opens from its scope's share
    /// too (see `caps::fs::DescriptorShares`).
    pub(crate) fn share_descriptors(
        &mut self,
        scope: &std::sync::Arc<crate::caps::fs::DescriptorShare>,
    ) {
        self.fs.join_scope(scope);
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl FsEnforced for CallState {
    fn fs_parts(
        &mut self,
    ) -> (
        &mut FsCall,
        wasmtime_wasi::filesystem::WasiFilesystemCtxView<'_>,
    ) {
        (
            &mut self.fs,
            wasmtime_wasi::filesystem::WasiFilesystemCtxView {
                ctx: self.wasi.filesystem(),
                table: &mut self.table,
            },
        )
    }

    fn hold_host(&mut self, bytes: usize) -> Option<crate::caps::limits::HostCharge> {
        self.limiter.budget().hold(bytes)
    }

    fn fs_warn(&mut self, message: String) {
        self.warn(message);
    }
}

impl WasiHttpView for CallState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.gate,
        }
    }
}

impl wit_host::Host for CallState {
    fn log(&mut self, level: wit_host::Level, message: String) {
        use wit_host::Level as L;
        let level = match level {
            L::Debug => LogLevel::Debug,
            L::Info => LogLevel::Info,
            L::Notice => LogLevel::Notice,
            L::Warning => LogLevel::Warning,
            L::Error => LogLevel::Error,
            L::Critical => LogLevel::Critical,
            L::Alert => LogLevel::Alert,
            L::Emergency => LogLevel::Emergency,
        };
        self.output
            .emit(message.len(), CallEvent::Log { level, message });
    }

    fn progress(&mut self, progress: f64, total: Option<f64>, message: Option<String>) {
        let size = 16 + message.as_ref().map_or(0, String::len);
        self.output.emit(
            size,
            CallEvent::Progress {
                progress,
                total,
                message,
            },
        );
    }

    fn cancelled(&mut self) -> bool {
        // Once the call waits for its client's answers, it should return.
        super::is_cancelled(&self.cancel) || self.client.waiting()
    }

    fn request_client(
        &mut self,
        method: String,
        params: String,
    ) -> impl Future<Output = Result<String, String>> + Send {
        self.client.request(method, params)
    }
}

impl super::bindings::v1::toolhost::tool::types::Host for CallState {}
impl super::bindings::v2::toolhost::tool::types::Host for CallState {}

/// `toolhost:tool/host@0.2.0`: the same host as `@0.1.0`, with keyed,
/// typed client questions (the `@0.1.0` contract's `METHOD#KEY` and message
/// prefixes, lifted into the `client-error` variant) and `run-as-task`.
impl wit_host2::Host for CallState {
    fn log(&mut self, level: wit_host2::Level, message: String) {
        use wit_host::Level as O;
        use wit_host2::Level as L;
        let level = match level {
            L::Debug => O::Debug,
            L::Info => O::Info,
            L::Notice => O::Notice,
            L::Warning => O::Warning,
            L::Error => O::Error,
            L::Critical => O::Critical,
            L::Alert => O::Alert,
            L::Emergency => O::Emergency,
        };
        wit_host::Host::log(self, level, message)
    }

    fn progress(&mut self, progress: f64, total: Option<f64>, message: Option<String>) {
        wit_host::Host::progress(self, progress, total, message)
    }

    fn cancelled(&mut self) -> bool {
        wit_host::Host::cancelled(self)
    }

    fn run_as_task(&mut self) -> bool {
        // The front end decides: only it knows whether the tool supports
        // tasks for this caller and whether it has room for one.
        self.client.run_as_task()
    }

    fn request_client(
        &mut self,
        request: wit_host2::ClientRequest,
    ) -> impl Future<Output = Result<String, wit_host2::ClientError>> + Send {
        self.ask(request)
    }

    fn request_clients(
        &mut self,
        requests: Vec<wit_host2::ClientRequest>,
    ) -> impl Future<Output = wasmtime::Result<Vec<Result<String, wit_host2::ClientError>>>> + Send
    {
        // More questions than any call may ask is a broken tool: stop it
        // before making a future (and an answer) per question.
        let too_many = (requests.len() > crate::caps::client::MAX_REQUESTS_PER_CALL).then(|| {
            wasmtime::format_err!(
                "request-clients: {} questions at once; a call may ask at most {}",
                requests.len(),
                crate::caps::client::MAX_REQUESTS_PER_CALL
            )
        });
        // Each is checked and counted now, in order (past the call's
        // `max-requests` each is refused, as `request-client` refuses it);
        // then all are asked together.
        let asked: Vec<_> = match too_many {
            Some(_) => Vec::new(),
            None => requests.into_iter().map(|r| self.ask(r)).collect(),
        };
        async move {
            match too_many {
                Some(e) => Err(e),
                None => Ok(futures::future::join_all(asked).await),
            }
        }
    }
}

impl CallState {
    /// One keyed question of a `@0.2.0` call: checked and counted now,
    /// asked when awaited.
    fn ask(
        &mut self,
        request: wit_host2::ClientRequest,
    ) -> impl Future<Output = Result<String, wit_host2::ClientError>> + Send + use<> {
        let method = match request.key {
            Some(k) => format!("{}#{k}", request.method),
            None => request.method,
        };
        let asked = self.client.request(method, request.params);
        async move {
            asked.await.map_err(|m| {
                if m.starts_with("input required:") {
                    wit_host2::ClientError::InputRequired(m)
                } else if m.starts_with("the client cannot answer") {
                    wit_host2::ClientError::Unsupported(m)
                } else {
                    wit_host2::ClientError::Failed(m)
                }
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{CallClock, CallWallClock};
    use std::time::{Duration, Instant};
    use wasmtime_wasi::HostMonotonicClock;

    /// Prepared ahead, the wall clock reads the start-up's own time from
    /// 1970; handed to its call, the host's.
    #[test]
    fn a_prepared_wall_clock_shows_the_hosts_time_only_to_its_call() {
        use wasmtime_wasi::HostWallClock;
        let clock = CallClock::starting(Instant::now());
        let wall = CallWallClock(clock.clone());
        let host = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
        };
        assert!(wall.now().abs_diff(host()) < Duration::from_secs(60));
        clock.ahead();
        assert!(wall.now() < Duration::from_secs(60), "{:?}", wall.now());
        clock.skip(Duration::from_secs(1));
        assert!(wall.now().abs_diff(host()) < Duration::from_secs(60));
    }

    /// The clock of a sandbox prepared ahead: it counts from its making,
    /// skips the time it sat prepared at hand-out, and never goes back (a
    /// first fix set it to 0 at hand-out, behind what the start-up read:
    /// found by review).
    #[test]
    fn a_call_clock_skips_the_wait_and_never_goes_back() {
        let clock = CallClock::starting(Instant::now());
        std::thread::sleep(Duration::from_millis(20));
        let in_start_up = clock.now();
        assert!(in_start_up >= 20_000_000, "{in_start_up}");
        // It sat prepared for a while, then its call takes it.
        let prepared = Instant::now();
        std::thread::sleep(Duration::from_millis(200));
        let waited = prepared.elapsed();
        clock.skip(waited);
        let in_call = clock.now();
        assert!(in_call >= in_start_up, "{in_call} < {in_start_up}");
        assert!(
            u128::from(in_call - in_start_up) < waited.as_nanos(),
            "{in_call}: the {waited:?} it sat prepared still show"
        );
    }
}
