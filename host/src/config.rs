//! The operator's host configuration (`toolhost.toml`): engine sizing, the
//! caps that narrow every manifest (one section per capability unit), and
//! policy rules. A tool can never widen what this allows.
//!
//! Read as strictly as manifests: every problem of the file at once, each
//! with its line and column. Values are range-checked here, so nothing
//! downstream overflows on a huge number.
//!
//! Owns no runtime state; the sandbox reads the engine settings and the
//! capability units apply the caps when a tool loads.

use crate::audit::{AuditConfig, FsyncPolicy};
use crate::caps::fs::HostState;
use crate::caps::{
    self, AllowList, CapError, Caps, ClientRequestKind, HostPattern, LimitCaps, Limits,
    limits::{MAX_DURATION, MAX_MEMORY, SizeText, parse_duration, parse_size},
};
use crate::diagnostic::{Collector, Diagnostic, Diagnostics, section};
use crate::manifest::Manifest;
use crate::policy::Rule;
use crate::tenant::{AgentEntry, AuthConfig, RawTenants, Tenant};
use crate::trust::{RawTrustRule, TRUST_KEYS, TrustRule};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// Host-wide settings. The defaults suit a laptop or a small server.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct HostConfig {
    /// Engine and pool sizing.
    pub engine: EngineConfig,
    /// What any tool may be granted at most.
    pub caps: Caps,
    /// Allow/deny rules (`[[rule]]`), evaluated before an embedder's own.
    pub rules: Vec<Rule>,
    /// The audit log (`[audit]`).
    pub audit: AuditConfig,
    /// The file this was read from, if any: it is the host's own state, so
    /// no tool may be granted it.
    pub path: Option<PathBuf>,
    /// Which signed packages may be installed (`[[trust]]`). Read here so
    /// the file is checked as one; only package installs consult it.
    pub trust: Vec<TrustRule>,
    /// Tenants (`[[tenant]]`): who may call which tools over HTTP, under
    /// which narrower caps and quotas.
    pub tenants: Vec<Tenant>,
    /// Agents (`[[agent]]`): tool sets for the agent transport, each under
    /// its narrower caps and quotas, with subagents of their own.
    pub agents: Vec<AgentEntry>,
    /// How HTTP callers prove who they are (`[auth]`).
    pub auth: AuthConfig,
    /// Calls that run on as tasks (MCP tasks extension, `[tasks]`).
    pub tasks: TasksConfig,
}

/// Calls that run on as tasks (`[tasks]`, MCP tasks extension): how many
/// one MCP server (one tenant) keeps, for how long, and when a call of a
/// task-supporting tool becomes one by itself. A task is a call like any
/// other: its tool's limits (timeout included) hold while it runs.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TasksConfig {
    /// Most tasks one server (one tenant) holds, running or finished and
    /// not yet expired; past it, calls answer in their request. 0 turns
    /// tasks off (the extension is not advertised).
    pub max: u32,
    /// How long a task stays readable after it was created (its `ttlMs`);
    /// a task still running then stays until it ends.
    pub keep: Duration,
    /// A call of a task-supporting tool still running after this becomes a
    /// task, if its caller can follow one.
    pub after: Duration,
    /// Most host memory the ended tasks' results of one server (one
    /// tenant) hold together, weighed as parsed. Past it, results already
    /// returned once are forgotten, oldest first; a result that still does
    /// not fit is not kept, and its task ends failed saying so.
    pub max_bytes: u64,
}

impl Default for TasksConfig {
    fn default() -> Self {
        TasksConfig {
            max: 64,
            keep: Duration::from_secs(300),
            after: Duration::from_secs(1),
            max_bytes: 64 << 20,
        }
    }
}

/// How the engine and its pool are sized (`[engine]`).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EngineConfig {
    /// Where compiled components are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// Sandboxes calls may hold at once (`[engine] max-instances`). The
    /// pooling allocator holds a few more: one per component a load
    /// prepares at once, which only `describe` takes, and spares against
    /// wasmtime's sharding.
    ///
    /// 0 (the default): the most this host affords, at most 10,000 and
    /// at least 16 ([`EngineConfig::pool_size`]): the largest pool whose
    /// worst case fits the host, counting what it may hold beside
    /// `max_memory` (fiber stacks, instance state, what slots keep
    /// resident between calls) within three quarters of the host's memory
    /// (the lowest of the machine's and its cgroups' limits), and its
    /// memory mappings and address space within half of what the process
    /// has left, less what other pools in the process claimed. About
    /// 1,200 on a 24 GiB host with the default `max_memory`
    /// ([`Core::pool_size`](crate::Core::pool_size) says how many).
    pub max_instances: u32,
    /// Memory all calls together may hold (`[engine] max-memory`): their
    /// linear memories and what the host holds for them, charged as it
    /// grows. Each scope (tenant, agent) may hold at most its `pool-share`
    /// of it. A call refused memory by this bound while under its own
    /// limit fails with [`CallErrorKind::SharedMemoryExhausted`](crate::CallErrorKind).
    /// Default: half the lower of the machine's physical memory and the
    /// process's cgroup memory limit (8 GiB if neither can be read).
    pub max_memory: u64,
    /// Granularity of wall-clock deadlines and cancellation.
    pub epoch_tick: Duration,
    /// Maximum wasm stack per call.
    pub max_wasm_stack: usize,
    /// Bytes at the start of each linear-memory slot that are reset in
    /// place (memset, or only the dirty pages where the kernel supports
    /// pagemap scans) rather than unmapped between calls.
    pub memory_keep_resident: usize,
    /// Reset only the pages a call dirtied (Linux `PAGEMAP_SCAN`, 6.7+).
    /// Ignored where swap is active: a swapped-out dirty page would not be
    /// reset (wasmtime PR #14357).
    pub pagemap_scan: bool,
    /// Most sandboxes prepared ahead of demand per tool component (each
    /// used by exactly one call, then dropped), sized by the component's
    /// recent call rate; 0 (the default) turns preparing ahead off.
    pub prewarm: u32,
    /// Most linear memory all prepared sandboxes may hold together.
    pub prewarm_memory: u64,
    /// Once a front end has written a call's reply, prepare one sandbox
    /// for the next call of the same component on the same task (`[engine]
    /// prepare-after-reply`, on by default): the next call skips
    /// instantiation, and no other thread is woken for it. Applies where
    /// calls run inside [`reply_first`](crate::reply_first) and end within
    /// their first slice (most short calls), and `prewarm` is 0: stdio's
    /// and the agent's tool calls and the HTTP stateless lane's (not a
    /// 2025-11-25 HTTP session's, which rmcp's service answers). A prepared sandbox is built
    /// from the component's grants before any call's data exists, serves
    /// exactly one call, and holds a pool slot and its memory until then:
    /// within `prewarm-memory`, never the last quarter of the pool, and
    /// given up as soon as a call waits for room.
    pub prepare_after_reply: bool,
    /// How long a prepared sandbox (`prewarm`, `prepare-after-reply`) may
    /// wait for its call before it is dropped, giving back its pool slot,
    /// memory and descriptors (`[engine] prepared-idle`; default 30 s): a
    /// host whose calls stopped returns to what it holds idle.
    pub prepared_idle: Duration,
    /// Components loaded at once at start and on reload (reading,
    /// deserializing or compiling, `describe`); 0 (the default): one per
    /// core.
    pub load_parallelism: u32,
    /// Longest a component's `describe` may take at load (its own
    /// `timeout` too, whichever is shorter). A load waits for it, and
    /// components join the catalog in order, so this bounds how long one
    /// component can hold up a start or a reload. Default 10 s.
    pub describe_timeout: Duration,
    /// How the guest executor's threads yield the CPU to the rest of the
    /// process and the machine.
    pub guest_priority: GuestPriority,
    /// Threads guests run on past a call's first slice (`[engine]
    /// guest-threads`); 0 (the default): one per core but one, at least
    /// one. The core left over keeps the threads that read and answer
    /// requests responsive while runaway guests keep theirs busy (the
    /// noisy-neighbour p99 in BENCHMARKS.md); set the number of cores to
    /// give long-running tools every core instead.
    pub guest_threads: u32,
}

/// The OS scheduling class of the threads guests run on (`[engine]
/// guest-priority`). Either way, the threads that read requests and answer
/// them win the CPU from a guest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum GuestPriority {
    /// `"background"`: nice 10. A busy guest still gets about a tenth of a
    /// core from a busy host's other work, so a long tool meets its
    /// deadline on a loaded machine.
    #[default]
    Background,
    /// `"idle"` (Linux `SCHED_IDLE`): guests run only on CPU nothing else
    /// wants, so a runaway tool delays a short call's start least (measured
    /// in BENCHMARKS.md, "Noisy neighbour"); but on a machine whose cores
    /// other processes keep busy, a starved guest also notices its
    /// deadline late and holds its pool slot until it runs again. For a
    /// host that serves only toolhost.
    Idle,
}

impl EngineConfig {
    /// Sandboxes calls may hold at once under this configuration:
    /// `max_instances`, or, if that is 0, the most this host affords now
    /// (see [`EngineConfig::max_instances`]). The automatic size depends
    /// on the mappings and address space the process has left, so a
    /// second `Core` in the same process may get a smaller pool.
    pub fn pool_size(&self) -> u32 {
        match self.max_instances {
            0 => crate::sandbox::auto_instances(self, crate::sandbox::HostRoom::now()).0,
            n => n,
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            cache_dir: default_cache_dir(),
            max_instances: 0,
            max_memory: default_max_memory(),
            epoch_tick: Duration::from_millis(1),
            max_wasm_stack: 512 << 10,
            memory_keep_resident: 1 << 20,
            pagemap_scan: true,
            // Off: on a host whose cores are busy, preparing on another
            // thread costs more than it saves (BENCHMARKS.md, "Prewarm").
            prewarm: 0,
            prewarm_memory: 64 << 20,
            // On: it runs on the task that answered, after the reply,
            // so it costs no thread hop (BENCHMARKS.md, "Prepared after
            // the reply").
            prepare_after_reply: true,
            prepared_idle: Duration::from_secs(30),
            load_parallelism: 0,
            describe_timeout: Duration::from_secs(10),
            guest_priority: GuestPriority::Background,
            guest_threads: 0,
        }
    }
}

impl HostConfig {
    /// Use `dir` for compiled components (`None`: no cache).
    pub fn with_cache_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.engine.cache_dir = dir;
        self
    }
    /// Size the pool for `n` sandboxes at once (0: the most this host
    /// affords, the default). See [`EngineConfig::max_instances`].
    pub fn with_max_instances(mut self, n: u32) -> Self {
        self.engine.max_instances = n;
        self
    }
    /// Let all calls together hold at most `bytes` of memory. See
    /// [`EngineConfig::max_memory`].
    pub fn with_max_memory(mut self, bytes: u64) -> Self {
        self.engine.max_memory = bytes;
        self
    }
    /// Prepare up to `n` sandboxes per tool component ahead of its calls
    /// (0: off). See [`EngineConfig::prewarm`].
    pub fn with_prewarm(mut self, n: u32) -> Self {
        self.engine.prewarm = n;
        self
    }
    /// Prepare each component's next sandbox once a call's reply is
    /// written (on by default). See [`EngineConfig::prepare_after_reply`].
    pub fn with_prepare_after_reply(mut self, on: bool) -> Self {
        self.engine.prepare_after_reply = on;
        self
    }
    /// Drop a prepared sandbox its call has not taken within `idle`. See
    /// [`EngineConfig::prepared_idle`].
    pub fn with_prepared_idle(mut self, idle: Duration) -> Self {
        self.engine.prepared_idle = idle;
        self
    }
    /// Load `n` components at once (0: one per core). See
    /// [`EngineConfig::load_parallelism`].
    pub fn with_load_parallelism(mut self, n: u32) -> Self {
        self.engine.load_parallelism = n;
        self
    }
    /// Replace the caps.
    pub fn with_caps(mut self, caps: Caps) -> Self {
        self.caps = caps;
        self
    }
    /// Cap every tool's limits at `max`.
    pub fn with_max_limits(mut self, max: Limits) -> Self {
        self.caps.limits.max = max;
        self
    }
    /// Add policy rules after those already here.
    pub fn with_rules(mut self, rules: impl IntoIterator<Item = Rule>) -> Self {
        self.rules.extend(rules);
        self
    }

    /// Mark the files this config makes the host trust (the config itself,
    /// the JWKS that verifies tenants' tokens, the `[[trust]]` keys and
    /// Sigstore trust roots that admit packages) as host state: a tool granted `rw` over one could
    /// forge a tenant or get a hostile package trusted.
    pub(crate) fn protect_own_files(&self, host: &mut HostState) {
        if let Some(p) = &self.path {
            host.protect(p, "host config", false);
        }
        if let Some(j) = &self.auth.jwt {
            host.protect(&j.jwks_file, "JWKS file ([auth.jwt])", false);
        }
        for t in &self.trust {
            for k in &t.keys {
                host.protect(k, "[[trust]] key", false);
            }
            if let Some(r) = &t.trusted_root {
                host.protect(r, "[[trust]] trusted root", false);
            }
        }
    }

    /// What loading `manifest` on this host would grant, without loading
    /// it: every unit of the manifest narrowed by these caps and prepared
    /// (directories opened and checked) exactly as at load, against the
    /// host's own state (this config file, the compile cache) plus
    /// `protect`, paths no grant may reach (e.g. a package store). Returns
    /// the limits a call would run under, or every refusal. Its
    /// `max_concurrency` is an upper bound: at load, once the component's
    /// shape is known, it may be lowered further so that its calls hold at
    /// most their share of the pool's memory and table permits.
    ///
    /// For reviewing a tool before it is installed; loading it later
    /// decides again.
    pub fn admit(&self, manifest: &Manifest, protect: &[PathBuf]) -> Result<Limits, Vec<CapError>> {
        let mut host = HostState::default();
        if let Some(d) = &self.engine.cache_dir {
            host.protect(d, "compile cache", true);
        }
        self.protect_own_files(&mut host);
        for p in protect {
            host.protect(p, "protected path", true);
        }
        caps::prepare(manifest, &self.caps, &host, self.engine.pool_size()).map(|g| g.limits)
    }

    /// Read a host config file (TOML), starting from the defaults. Every
    /// problem of the file is returned, each with its line.
    pub fn load(path: &Path) -> Result<Self, Diagnostics> {
        let text =
            crate::files::read_trusted_text(path, crate::files::MAX_CONFIG_BYTES).map_err(|e| {
                Diagnostics {
                    items: vec![Diagnostic::file(
                        path,
                        format!("cannot read host config: {e}"),
                    )],
                }
            })?;
        Self::parse(path, &text)
    }

    /// The tool sources of every `[[tenant]]` and `[[agent]]`, each in its
    /// own scope under its own (narrower) caps: path entries as they are,
    /// named tools from each of the server's own sources `base` (e.g.
    /// `--tools`).
    pub fn sources(&self, base: &[PathBuf]) -> Vec<crate::Source> {
        self.tenants_and_agents()
            .flat_map(|t| t.sources(base))
            .collect()
    }

    /// Every `[[tenant]]`, then every `[[agent]]`'s tenant part.
    pub(crate) fn tenants_and_agents(&self) -> impl Iterator<Item = &Tenant> {
        self.tenants
            .iter()
            .chain(self.agents.iter().map(|a| &a.tenant))
    }

    /// Check host config `text` (read from `path`).
    pub fn parse(path: &Path, text: &str) -> Result<Self, Diagnostics> {
        let mut cx = Collector::new(path, text);
        let doc = match toml::de::DeTable::parse(text) {
            Ok(d) => d,
            Err(e) => {
                cx.error(e.span(), e.message().trim().to_string(), None);
                return Err(cx.into_diagnostics());
            }
        };
        let mut c = HostConfig {
            path: Some(std::path::absolute(path).unwrap_or_else(|_| path.to_owned())),
            ..HostConfig::default()
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        // Tenants narrow the host's caps, so they are read once those are.
        let mut tenants = RawTenants::default();
        for (key, value) in doc.get_ref() {
            let k = key.get_ref().as_ref();
            match k {
                "engine" => {
                    if let Some(raw) = section::<RawEngine>(&mut cx, value, ENGINE_KEYS) {
                        raw.apply(&mut c.engine, dir, &mut cx);
                    }
                }
                "limits" => {
                    if let Some(raw) = section::<RawLimits>(&mut cx, value, LIMITS_KEYS) {
                        raw.apply(&mut c.caps.limits, &mut cx);
                    }
                }
                "fs" => {
                    if let Some(raw) = section::<RawFs>(&mut cx, value, FS_KEYS) {
                        raw.apply(&mut c.caps, dir, &mut cx);
                    }
                }
                "env" => {
                    if let Some(raw) = section::<RawEnv>(&mut cx, value, "pass") {
                        c.caps.env.pass = AllowList::only(raw.pass);
                    }
                }
                "network" => {
                    if let Some(raw) = section::<RawNetwork>(&mut cx, value, "allow") {
                        let mut ok = Vec::new();
                        for a in raw.allow {
                            match HostPattern::parse(a.get_ref()) {
                                Ok(p) => ok.push(p),
                                Err(e) => cx.error(Some(a.span()), e.to_string(), None),
                            }
                        }
                        c.caps.net.allow = AllowList::only(ok);
                    }
                }
                "client" => {
                    if let Some(raw) = section::<RawClient>(&mut cx, value, CLIENT_KEYS) {
                        raw.apply(&mut c.caps, &mut cx);
                    }
                }
                "output" => {
                    if let Some(raw) = section::<RawOutput>(&mut cx, value, OUTPUT_KEYS) {
                        raw.apply(&mut c.caps, &mut cx);
                    }
                }
                "audit" => {
                    if let Some(raw) = section::<RawAudit>(&mut cx, value, AUDIT_KEYS) {
                        raw.apply(&mut c.audit, dir, &mut cx);
                    }
                }
                "rule" => match value.get_ref() {
                    toml::de::DeValue::Array(items) => {
                        for item in items.iter() {
                            if let Some(r) =
                                section::<Rule>(&mut cx, item, crate::policy::RULE_KEYS)
                            {
                                c.rules.push(r);
                            }
                        }
                    }
                    _ => cx.error(
                        Some(value.span()),
                        "`rule` must be an array of tables",
                        Some("write each rule as `[[rule]]`".into()),
                    ),
                },
                "trust" => match value.get_ref() {
                    toml::de::DeValue::Array(items) => {
                        for item in items.iter() {
                            if let Some(t) = section::<RawTrustRule>(&mut cx, item, TRUST_KEYS)
                                .and_then(|t| t.resolve(dir, item.span(), &mut cx))
                            {
                                c.trust.push(t);
                            }
                        }
                    }
                    _ => cx.error(
                        Some(value.span()),
                        "`trust` must be an array of tables",
                        Some("write each entry as `[[trust]]`".into()),
                    ),
                },
                "tenant" => tenants.collect(value, false, &mut cx),
                "agent" => tenants.collect(value, true, &mut cx),
                "auth" => c.auth = crate::tenant::parse_auth(value, dir, &mut cx),
                "tasks" => {
                    if let Some(raw) = section::<RawTasks>(&mut cx, value, TASKS_KEYS) {
                        raw.apply(&mut c.tasks, &mut cx);
                    }
                }
                other => cx.error(
                    Some(key.span()),
                    format!("unknown key `{other}`"),
                    Some(format!("allowed here: {TOP_KEYS}")),
                ),
            }
        }
        (c.tenants, c.agents) = tenants.finish(&c.caps, &c.auth, dir, &mut cx);
        cx.finish(c)
    }
}

/// Half the memory this process may use: the machine's physical memory,
/// or its cgroup's `memory.max` (a container's limit) where that is lower.
/// 8 GiB where neither can be read.
fn default_max_memory() -> u64 {
    host_memory().map_or(8 << 30, |m| m / 2)
}

/// The memory this process may use: the machine's, or the lowest memory
/// limit of its cgroup and the cgroups above it if lower; `None` if
/// neither can be read.
pub(crate) fn host_memory() -> Option<u64> {
    let physical = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map(|k| k << 10)
    });
    let cgroup = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|c| cgroup_memory_limit(&c, Path::new("/sys/fs/cgroup")));
    // cgroup v1 writes "no limit" as a number near 2^63: not a size.
    let cgroup = cgroup.filter(|c| *c < 1 << 50);
    match (physical, cgroup) {
        (Some(p), Some(c)) => Some(p.min(c)),
        (Some(m), None) | (None, Some(m)) => Some(m),
        (None, None) => None,
    }
}

/// The lowest memory limit on the way from the process's cgroup (as
/// `/proc/self/cgroup` names it, `membership`) up to the hierarchy's root
/// under `root`: cgroup v2's `memory.max` (a systemd `MemoryMax=` is set on
/// the service's own cgroup, not the root: found by review), else v1's
/// `memory.limit_in_bytes`. Inside a container with its own cgroup
/// namespace the process's cgroup is the root, whose file is then read.
fn cgroup_memory_limit(membership: &str, root: &Path) -> Option<u64> {
    let lowest = |dir: PathBuf, file: &str| -> Option<u64> {
        let mut lowest: Option<u64> = None;
        for d in dir.ancestors().take_while(|d| d.starts_with(root)) {
            let limit = std::fs::read_to_string(d.join(file))
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok());
            if let Some(l) = limit {
                lowest = Some(lowest.map_or(l, |x| x.min(l)));
            }
        }
        lowest
    };
    let under = |path: &str, base: &Path| base.join(path.trim_start_matches('/'));
    for line in membership.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        // A cgroup outside this namespace's root is named with `..`: its
        // files are not under `root`, and its limit not ours to find.
        if Path::new(path)
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            continue;
        }
        if controllers.is_empty() {
            if let Some(l) = lowest(under(path, root), "memory.max") {
                return Some(l);
            }
        } else if controllers.split(',').any(|c| c == "memory") {
            // A controller mounted with others is under their joined names
            // (`memory,blkio`); alone, under its own.
            let base = [root.join(controllers), root.join("memory")]
                .into_iter()
                .find(|b| b.is_dir())?;
            // v1 reports "no limit" as a huge number: kept, the caller
            // takes the smaller of it and the machine's memory.
            return lowest(under(path, &base), "memory.limit_in_bytes");
        }
    }
    None
}

fn default_cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("TOOLHOST_CACHE_DIR") {
        return Some(PathBuf::from(d));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("toolhost"))
}

const TOP_KEYS: &str = "[engine], [limits], [fs], [env], [network], [client], [output], [audit], [[rule]], [[trust]], [[tenant]], [[agent]], [auth], [tasks]";
const TASKS_KEYS: &str = "max, keep, after, max-bytes";
const AUDIT_KEYS: &str =
    "path, fsync, fsync-interval, max-size, keep, queue, raw-arguments, redact";
const ENGINE_KEYS: &str = "cache-dir, max-instances, max-memory, epoch-tick, max-wasm-stack, memory-keep-resident, pagemap-scan, prewarm, prewarm-memory, prepare-after-reply, prepared-idle, load-parallelism, describe-timeout, guest-priority, guest-threads";
pub(crate) const LIMITS_KEYS: &str =
    "timeout, memory, fuel, max-output, max-concurrency, handles, pool-share";
pub(crate) const FS_KEYS: &str = "roots, deny-rw, default-quota, max-quota, max-open";
const CLIENT_KEYS: &str = "requests, max-tokens, max-requests";
const OUTPUT_KEYS: &str = "max-stdio, event-budget, event-overhead";

/// A number within `lo..=hi`, or a diagnostic.
pub(crate) fn in_range<T: PartialOrd + Copy + std::fmt::Display>(
    v: &Spanned<T>,
    lo: T,
    hi: T,
    what: &str,
    cx: &mut Collector<'_>,
) -> Option<T> {
    let n = *v.get_ref();
    if n < lo || n > hi {
        cx.error(
            Some(v.span()),
            format!("{what} must be between {lo} and {hi}"),
            None,
        );
        None
    } else {
        Some(n)
    }
}

/// A size (`"8 MiB"`, or a number of bytes) within `lo..=hi` bytes, or a
/// diagnostic.
pub(crate) fn size(v: &Spanned<SizeText>, lo: u64, hi: u64, cx: &mut Collector<'_>) -> Option<u64> {
    match parse_size(v.get_ref()) {
        Ok(n) if n < lo || n > hi => {
            cx.error(
                Some(v.span()),
                format!(
                    "`{}` must be between {} and {}",
                    v.get_ref(),
                    in_units(lo),
                    in_units(hi)
                ),
                None,
            );
            None
        }
        Ok(n) => Some(n),
        Err(e) => {
            cx.error(Some(v.span()), e, None);
            None
        }
    }
}

/// `n` bytes in the largest unit `parse_size` reads that divides it (`16 MiB`).
fn in_units(n: u64) -> String {
    for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if n != 0 && n.trailing_zeros() >= shift {
            return format!("{} {unit}", n >> shift);
        }
    }
    format!("{n} bytes")
}

fn duration(
    v: &Spanned<String>,
    lo: Duration,
    hi: Duration,
    cx: &mut Collector<'_>,
) -> Option<Duration> {
    match parse_duration(v.get_ref()) {
        Ok(d) if d < lo || d > hi => {
            cx.error(
                Some(v.span()),
                format!("`{}` must be between {lo:?} and {hi:?}", v.get_ref()),
                None,
            );
            None
        }
        Ok(d) => Some(d),
        Err(e) => {
            cx.error(Some(v.span()), e, None);
            None
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawTasks {
    max: Option<Spanned<u32>>,
    keep: Option<Spanned<String>>,
    after: Option<Spanned<String>>,
    max_bytes: Option<Spanned<SizeText>>,
}

impl RawTasks {
    fn apply(self, t: &mut TasksConfig, cx: &mut Collector<'_>) {
        if let Some(n) = self.max.and_then(|n| in_range(&n, 0, 100_000, "max", cx)) {
            t.max = n;
        }
        if let Some(d) = self
            .keep
            .and_then(|d| duration(&d, Duration::from_secs(1), Duration::from_secs(86_400), cx))
        {
            t.keep = d;
        }
        if let Some(d) = self
            .after
            .and_then(|d| duration(&d, Duration::ZERO, Duration::from_secs(3_600), cx))
        {
            t.after = d;
        }
        if let Some(b) = self.max_bytes.and_then(|b| size(&b, 0, 1 << 40, cx)) {
            t.max_bytes = b;
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawEngine {
    cache_dir: Option<Spanned<String>>,
    max_instances: Option<Spanned<u32>>,
    max_memory: Option<Spanned<SizeText>>,
    epoch_tick: Option<Spanned<String>>,
    max_wasm_stack: Option<Spanned<SizeText>>,
    memory_keep_resident: Option<Spanned<SizeText>>,
    pagemap_scan: Option<bool>,
    prewarm: Option<Spanned<u32>>,
    prewarm_memory: Option<Spanned<SizeText>>,
    prepare_after_reply: Option<bool>,
    prepared_idle: Option<Spanned<String>>,
    load_parallelism: Option<Spanned<u32>>,
    describe_timeout: Option<Spanned<String>>,
    guest_priority: Option<Spanned<String>>,
    guest_threads: Option<Spanned<u32>>,
}

/// Most sandboxes prepared ahead per component (`[engine] prewarm`).
const MAX_PREWARM: u32 = 64;

impl RawEngine {
    fn apply(self, e: &mut EngineConfig, dir: &Path, cx: &mut Collector<'_>) {
        if let Some(d) = self.cache_dir {
            e.cache_dir = Some(dir.join(d.get_ref()));
        }
        if let Some(n) = self
            .max_instances
            .and_then(|n| in_range(&n, 0, 1_000_000, "max-instances", cx))
        {
            e.max_instances = n;
        }
        if let Some(s) = self
            .max_memory
            .and_then(|s| size(&s, 16 << 20, 1 << 50, cx))
        {
            e.max_memory = s;
        }
        if let Some(t) = self
            .epoch_tick
            .and_then(|t| duration(&t, Duration::from_micros(100), Duration::from_secs(1), cx))
        {
            e.epoch_tick = t;
        }
        if let Some(s) = self
            .max_wasm_stack
            .and_then(|s| size(&s, 64 << 10, 64 << 20, cx))
        {
            e.max_wasm_stack = s as usize;
        }
        if let Some(s) = self
            .memory_keep_resident
            .and_then(|s| size(&s, 0, 1 << 30, cx))
        {
            e.memory_keep_resident = s as usize;
        }
        if let Some(b) = self.pagemap_scan {
            e.pagemap_scan = b;
        }
        if let Some(v) = self.prewarm
            && let Some(n) = in_range(&v, 0, MAX_PREWARM, "prewarm", cx)
        {
            // Prepared sandboxes never take the last quarter of the pool
            // (an automatic pool is checked when it is sized).
            if e.max_instances != 0 && n > e.max_instances - e.max_instances.div_ceil(4) {
                cx.error(
                    Some(v.span()),
                    format!(
                        "prewarm = {n} does not fit a pool of max-instances = {}: prepared sandboxes may use at most three quarters of the pool; lower `prewarm` (0 turns it off) or raise `max-instances`",
                        e.max_instances
                    ),
                    None,
                );
            } else {
                e.prewarm = n;
            }
        }
        if let Some(s) = self.prewarm_memory.and_then(|s| size(&s, 0, 1 << 40, cx)) {
            e.prewarm_memory = s;
        }
        if let Some(b) = self.prepare_after_reply {
            e.prepare_after_reply = b;
        }
        if let Some(t) = self.prepared_idle.and_then(|t| {
            duration(
                &t,
                Duration::from_millis(100),
                Duration::from_secs(3600),
                cx,
            )
        }) {
            e.prepared_idle = t;
        }
        if let Some(n) = self
            .load_parallelism
            .and_then(|n| in_range(&n, 0, 256, "load-parallelism", cx))
        {
            e.load_parallelism = n;
        }
        if let Some(t) = self
            .describe_timeout
            .and_then(|t| duration(&t, Duration::from_millis(100), Duration::from_secs(300), cx))
        {
            e.describe_timeout = t;
        }
        if let Some(n) = self
            .guest_threads
            .and_then(|n| in_range(&n, 0, 1024, "guest-threads", cx))
        {
            e.guest_threads = n;
        }
        if let Some(p) = self.guest_priority {
            match p.get_ref().as_str() {
                "background" => e.guest_priority = GuestPriority::Background,
                "idle" => e.guest_priority = GuestPriority::Idle,
                other => cx.error(
                    Some(p.span()),
                    format!("unknown guest-priority `{other}`"),
                    Some("use \"background\" (nice 10, the default) or \"idle\" (SCHED_IDLE: only CPU nothing else wants)".into()),
                ),
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawLimits {
    timeout: Option<Spanned<String>>,
    memory: Option<Spanned<SizeText>>,
    fuel: Option<Spanned<u64>>,
    max_output: Option<Spanned<SizeText>>,
    max_concurrency: Option<Spanned<u32>>,
    handles: Option<Spanned<u32>>,
    pool_share: Option<Spanned<f64>>,
}

impl RawLimits {
    pub(crate) fn apply(self, l: &mut LimitCaps, cx: &mut Collector<'_>) {
        if let Some(t) = self
            .timeout
            .and_then(|t| duration(&t, Duration::from_millis(1), MAX_DURATION, cx))
        {
            l.max.timeout = t;
        }
        if let Some(m) = self.memory.and_then(|m| size(&m, 1 << 16, MAX_MEMORY, cx)) {
            l.max.memory = m;
        }
        if let Some(f) = self
            .fuel
            .and_then(|f| in_range(&f, 1, u64::MAX / 2, "fuel", cx))
        {
            l.max.fuel = Some(f);
        }
        if let Some(o) = self.max_output.and_then(|o| size(&o, 1, 1 << 32, cx)) {
            l.max.max_output = o;
        }
        if let Some(n) = self
            .max_concurrency
            .and_then(|n| in_range(&n, 1, 1_000_000, "max-concurrency", cx))
        {
            l.max.max_concurrency = n;
        }
        if let Some(n) = self
            .handles
            .and_then(|n| in_range(&n, 16, 1_000_000, "handles", cx))
        {
            l.handles = n as usize;
        }
        if let Some(s) = self.pool_share.and_then(|s| {
            if s.get_ref().is_finite() && *s.get_ref() > 0.0 && *s.get_ref() <= 1.0 {
                Some(*s.get_ref())
            } else {
                cx.error(
                    Some(s.span()),
                    "pool-share must be above 0 and at most 1",
                    None,
                );
                None
            }
        }) {
            l.pool_share = s;
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawFs {
    roots: Option<Vec<Spanned<String>>>,
    deny_rw: Option<bool>,
    default_quota: Option<Spanned<SizeText>>,
    max_quota: Option<Spanned<SizeText>>,
    max_open: Option<Spanned<u64>>,
}

impl RawFs {
    pub(crate) fn apply(self, c: &mut Caps, dir: &Path, cx: &mut Collector<'_>) {
        if let Some(roots) = self.roots {
            let mut ok = Vec::new();
            for r in roots {
                let p = dir.join(r.get_ref());
                match caps::fs::resolve_root(&p) {
                    Ok(p) => ok.push(p),
                    Err(e) => cx.error(
                        Some(r.span()),
                        format!("root `{}` ({}): {e}", r.get_ref(), p.display()),
                        None,
                    ),
                }
            }
            c.fs.roots = AllowList::only(ok);
        }
        if let Some(b) = self.deny_rw {
            c.fs.deny_rw = b;
        }
        // Unnamed, what `c` had is kept (a tenant's `[tenant.fs]` without
        // them keeps the host's).
        if let Some(q) = self.default_quota {
            c.fs.default_quota = size(&q, 0, u64::MAX, cx);
        }
        if let Some(q) = self.max_quota {
            c.fs.max_quota = size(&q, 0, u64::MAX, cx);
        }
        if let Some(n) = self.max_open {
            match *n.get_ref() {
                v @ 1..=65_536 => c.fs.max_open = Some(v as usize),
                v => cx.error(
                    Some(n.span()),
                    format!("`max-open = {v}` must be between 1 and 65536"),
                    None,
                ),
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEnv {
    pub(crate) pass: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNetwork {
    pub(crate) allow: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawClient {
    requests: Option<Vec<Spanned<String>>>,
    max_tokens: Option<Spanned<u64>>,
    max_requests: Option<Spanned<u32>>,
}

impl RawClient {
    fn apply(self, c: &mut Caps, cx: &mut Collector<'_>) {
        if let Some(reqs) = self.requests {
            let mut ok = Vec::new();
            for r in reqs {
                match ClientRequestKind::from_name(r.get_ref()) {
                    Some(k) => ok.push(k),
                    None => cx.error(
                        Some(r.span()),
                        format!("`{}` is not a client request kind", r.get_ref()),
                        Some("use `sampling`, `elicitation` or `roots`".into()),
                    ),
                }
            }
            c.client.requests = AllowList::only(ok);
        }
        if let Some(n) = self
            .max_tokens
            .and_then(|n| in_range(&n, 1, 10_000_000, "max-tokens", cx))
        {
            c.client.max_tokens = n;
        }
        if let Some(n) = self.max_requests.and_then(|n| {
            let most = caps::client::MAX_REQUESTS_PER_CALL as u32;
            in_range(&n, 0, most, "max-requests", cx)
        }) {
            c.client.max_requests = n;
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawOutput {
    max_stdio: Option<Spanned<SizeText>>,
    event_budget: Option<Spanned<SizeText>>,
    event_overhead: Option<Spanned<u32>>,
}

impl RawOutput {
    fn apply(self, c: &mut Caps, cx: &mut Collector<'_>) {
        if let Some(n) = self.max_stdio.and_then(|n| size(&n, 1 << 10, 64 << 20, cx)) {
            c.stdio.max_stdio = n as usize;
        }
        if let Some(n) = self.event_budget.and_then(|n| size(&n, 0, 64 << 20, cx)) {
            c.stdio.event_budget = n as usize;
        }
        if let Some(n) = self
            .event_overhead
            .and_then(|n| in_range(&n, 1, 1 << 20, "event-overhead", cx))
        {
            c.stdio.event_overhead = n as usize;
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawAudit {
    path: Option<Spanned<String>>,
    fsync: Option<Spanned<String>>,
    fsync_interval: Option<Spanned<String>>,
    max_size: Option<Spanned<SizeText>>,
    keep: Option<Spanned<u32>>,
    queue: Option<Spanned<u32>>,
    raw_arguments: Option<bool>,
    redact: Option<Vec<Spanned<String>>>,
}

impl RawAudit {
    fn apply(self, a: &mut AuditConfig, dir: &Path, cx: &mut Collector<'_>) {
        if let Some(p) = self.path {
            if p.get_ref().is_empty() {
                cx.error(Some(p.span()), "`path` must name a file", None);
            } else {
                a.path = Some(dir.join(p.get_ref()));
            }
        }
        if let Some(f) = self.fsync {
            match FsyncPolicy::from_name(f.get_ref()) {
                Some(p) => a.fsync = p,
                None => cx.error(
                    Some(f.span()),
                    format!("`{}` is not an fsync policy", f.get_ref()),
                    Some("use `always`, `interval` or `never`".into()),
                ),
            }
        }
        if let Some(t) = self
            .fsync_interval
            .and_then(|t| duration(&t, Duration::from_millis(1), Duration::from_secs(3600), cx))
        {
            a.fsync_interval = t;
        }
        if let Some(n) = self.max_size.and_then(|n| size(&n, 4 << 10, 1 << 40, cx)) {
            a.max_size = n;
        }
        if let Some(n) = self.keep.and_then(|n| in_range(&n, 0, 1000, "keep", cx)) {
            a.keep = n;
        }
        if let Some(n) = self
            .queue
            .and_then(|n| in_range(&n, 1, 1_000_000, "queue", cx))
        {
            a.queue = n as usize;
        }
        if let Some(b) = self.raw_arguments {
            a.raw_arguments = b;
        }
        if let Some(keys) = self.redact {
            a.redact = keys.into_iter().map(Spanned::into_inner).collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_section_reads_and_every_problem_is_reported() {
        let ok = HostConfig::parse(
            Path::new("/etc/toolhost.toml"),
            "[engine]\nmax-instances = 64\n[limits]\nmemory = \"256 MiB\"\nhandles = 100\n[env]\npass = [\"LANG\"]\n[network]\nallow = [\"api.example.com\"]\n[client]\nrequests = [\"elicitation\"]\nmax-tokens = 10\n[output]\nevent-budget = \"1 KiB\"\n[[rule]]\neffect = \"deny\"\ntool = \"x\"\n",
        )
        .unwrap();
        assert_eq!(ok.engine.max_instances, 64);
        assert_eq!(ok.caps.limits.max.memory, 256 << 20);
        assert_eq!(ok.caps.limits.handles, 100);
        assert!(ok.caps.env.allows("LANG") && !ok.caps.env.allows("HOME"));
        assert!(
            ok.caps
                .client
                .requests
                .allows(|k| *k == ClientRequestKind::Elicitation)
        );
        assert!(
            !ok.caps
                .client
                .requests
                .allows(|k| *k == ClientRequestKind::Sampling)
        );
        assert_eq!(ok.caps.stdio.event_budget, 1024);
        assert_eq!(ok.rules.len(), 1);

        let e = HostConfig::parse(
            Path::new("t.toml"),
            "[engine]\nmax-instances = 4294967295\n[limits]\ntimeout = \"999999999999s\"\nmemmory = \"1 MiB\"\npool-share = 2.0\n[bogus]\n[[rule]]\neffect = \"maybe\"\ntool = \"x\"\n",
        )
        .unwrap_err();
        let lines: Vec<usize> = e.items.iter().map(|d| d.line.unwrap()).collect();
        assert_eq!(lines, vec![2, 4, 5, 6, 7, 9], "{}", e.render());
    }

    #[test]
    fn a_size_is_a_text_or_a_number_of_bytes() {
        let ok = HostConfig::parse(
            Path::new("t.toml"),
            "[limits]\nmemory = 268435456\nmax-output = \"64 KiB\"\n[output]\nevent-budget = 1_024\n",
        )
        .unwrap();
        assert_eq!(ok.caps.limits.max.memory, 256 << 20);
        assert_eq!(ok.caps.limits.max.max_output, 64 << 10);
        assert_eq!(ok.caps.stdio.event_budget, 1024);
        for (bad, says) in [
            ("-5", "a size cannot be negative (-5)"),
            (
                "1.5",
                r#"expected a size: a number of bytes, or a text such as "64 MiB""#,
            ),
        ] {
            let e = HostConfig::parse(Path::new("t.toml"), &format!("[limits]\nmemory = {bad}\n"))
                .unwrap_err();
            assert_eq!(e.items[0].line, Some(2));
            assert!(e.render().contains(says), "{}", e.render());
        }
        // The manifest reads sizes the same way.
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("t.wasm"), "").unwrap();
        let m = Manifest::parse(
            &d.path().join("t.toml"),
            &format!(
                "[component]\npath = \"t.wasm\"\nsha256 = \"{}\"\n[limits]\nmemory = 1048576\n",
                "0".repeat(64)
            ),
        )
        .unwrap();
        assert_eq!(m.limits.memory, 1 << 20);
    }

    #[test]
    fn no_tool_is_granted_the_keys_this_config_trusts() {
        // rw over the JWKS would let a tool mint any tenant's token; rw over
        // a [[trust]] key, get a hostile package trusted.
        let d = tempfile::tempdir().unwrap();
        for dir in ["keys", "auth", "data"] {
            std::fs::create_dir(d.path().join(dir)).unwrap();
        }
        std::fs::write(d.path().join("keys/acme.pub"), "k").unwrap();
        std::fs::create_dir(d.path().join("sigstore")).unwrap();
        std::fs::write(d.path().join("sigstore/trusted_root.json"), "{}").unwrap();
        std::fs::write(d.path().join("auth/jwks.json"), "{}").unwrap();
        std::fs::write(d.path().join("t.wasm"), "").unwrap();
        let cfg = HostConfig::parse(
            &d.path().join("host.toml"),
            "[[trust]]\nsource = \"r.example/*\"\nkeys = [\"keys/acme.pub\"]\n[[trust]]\nsource = \"s.example/*\"\nkeyless = [{ issuer = \"i\", subject = \"s\" }]\ntrusted-root = \"sigstore/trusted_root.json\"\n[auth.jwt]\nissuer = \"i\"\naudience = \"a\"\njwks-file = \"auth/jwks.json\"\n",
        )
        .unwrap();
        let manifest = |dir: &str| {
            Manifest::parse(
                &d.path().join("t.toml"),
                &format!(
                    "[component]\npath = \"t.wasm\"\nsha256 = \"{}\"\n[[fs]]\nhost = \"{}\"\nguest = \"/d\"\nmode = \"rw\"\n",
                    "0".repeat(64),
                    d.path().join(dir).display()
                ),
            )
            .unwrap()
        };
        for (dir, what) in [
            ("keys", "[[trust]] key"),
            ("auth", "JWKS"),
            ("sigstore", "[[trust]] trusted root"),
        ] {
            let e = cfg.admit(&manifest(dir), &[]).unwrap_err();
            let text = e
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ");
            assert!(text.contains(what), "{dir}: {text}");
        }
        assert!(cfg.admit(&manifest("data"), &[]).is_ok());
    }

    #[test]
    fn load_parallelism_reads_and_is_bounded() {
        let ok =
            HostConfig::parse(Path::new("t.toml"), "[engine]\nload-parallelism = 3\n").unwrap();
        assert_eq!(ok.engine.load_parallelism, 3);
        assert_eq!(HostConfig::default().engine.load_parallelism, 0);
        let e = HostConfig::parse(Path::new("t.toml"), "[engine]\nload-parallelism = 1000\n")
            .unwrap_err();
        assert!(
            e.render()
                .contains("load-parallelism must be between 0 and 256"),
            "{}",
            e.render()
        );
    }

    #[test]
    fn guest_priority_reads_and_refuses_what_it_does_not_know() {
        let ok = HostConfig::parse(Path::new("t.toml"), "[engine]\nguest-priority = \"idle\"\n")
            .unwrap();
        assert_eq!(ok.engine.guest_priority, GuestPriority::Idle);
        assert_eq!(
            HostConfig::default().engine.guest_priority,
            GuestPriority::Background
        );
        let e = HostConfig::parse(
            Path::new("t.toml"),
            "[engine]\nguest-priority = \"realtime\"\n",
        )
        .unwrap_err();
        let text = e.render();
        assert!(
            text.contains("unknown guest-priority `realtime`") && text.contains("\"idle\""),
            "{text}"
        );
    }

    #[test]
    fn the_memory_limit_is_the_lowest_on_the_way_up_from_the_process_cgroup() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        // `file` under cgroup directory `dir`, which it makes.
        let limit = |dir: &str, file: &str, value: &str| {
            let dir = root.join(dir);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(file), value).unwrap();
        };
        limit("", "memory.max", "max\n");
        limit("system.slice", "memory.max", "8589934592\n");
        limit(
            "system.slice/toolhost.service",
            "memory.max",
            "2147483648\n",
        );
        let v2 = "0::/system.slice/toolhost.service\n";
        assert_eq!(cgroup_memory_limit(v2, root), Some(2 << 30));
        // The parent's limit binds when it is the lower.
        limit("system.slice", "memory.max", "1073741824\n");
        assert_eq!(cgroup_memory_limit(v2, root), Some(1 << 30));
        // In its own namespace the process is at the root: no limit here.
        assert_eq!(cgroup_memory_limit("0::/\n", root), None);
        // A malformed line is skipped, and a cgroup outside the namespace
        // (named with `..`) is not looked for outside the root.
        assert_eq!(
            cgroup_memory_limit("junk\n0::/../system.slice\n", root),
            None
        );
        assert_eq!(
            cgroup_memory_limit(&format!("junk\n{v2}"), root),
            Some(1 << 30)
        );
        // cgroup v1: the memory controller's hierarchy.
        limit("memory/docker/abc", "memory.limit_in_bytes", "536870912\n");
        assert_eq!(
            cgroup_memory_limit("12:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n", root),
            Some(512 << 20)
        );
        // cgroup v1, the memory controller mounted with another.
        limit(
            "blkio,memory/docker/def",
            "memory.limit_in_bytes",
            "268435456\n",
        );
        assert_eq!(
            cgroup_memory_limit("4:blkio,memory:/docker/def\n", root),
            Some(256 << 20)
        );
    }

    #[test]
    fn the_pool_is_sized_for_the_host_unless_set() {
        let auto = HostConfig::default().engine;
        assert_eq!(auto.max_instances, 0);
        let n = auto.pool_size();
        assert!((16..=10_000).contains(&n), "{n}");
        // Resolved once: the prewarm a small automatic pool cannot hold
        // is lowered, not refused.
        let tiny = EngineConfig {
            max_memory: 1 << 50,
            prewarm: 64,
            ..auto.clone()
        };
        let tiny = crate::sandbox::resolve_in(&tiny, crate::sandbox::HostRoom::now());
        assert_eq!((tiny.max_instances, tiny.prewarm), (16, 12));
        let set = HostConfig::parse(Path::new("t.toml"), "[engine]\nmax-instances = 300\n")
            .unwrap()
            .engine;
        assert_eq!(
            (
                set.pool_size(),
                crate::sandbox::resolve_in(&set, crate::sandbox::HostRoom::now()).max_instances
            ),
            (300, 300)
        );
        let zero = HostConfig::parse(
            Path::new("t.toml"),
            "[engine]\nmax-instances = 0\nprewarm = 64\n",
        )
        .unwrap()
        .engine;
        assert_eq!((zero.max_instances, zero.prewarm), (0, 64));
    }

    #[test]
    fn guest_threads_reads_a_count() {
        let ok = HostConfig::parse(Path::new("t.toml"), "[engine]\nguest-threads = 3\n").unwrap();
        assert_eq!(ok.engine.guest_threads, 3);
        assert_eq!(HostConfig::default().engine.guest_threads, 0);
        let e = HostConfig::parse(Path::new("t.toml"), "[engine]\nguest-threads = 5000\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("guest-threads"), "{e}");
    }

    #[test]
    fn max_memory_reads_a_size_and_refuses_one_too_small() {
        let ok =
            HostConfig::parse(Path::new("t.toml"), "[engine]\nmax-memory = \"6 GiB\"\n").unwrap();
        assert_eq!(ok.engine.max_memory, 6 << 30);
        assert!(HostConfig::default().engine.max_memory >= 16 << 20);
        let e = HostConfig::parse(Path::new("t.toml"), "[engine]\nmax-memory = \"1 MiB\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`1 MiB` must be between 16 MiB and 1048576 GiB"),
            "{e}"
        );
    }

    #[test]
    fn prewarm_reads_and_must_fit_the_pool() {
        let ok = HostConfig::parse(
            Path::new("t.toml"),
            "[engine]\nmax-instances = 16\nprewarm = 4\nprewarm-memory = \"8 MiB\"\n",
        )
        .unwrap();
        assert_eq!((ok.engine.prewarm, ok.engine.prewarm_memory), (4, 8 << 20));
        let off = HostConfig::parse(Path::new("t.toml"), "[engine]\nprewarm = 0\n").unwrap();
        assert_eq!(off.engine.prewarm, 0);
        assert!(off.engine.prepare_after_reply, "on by default");
        let after = HostConfig::parse(
            Path::new("t.toml"),
            "[engine]\nprepare-after-reply = false\n",
        )
        .unwrap();
        assert!(!after.engine.prepare_after_reply);
        assert_eq!(off.engine.prepared_idle, Duration::from_secs(30));
        let idle =
            HostConfig::parse(Path::new("t.toml"), "[engine]\nprepared-idle = \"2s\"\n").unwrap();
        assert_eq!(idle.engine.prepared_idle, Duration::from_secs(2));
        let e = HostConfig::parse(Path::new("t.toml"), "[engine]\nprepared-idle = \"1ms\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("t.toml:2:17: `1ms` must be between 100ms and 3600s"),
            "{e}"
        );
        let e = HostConfig::parse(Path::new("t.toml"), "[engine]\nprepare-after-reply = 1\n")
            .unwrap_err()
            .to_string();
        // The line and column point at the value.
        assert!(
            e.contains("t.toml:2:23: invalid type: integer `1`, expected a boolean"),
            "{e}"
        );
        let e = HostConfig::parse(
            Path::new("t.toml"),
            "[engine]\nmax-instances = 4\nprewarm = 4\n",
        )
        .unwrap_err();
        assert!(
            e.render().contains("three quarters of the pool"),
            "{}",
            e.render()
        );
        let e = HostConfig::parse(Path::new("t.toml"), "[engine]\nprewarm = 1000\n").unwrap_err();
        assert!(
            e.render().contains("prewarm must be between 0 and 64"),
            "{}",
            e.render()
        );
    }

    #[test]
    fn audit_section_reads_and_its_errors_have_lines() {
        let ok = HostConfig::parse(
            Path::new("/etc/toolhost/host.toml"),
            "[audit]\npath = \"log/audit.jsonl\"\nfsync = \"always\"\nfsync-interval = \"250ms\"\nmax-size = \"10 MiB\"\nkeep = 3\nqueue = 64\nraw-arguments = true\nredact = [\"password\", \"token\"]\n",
        )
        .unwrap();
        let a = &ok.audit;
        assert_eq!(
            a.path.as_deref(),
            Some(Path::new("/etc/toolhost/log/audit.jsonl")),
            "relative to the config file"
        );
        assert_eq!(a.fsync, FsyncPolicy::Always);
        assert_eq!(a.fsync_interval, Duration::from_millis(250));
        assert_eq!(a.max_size, 10 << 20);
        assert_eq!((a.keep, a.queue), (3, 64));
        assert!(a.raw_arguments);
        assert_eq!(a.redact, ["password", "token"]);
        // Nothing set: the defaults, and no audit log.
        let d = HostConfig::parse(Path::new("h.toml"), "").unwrap();
        assert_eq!(d.audit, AuditConfig::default());
        assert!(d.audit.path.is_none());

        let e = HostConfig::parse(
            Path::new("h.toml"),
            "[audit]\nfsync = \"sometimes\"\nmax-size = \"1 KiB\"\nkeep = 5000\nqueue = 0\nfsync-interval = \"soon\"\n",
        )
        .unwrap_err();
        let lines: Vec<usize> = e.items.iter().map(|d| d.line.unwrap()).collect();
        assert_eq!(lines, vec![2, 3, 4, 5, 6], "{}", e.render());
        assert!(e.items[0].message.contains("sometimes"), "{}", e.render());
        let e = HostConfig::parse(Path::new("h.toml"), "[audit]\npath = \"a\"\nrotate = 1\n")
            .unwrap_err();
        assert_eq!(e.items[0].line, Some(3), "{}", e.render());
        assert!(e.items[0].message.contains("rotate"), "{}", e.render());
    }
}
