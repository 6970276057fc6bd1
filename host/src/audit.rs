//! The audit log: one JSON line per call and per denied decision, saying
//! who ran what (tenant, caller, session, tool and its sha256, a digest of
//! the arguments), what the policy decided and by which rule, how the call
//! ended, and what it cost (duration, queue wait, fuel, peak memory).
//!
//! Lines are written by a dedicated thread, never on the call path, through
//! a bounded queue (`[audit] queue` lines): a call whose line finds the queue
//! full waits for room, so no call is ever left out of the log (the wait is
//! counted in `toolhost_audit_queue_full_total`). With `fsync = "always"` a
//! call returns only once its line is on disk (lines of concurrent calls
//! share one `fsync`); with `"interval"` the file is synced at most that
//! long after a line is written; with `"never"` the kernel decides. The file
//! is rotated by size (`audit.jsonl` → `audit.jsonl.1` … `.N`), and whatever
//! is queued is written and synced on [`Audit::flush`] and when the last
//! handle is dropped.
//!
//! Audit records what happened; it decides nothing.

use prometheus_client::metrics::counter::Counter;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

/// When the audit file is synced to disk (`[audit] fsync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FsyncPolicy {
    /// After every batch of lines; a call returns only once its line is on
    /// disk. Survives a crash of the process or of the machine.
    Always,
    /// At most [`AuditConfig::fsync_interval`] after a line is written.
    /// Survives a crash of the process (lines are written at once), not
    /// always of the machine.
    #[default]
    Interval,
    /// Never explicitly: the kernel writes the file back when it likes.
    Never,
}

impl FsyncPolicy {
    /// The policy named `s` (`always`, `interval`, `never`).
    pub fn from_name(s: &str) -> Option<FsyncPolicy> {
        match s {
            "always" => Some(FsyncPolicy::Always),
            "interval" => Some(FsyncPolicy::Interval),
            "never" => Some(FsyncPolicy::Never),
            _ => None,
        }
    }
}

/// How the audit log is written (`[audit]` in the host config).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AuditConfig {
    /// The file; `None`: no audit log (unless the CLI's `--audit` names one).
    pub path: Option<PathBuf>,
    /// When the file is synced.
    pub fsync: FsyncPolicy,
    /// The longest a written line waits for a sync with
    /// [`FsyncPolicy::Interval`].
    pub fsync_interval: Duration,
    /// The file is rotated before a line would take it past this size.
    pub max_size: u64,
    /// Rotated files kept (`audit.jsonl.1` is the newest); 0 keeps none.
    pub keep: u32,
    /// Lines that may wait for the writer; a call finding the queue full
    /// waits for room.
    pub queue: usize,
    /// Record the arguments themselves (after redaction), not only their
    /// digest.
    pub raw_arguments: bool,
    /// Object keys whose values are replaced by `"[redacted]"` (at any
    /// depth) in recorded arguments.
    pub redact: Vec<String>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            path: None,
            fsync: FsyncPolicy::default(),
            fsync_interval: Duration::from_secs(1),
            max_size: 100 << 20,
            keep: 5,
            queue: 4096,
            raw_arguments: false,
            redact: Vec::new(),
        }
    }
}

/// Largest recorded arguments (JSON bytes, after redaction); larger ones
/// are left out and `arguments_truncated` is set.
const MAX_RAW_ARGUMENTS: usize = 64 << 10;

/// How long the writer lets lines gather after a batch (see
/// `WriterState::run`).
const LINGER: Duration = Duration::from_millis(1);

/// After a rotation failed, how long the log grows past `max-size` before
/// the next try: a file system out of inodes or a process out of
/// descriptors is not retried on every line.
const ROTATE_RETRY: Duration = Duration::from_secs(1);

/// At most one error line a minute while the log cannot be written (each
/// failure is counted in `toolhost_audit_write_errors_total`).
const ERROR_LOG_EVERY: Duration = Duration::from_secs(60);
/// Largest error text recorded.
const MAX_DETAIL: usize = 4 << 10;
/// Largest tool (or method, URI, prompt) name recorded: it is the client's
/// own text, and a line per call must not carry megabytes of it.
pub(crate) const MAX_TOOL: usize = 256;

/// Refusals a client can repeat as fast as it likes (a tenant over a
/// quota, or over a front end's bound): the caller counts every one; at
/// most one a second per scope and quota gets an audit line, which says how
/// many it stands for. Written without waiting for room in the log's queue
/// ([`Audit::record_decision`]), so a flood of refusals neither rotates
/// everyone's records out of the log nor holds up other tenants' lines.
#[derive(Default)]
pub(crate) struct Thinned {
    /// Per scope and quota: when its last line was written, and the
    /// refusals since.
    lines: Mutex<HashMap<ThinnedKey, (Instant, u64)>>,
}

/// A scope and what it was refused for.
type ThinnedKey = (String, &'static str);

impl Thinned {
    /// Note a refusal of `scope` at `quota`: `Some(n)` when a line is due
    /// now, for `n` refusals (this one included).
    pub(crate) fn note(&self, scope: &str, quota: &'static str) -> Option<u64> {
        let now = Instant::now();
        let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        match lines.get_mut(&(scope.to_string(), quota)) {
            Some((last, since)) => {
                *since += 1;
                if now.duration_since(*last) < Duration::from_secs(1) {
                    return None;
                }
                *last = now;
                Some(std::mem::take(since))
            }
            None => {
                lines.insert((scope.to_string(), quota), (now, 0));
                Some(1)
            }
        }
    }
}

/// Whether `c` can forge what a reader sees of a line: a control
/// character (a newline, a terminal escape) or a bidi control.
pub(crate) fn forges(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with control characters (newlines, terminal escapes) and bidi
/// controls escaped (`\u{1b}`): how a client's or a tool's text is shown
/// where a reader takes lines and columns at face value (a log, the audit
/// table). A newline in a tool name had printed a forged record of another
/// tenant on a line of its own (found by review).
pub(crate) fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(forges) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if forges(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Untrusted `text` (a client's or a guest's) as a log line or a message
/// shows it: [`escape_controls`], then cut to `max` bytes
/// ([`bounded`]); borrowed when it is short and clean.
pub(crate) fn shown(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    let escaped = escape_controls(text);
    if escaped.len() <= max {
        return escaped;
    }
    std::borrow::Cow::Owned(bounded(&escaped, max))
}

/// `s` cut to at most `max` bytes (on a character boundary), `…` marking a
/// cut.
pub(crate) fn bounded(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// One line of the audit log.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct AuditRecord {
    /// When the call ended (or the decision was made), RFC 3339 UTC.
    pub time: String,
    /// `call`, or `decision` for a refusal that is not a tool call (an
    /// unauthenticated request, a quota).
    pub event: &'static str,
    /// Whose tools: the tenant (the call's scope for now).
    pub tenant: String,
    /// The call's scope.
    pub scope: String,
    /// Which front end or agent called (`mcp-http`, `cli`, `agent:NAME`).
    pub caller: String,
    /// The client's session, when the front end knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Whom the caller acts for, when the front end knows it (an HTTP
    /// tenant's JWT `sub`), cut to 256 bytes as `tool` is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// The tool named, as the client wrote it (cut to 256 bytes, ending
    /// in `…` when cut).
    pub tool: String,
    /// The sha256 of the tool's component, when the tool exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_sha256: Option<String>,
    /// The sha256 of the arguments as canonical JSON (keys sorted, no
    /// spaces): equal arguments have equal digests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args_sha256: Option<String>,
    /// Size of the arguments as canonical JSON.
    pub args_bytes: usize,
    /// The arguments, redacted, when `[audit] raw-arguments` is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Value>,
    /// Set when the arguments were too large to record.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub arguments_truncated: bool,
    /// `allow`, `deny`, or `none` (the tool does not exist for this
    /// scope, so nothing was decided).
    pub decision: &'static str,
    /// The policy rule that decided (1-based, in evaluation order: the host
    /// config's rules first); absent when no rule matched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<usize>,
    /// Why the call was denied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `ok`, or the error kind that ended the call (`CallError::code`).
    pub outcome: &'static str,
    /// The error, if the call failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// How long the call took, queueing included.
    pub duration_us: u64,
    /// How long the call waited for room in the sandbox pool.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_wait_us: Option<u64>,
    /// Fuel the guest consumed. Exact for a call that returns; for one
    /// stopped by its deadline or cancellation it may be low by up to ten
    /// million units (compiled code writes its count back periodically).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fuel_used: Option<u64>,
    /// The most memory the call held at once (linear memories and the
    /// host-side buffers charged to it), in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_memory: Option<u64>,
}

impl AuditRecord {
    /// A record of `tool` in `scope` by `caller`, timed now, with nothing
    /// decided yet.
    pub(crate) fn new(scope: &str, caller: &str, tool: &str) -> AuditRecord {
        AuditRecord {
            time: humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
            event: "call",
            tenant: scope.to_string(),
            scope: scope.to_string(),
            caller: caller.to_string(),
            session: None,
            principal: None,
            tool: bounded(tool, MAX_TOOL),
            tool_sha256: None,
            args_sha256: None,
            args_bytes: 0,
            arguments: None,
            arguments_truncated: false,
            decision: "none",
            rule: None,
            reason: None,
            outcome: "ok",
            detail: None,
            duration_us: 0,
            queue_wait_us: None,
            fuel_used: None,
            peak_memory: None,
        }
    }

    /// Set the error text, bounded.
    pub(crate) fn set_detail(&mut self, d: String) {
        self.detail = Some(if d.len() > MAX_DETAIL {
            bounded(&d, MAX_DETAIL)
        } else {
            d
        });
    }
}

/// `v` as canonical JSON: object keys sorted at every depth, no spaces.
pub(crate) fn canonical_json(v: &Value) -> String {
    fn write(v: &Value, out: &mut String) {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    write(&m[k], out);
                }
                out.push('}');
            }
            Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(x, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(v, &mut out);
    out
}

/// `v` with the value of every object key in `keys` replaced, at any depth.
fn redact(v: &Value, keys: &[String]) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| {
                    let x = if keys.iter().any(|r| r == k) {
                        Value::String("[redacted]".into())
                    } else {
                        redact(x, keys)
                    };
                    (k.clone(), x)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|x| redact(x, keys)).collect()),
        other => other.clone(),
    }
}

/// What the writer thread is asked to do.
enum Msg {
    /// A line (with its newline); the sender is told once it is written
    /// (and synced, with `fsync = "always"`).
    Line(Vec<u8>, Option<oneshot::Sender<()>>, OwnedSemaphorePermit),
    /// Write and sync everything before this, then say so.
    Flush(oneshot::Sender<()>),
}

/// The audit log's counters, shared with the metrics registry.
#[derive(Clone, Default)]
pub(crate) struct AuditCounters {
    pub(crate) records: Counter,
    pub(crate) queue_full: Counter,
    pub(crate) dropped: Counter,
    pub(crate) write_errors: Counter,
}

struct Writer {
    tx: Mutex<Option<std::sync::mpsc::Sender<Msg>>>,
    room: Arc<Semaphore>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    config: AuditConfig,
    path: PathBuf,
    counters: AuditCounters,
}

impl Drop for Writer {
    /// Closing the queue makes the thread write, sync and exit; wait for it
    /// so nothing queued is lost on a clean shutdown.
    fn drop(&mut self) {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }
}

/// A place in the audit queue, taken by [`Audit::room`] (the queue's
/// semaphore permit).
pub(crate) struct Room(OwnedSemaphorePermit);

/// Where audit records go. A cheap-clone handle; the writer stops (after
/// writing everything queued) when the last clone is dropped.
#[derive(Clone, Default)]
pub struct Audit {
    w: Option<Arc<Writer>>,
}

impl Audit {
    /// A field of an audit record as a table of them shows it: control
    /// and bidi-control characters escaped (`--json` shows records as
    /// stored). A tool name is its client's text.
    pub fn printable(field: &str) -> std::borrow::Cow<'_, str> {
        escape_controls(field)
    }

    /// No audit log.
    pub fn disabled() -> Audit {
        Audit::default()
    }

    /// The file records go to, if any.
    pub fn path(&self) -> Option<&Path> {
        self.w.as_ref().map(|w| w.path.as_path())
    }

    /// The rotated files' names (`path.1` … `path.keep`, and `path.new`,
    /// the next log while a rotation makes it), which are as much the
    /// host's own as the log itself.
    pub fn rotated_paths(&self) -> Vec<PathBuf> {
        match &self.w {
            Some(w) => (1..=w.config.keep)
                .map(|i| rotated(&w.path, i))
                .chain([next_log(&w.path)])
                .collect(),
            None => Vec::new(),
        }
    }

    /// Append JSON lines to `path` (created if missing) with the default
    /// settings.
    pub fn to_file(path: &Path) -> std::io::Result<Audit> {
        Audit::open(&AuditConfig {
            path: Some(path.to_owned()),
            ..AuditConfig::default()
        })
    }

    /// The audit log `config` describes (disabled if it names no file).
    pub fn open(config: &AuditConfig) -> std::io::Result<Audit> {
        let Some(path) = &config.path else {
            return Ok(Audit::disabled());
        };
        let path = std::path::absolute(path)?;
        let file = open_append(&path)?;
        let size = file.metadata()?.len();
        let (tx, rx) = std::sync::mpsc::channel::<Msg>();
        let counters = AuditCounters::default();
        let mut state = WriterState {
            file: std::io::BufWriter::with_capacity(64 << 10, file),
            size,
            path: path.clone(),
            config: config.clone(),
            dirty_since: None,
            counters: counters.clone(),
            rotate_after: None,
            errors: Errors::default(),
        };
        let thread = std::thread::Builder::new()
            .name("toolhost-audit".into())
            .spawn(move || state.run(rx))?;
        Ok(Audit {
            w: Some(Arc::new(Writer {
                tx: Mutex::new(Some(tx)),
                room: Arc::new(Semaphore::new(config.queue.max(1))),
                thread: Mutex::new(Some(thread)),
                config: config.clone(),
                path,
                counters,
            })),
        })
    }

    /// Whether records go anywhere.
    pub fn enabled(&self) -> bool {
        self.w.is_some()
    }

    pub(crate) fn counters(&self) -> Option<AuditCounters> {
        self.w.as_ref().map(|w| w.counters.clone())
    }

    /// Record the arguments of `rec` as configured: their digest always,
    /// the (redacted) arguments themselves if asked.
    pub(crate) fn describe_arguments(&self, rec: &mut AuditRecord, args: &Value) {
        let text = canonical_json(args);
        rec.args_bytes = text.len();
        rec.args_sha256 = Some(hex::encode(Sha256::digest(text.as_bytes())));
        if let Some(w) = &self.w
            && w.config.raw_arguments
        {
            let r = redact(args, &w.config.redact);
            if canonical_json(&r).len() > MAX_RAW_ARGUMENTS {
                rec.arguments_truncated = true;
            } else {
                rec.arguments = Some(r);
            }
        }
    }

    fn line(rec: &AuditRecord) -> Vec<u8> {
        let mut line = serde_json::to_vec(rec).unwrap_or_default();
        line.push(b'\n');
        line
    }

    /// Append a record, waiting for room in the queue if it is full and,
    /// with `fsync = "always"`, until it is on disk.
    pub async fn write(&self, rec: AuditRecord) {
        if let Some(room) = self.room().await {
            self.send(rec, room).await;
        }
    }

    /// A place in the queue, waited for if it is full (counted in
    /// `toolhost_audit_queue_full_total`); `None` if records go nowhere.
    /// Apart from [`Audit::send`] so that a caller can wait with its
    /// record still in a guard that writes it if the wait is dropped.
    pub(crate) async fn room(&self) -> Option<Room> {
        if let Some(room) = self.try_room() {
            return Some(room);
        }
        let w = self.w.as_ref()?;
        w.counters.queue_full.inc();
        w.room.clone().acquire_owned().await.ok().map(Room)
    }

    /// A place in the queue if one is free now, without waiting.
    pub(crate) fn try_room(&self) -> Option<Room> {
        self.w
            .as_ref()?
            .room
            .clone()
            .try_acquire_owned()
            .ok()
            .map(Room)
    }

    /// Append a record in the place `room` holds and, with `fsync =
    /// "always"`, wait until it is on disk.
    pub(crate) async fn send(&self, rec: AuditRecord, room: Room) {
        let Some(w) = &self.w else { return };
        let permit = room.0;
        let line = Audit::line(&rec);
        let (ack, done) = if w.config.fsync == FsyncPolicy::Always {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let sent = match &*w.tx.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(tx) => tx.send(Msg::Line(line, ack, permit)).is_ok(),
            None => false,
        };
        if !sent {
            w.counters.dropped.inc();
            return;
        }
        if let Some(done) = done {
            let _ = done.await;
        }
    }

    /// Append a record without waiting (for code that cannot): if the
    /// queue is full the record is dropped and counted in
    /// `toolhost_audit_dropped_total`.
    pub fn record(&self, rec: AuditRecord) {
        let Some(w) = &self.w else { return };
        let Ok(permit) = w.room.clone().try_acquire_owned() else {
            w.counters.dropped.inc();
            return;
        };
        if let Some(tx) = &*w.tx.lock().unwrap_or_else(|e| e.into_inner())
            && tx.send(Msg::Line(Audit::line(&rec), None, permit)).is_ok()
        {
            return;
        }
        w.counters.dropped.inc();
    }

    /// Record a refusal that is not a tool call (an unauthenticated request,
    /// a quota): `what` names what was asked for (a tool, a method), and
    /// `reason` why it was refused.
    pub async fn write_decision(
        &self,
        tenant: &str,
        caller: &str,
        what: &str,
        outcome: &'static str,
        reason: &str,
    ) {
        if !self.enabled() {
            return;
        }
        self.write(Audit::decision(tenant, caller, what, outcome, reason))
            .await;
    }

    /// Like [`Audit::write_decision`], without waiting: if the queue is
    /// full the record is dropped and counted (for refusals a client can
    /// repeat as fast as it likes, whose lines must not hold up anyone
    /// else's).
    pub fn record_decision(
        &self,
        tenant: &str,
        caller: &str,
        what: &str,
        outcome: &'static str,
        reason: &str,
    ) {
        if self.enabled() {
            self.record(Audit::decision(tenant, caller, what, outcome, reason));
        }
    }

    fn decision(
        tenant: &str,
        caller: &str,
        what: &str,
        outcome: &'static str,
        reason: &str,
    ) -> AuditRecord {
        let mut rec = AuditRecord::new(tenant, caller, what);
        rec.event = "decision";
        rec.decision = "deny";
        rec.outcome = outcome;
        rec.reason = Some(reason.to_string());
        rec
    }

    /// Write and sync every record queued so far.
    pub async fn flush(&self) {
        let Some(w) = &self.w else { return };
        let (tx, rx) = oneshot::channel();
        let sent = match &*w.tx.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(q) => q.send(Msg::Flush(tx)).is_ok(),
            None => false,
        };
        if sent {
            let _ = rx.await;
        }
    }
}

/// Open the log for appending, created owner-only (0600). A log that
/// already exists readable or writable by every user (made by another
/// tool, or before toolhost set the mode) loses those bits: it names every
/// caller and tool. Group bits stay (a `0640` log read by an `adm` group's
/// shipper is a deliberate choice).
fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    let mode = file.metadata()?.permissions().mode();
    if mode & 0o007 != 0 {
        match file.set_permissions(std::fs::Permissions::from_mode(mode & 0o770)) {
            Ok(()) => tracing::warn!(
                path = %path.display(),
                "the audit log was readable or writable by every user (mode {:o}); those bits are removed",
                mode & 0o777
            ),
            Err(e) => tracing::warn!(
                path = %path.display(),
                "the audit log is readable or writable by every user (mode {:o}) and could not be narrowed: {e}",
                mode & 0o777
            ),
        }
    }
    Ok(file)
}

fn rotated(path: &Path, i: u32) -> PathBuf {
    suffixed(path, &i.to_string())
}

/// Where a rotation makes the next log before it renames anything.
fn next_log(path: &Path) -> PathBuf {
    suffixed(path, "new")
}

/// `path.suffix`.
fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".");
    s.push(suffix);
    PathBuf::from(s)
}

/// The writer thread's state.
struct WriterState {
    file: std::io::BufWriter<std::fs::File>,
    size: u64,
    path: PathBuf,
    config: AuditConfig,
    /// When the oldest line not yet synced was written.
    dirty_since: Option<Instant>,
    counters: AuditCounters,
    /// Set when a rotation failed: none is tried again before it.
    rotate_after: Option<Instant>,
    errors: Errors,
}

/// Write errors, reported at most once a minute, and once recovered.
#[derive(Default)]
struct Errors {
    /// When one was last logged, and how many came since.
    logged: Option<Instant>,
    since: u64,
    /// Whether the last write or rotation failed.
    failing: bool,
}

impl WriterState {
    fn run(&mut self, rx: std::sync::mpsc::Receiver<Msg>) {
        use std::sync::mpsc::RecvTimeoutError;
        loop {
            let first = match self.dirty_since {
                Some(t) if self.config.fsync == FsyncPolicy::Interval => {
                    let left = self.config.fsync_interval.saturating_sub(t.elapsed());
                    match rx.recv_timeout(left) {
                        Ok(m) => m,
                        Err(RecvTimeoutError::Timeout) => {
                            self.sync();
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                _ => match rx.recv() {
                    Ok(m) => m,
                    Err(_) => break,
                },
            };
            // Take whatever else is queued: one write and one sync for the
            // lot (group commit).
            let mut acks = Vec::new();
            let mut flush_acks = Vec::new();
            let mut next = Some(first);
            let mut n = 0;
            while let Some(m) = next.take() {
                match m {
                    Msg::Line(line, ack, permit) => {
                        self.write_line(&line);
                        drop(permit);
                        acks.extend(ack);
                    }
                    Msg::Flush(ack) => flush_acks.push(ack),
                }
                n += 1;
                if n < 1024 {
                    next = rx.try_recv().ok();
                }
            }
            if let Err(e) = self.file.flush() {
                self.error(e);
            }
            let interval_due = self.config.fsync == FsyncPolicy::Interval
                && self
                    .dirty_since
                    .is_some_and(|t| t.elapsed() >= self.config.fsync_interval);
            if self.config.fsync == FsyncPolicy::Always || !flush_acks.is_empty() || interval_due {
                self.sync();
            }
            let flushed = !flush_acks.is_empty();
            for a in acks.into_iter().chain(flush_acks) {
                let _ = a.send(());
            }
            // Unless callers wait for their line (`fsync = "always"`), let
            // the next lines gather before looking again: while calls keep
            // coming, a call's record is then a push onto the queue, not
            // a wake-up of this thread and a write of its own (measured:
            // ~14 µs of a 16 µs echo call). Lines reach the file at most
            // `LINGER` later; a `flush` still waits for nothing.
            if self.config.fsync != FsyncPolicy::Always && !flushed && n > 0 {
                std::thread::sleep(LINGER);
            }
        }
        // The queue is closed: a clean shutdown.
        let _ = self.file.flush();
        self.sync();
    }

    fn write_line(&mut self, line: &[u8]) {
        let len = line.len() as u64;
        if self.size > 0
            && self.size + len > self.config.max_size
            && self.rotate_after.is_none_or(|t| Instant::now() >= t)
        {
            self.rotate();
        }
        match self.file.write_all(line) {
            Ok(()) => {
                self.size += len;
                self.counters.records.inc();
                self.dirty_since.get_or_insert_with(Instant::now);
                self.recovered();
            }
            Err(e) => self.error(e),
        }
    }

    fn sync(&mut self) {
        if self.dirty_since.take().is_some()
            && let Err(e) = self.file.get_ref().sync_data()
        {
            self.error(e);
        }
    }

    /// `path` → `path.1` → … → `path.keep` (the oldest is removed), then a
    /// new, empty `path`. If that fails, the log goes on growing in the
    /// file it is in, and the next try waits [`ROTATE_RETRY`].
    fn rotate(&mut self) {
        let _ = self.file.flush();
        self.sync();
        match self.try_rotate() {
            Ok(file) => {
                self.file = std::io::BufWriter::with_capacity(64 << 10, file);
                self.size = 0;
                self.rotate_after = None;
            }
            Err(e) => {
                self.rotate_after = Some(Instant::now() + ROTATE_RETRY);
                self.error(e);
            }
        }
    }

    /// The rotation: the new file is made first, under a name of its own
    /// (`path.new`), and only then are the others renamed, so a failure
    /// to make it (no inode, no descriptor, a disk quota) renames and
    /// removes nothing. Found by review: renaming first, a failed open
    /// left the writer in `path.1`; every later line rotated again,
    /// shifting that file along until it was removed, and with `path`
    /// gone for good the log was never written again. A file that is the
    /// one being written is never removed or renamed as if it were an
    /// older one.
    fn try_rotate(&mut self) -> std::io::Result<std::fs::File> {
        use std::os::unix::fs::MetadataExt;
        let writing = self.file.get_ref().metadata()?;
        let is_writing = |p: &Path| {
            std::fs::metadata(p).is_ok_and(|m| m.dev() == writing.dev() && m.ino() == writing.ino())
        };
        // The directory, to sync the renames, opened before anything is
        // made or moved: once the new log is in place, nothing may fail
        // the rotation (the fix review: a directory open failing after
        // the last rename sent the writer back to the renamed file, and
        // each retry shifted the history along again).
        let dir = match (self.config.fsync, self.path.parent()) {
            (FsyncPolicy::Always, Some(d)) => Some(std::fs::File::open(d)?),
            _ => None,
        };
        let fresh_path = next_log(&self.path);
        // Left by a rotation that stopped half-way (a crash): made again,
        // owner-only, never through a symlink (`create_new`).
        let _ = std::fs::remove_file(&fresh_path);
        let fresh = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .create_new(true)
                .append(true)
                .mode(0o600)
                .open(&fresh_path)?
        };
        let keep = self.config.keep;
        let mut moved = false;
        let shifted = (|| -> std::io::Result<()> {
            if keep > 0 {
                let oldest = rotated(&self.path, keep);
                if !is_writing(&oldest) {
                    let _ = std::fs::remove_file(&oldest);
                }
                for i in (1..keep).rev() {
                    let from = rotated(&self.path, i);
                    if from.exists() {
                        std::fs::rename(&from, rotated(&self.path, i + 1))?;
                    }
                }
                if is_writing(&self.path) {
                    std::fs::rename(&self.path, rotated(&self.path, 1))?;
                    moved = true;
                }
            }
            // With `keep = 0` this replaces the full log at once.
            std::fs::rename(&fresh_path, &self.path)
        })();
        if let Err(e) = shifted {
            let _ = std::fs::remove_file(&fresh_path);
            // The log back under its name, so the next try starts where
            // this one did.
            if moved {
                let _ = std::fs::rename(rotated(&self.path, 1), &self.path);
            }
            return Err(e);
        }
        if let Some(dir) = dir
            && let Err(e) = dir.sync_all()
        {
            self.error(e);
        }
        Ok(fresh)
    }

    /// Count a write error; log it unless one was logged in the last
    /// [`ERROR_LOG_EVERY`] (before, only the first error of the process
    /// was ever logged).
    fn error(&mut self, e: std::io::Error) {
        self.counters.write_errors.inc();
        let errors = &mut self.errors;
        errors.failing = true;
        errors.since += 1;
        if errors.logged.is_none_or(|t| t.elapsed() >= ERROR_LOG_EVERY) {
            tracing::error!(
                path = %self.path.display(),
                errors = errors.since,
                "cannot write the audit log: {e}"
            );
            errors.logged = Some(Instant::now());
            errors.since = 0;
        }
    }

    /// A line was written: say so once after errors, unless a rotation
    /// is still to be retried.
    fn recovered(&mut self) {
        if self.rotate_after.is_none() && std::mem::take(&mut self.errors.failing) {
            tracing::warn!(path = %self.path.display(), "the audit log is written again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_all_counted_but_written_at_most_once_a_second_per_scope_and_quota() {
        let r = Thinned::default();
        assert_eq!(r.note("a", "max-sessions"), Some(1));
        assert_eq!(r.note("a", "max-sessions"), None);
        assert_eq!(r.note("a", "max-sessions"), None);
        // Each quota, and each scope, has its own line.
        assert_eq!(r.note("a", "calls-per-minute"), Some(1));
        assert_eq!(r.note("b", "max-sessions"), Some(1));
        std::thread::sleep(Duration::from_millis(1050));
        // The next line stands for the two thinned out, and itself.
        assert_eq!(r.note("a", "max-sessions"), Some(3));
        assert_eq!(r.note("a", "max-sessions"), None);
    }

    #[test]
    fn a_long_tool_name_is_recorded_cut() {
        let long = "é".repeat(1000);
        let rec = AuditRecord::new("s", "c", &long);
        assert!(
            rec.tool.len() <= MAX_TOOL + '…'.len_utf8(),
            "{}",
            rec.tool.len()
        );
        assert!(rec.tool.ends_with('…') && long.starts_with(rec.tool.trim_end_matches('…')));
        assert_eq!(AuditRecord::new("s", "c", "echo").tool, "echo");
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let a: Value =
            serde_json::from_str(r#"{"b": 1, "a": {"y": [1, {"d": 2, "c": 3}], "x": "s"}}"#)
                .unwrap();
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"x":"s","y":[1,{"c":3,"d":2}]},"b":1}"#
        );
    }

    /// The review's case: a rotation that cannot make its new file (here
    /// the process is out of descriptors; on the review's host, the log's
    /// file system was out of inodes, taken by a tool's grant on it)
    /// renamed the log away first and kept writing into it: every later
    /// line rotated again and shifted it along, and with the log's name
    /// gone for good nothing was ever written there again. Now nothing is
    /// renamed or lost, and once descriptors are free the log rotates and
    /// is written where it should be. Run in a process of its own: it
    /// takes every descriptor.
    #[test]
    fn a_rotation_that_cannot_make_its_new_file_loses_nothing() {
        const CHILD: &str = "TOOLHOST_AUDIT_ROTATION_CHILD";
        const NAME: &str = "audit::tests::a_rotation_that_cannot_make_its_new_file_loses_nothing";
        if std::env::var_os(CHILD).is_none() {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
                .env(CHILD, "1")
                .output()
                .unwrap();
            let (stdout, stderr) = (
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
            );
            assert!(
                out.status.success() && stdout.contains("1 passed"),
                "{stdout}\n{stderr}"
            );
            return;
        }
        // With `fsync = "always"` a rotation also opens the directory (the
        // fix review: that open failing after the renames lost the history
        // again).
        for fsync in [FsyncPolicy::Never, FsyncPolicy::Always] {
            rotation_out_of_descriptors(fsync);
        }
    }

    fn rotation_out_of_descriptors(fsync: FsyncPolicy) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let audit = Audit::open(&AuditConfig {
            path: Some(path.clone()),
            fsync,
            max_size: 1000,
            keep: 100,
            ..AuditConfig::default()
        })
        .unwrap();
        let write = |range: std::ops::Range<u32>| {
            for i in range {
                audit.record(AuditRecord::new("s", "c", &format!("t{i}")));
            }
            futures::executor::block_on(audit.flush());
        };
        let files = || {
            let mut names: Vec<String> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        write(0..20);
        let before = files();
        assert!(before.len() > 2, "{before:?}");

        // Every descriptor taken: within a low limit, /dev/null opened
        // until none is left.
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: plain system calls on a local struct.
        unsafe { assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0) };
        let low = libc::rlimit {
            rlim_cur: 256.min(limit.rlim_max),
            rlim_max: limit.rlim_max,
        };
        // SAFETY: as above.
        unsafe { assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &low), 0) };
        let mut held = Vec::new();
        while let Ok(f) = std::fs::File::open("/dev/null") {
            held.push(f);
        }
        assert!(std::fs::File::open("/dev/null").is_err());
        write(20..60);
        drop(held);
        assert_eq!(
            files(),
            before,
            "a failed rotation renamed or removed a file"
        );

        // Descriptors free again: after the retry's wait, the log rotates
        // and goes on in its own file.
        std::thread::sleep(ROTATE_RETRY + Duration::from_millis(100));
        write(60..80);
        drop(audit);
        let after = files();
        assert!(after.contains(&"audit.jsonl".to_string()), "{after:?}");
        assert!(after.len() > before.len(), "{after:?}");
        assert!(!after.iter().any(|f| f.ends_with(".new")), "{after:?}");
        let live = std::fs::read_to_string(&path).unwrap();
        assert!(
            live.contains("\"t79\""),
            "the newest line is in the log:\n{live}"
        );
        // Every line is kept, once.
        let mut tools: Vec<u32> = after
            .iter()
            .flat_map(|f| {
                std::fs::read_to_string(dir.path().join(f))
                    .unwrap()
                    .lines()
                    .map(|l| {
                        serde_json::from_str::<Value>(l).unwrap()["tool"]
                            .as_str()
                            .unwrap()[1..]
                            .parse()
                            .unwrap()
                    })
                    .collect::<Vec<u32>>()
            })
            .collect();
        tools.sort();
        assert_eq!(tools, (0..80).collect::<Vec<_>>());
        // SAFETY: as above.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    }

    #[test]
    fn dropping_the_last_handle_writes_everything_queued() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let audit = Audit::open(&AuditConfig {
            path: Some(path.clone()),
            fsync: FsyncPolicy::Never,
            queue: 1000,
            ..AuditConfig::default()
        })
        .unwrap();
        let clone = audit.clone();
        for i in 0..500 {
            clone.record(AuditRecord::new("s", "c", &format!("t{i}")));
        }
        drop(clone);
        drop(audit);
        let text = std::fs::read_to_string(&path).unwrap();
        let tools: Vec<String> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["tool"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(tools, (0..500).map(|i| format!("t{i}")).collect::<Vec<_>>());
    }

    #[test]
    fn an_existing_log_readable_by_every_user_is_narrowed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        std::fs::write(&path, "").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let audit = Audit::open(&AuditConfig {
            path: Some(path.clone()),
            ..AuditConfig::default()
        })
        .unwrap();
        drop(audit);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        // A log kept for a group (0640) stays so.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        drop(
            Audit::open(&AuditConfig {
                path: Some(path.clone()),
                ..AuditConfig::default()
            })
            .unwrap(),
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        // A new one is made owner-only.
        let fresh = dir.path().join("b.jsonl");
        drop(
            Audit::open(&AuditConfig {
                path: Some(fresh.clone()),
                ..AuditConfig::default()
            })
            .unwrap(),
        );
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn redaction_reaches_nested_keys() {
        let a =
            serde_json::json!({"user": "u", "auth": {"password": "p", "list": [{"password": 1}]}});
        let r = redact(&a, &["password".into()]);
        assert_eq!(
            r,
            serde_json::json!({"user": "u", "auth": {"password": "[redacted]", "list": [{"password": "[redacted]"}]}})
        );
    }
}
