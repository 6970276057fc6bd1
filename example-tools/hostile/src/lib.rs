//! `hostile`: tools that misbehave on purpose, as test fixtures proving the
//! sandbox's limits (deadlines, fuel, memory, stack, output size, grants,
//! cancellation, output-schema checks).
//!
//! Never deploy it. Tests write its manifest themselves, granting whatever
//! they mean to probe; with no grants, every file, variable and host it asks
//! for must be refused.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::hint::black_box;
use std::time::Duration;
use toolhost_guest::{Content, Level, Output, Tool, ToolError, Toolbox};
use wasi::io::streams::{OutputStream, StreamError};

use toolhost_example_http as http;

/// The tools this component offers, and two hostile resources: one whose
/// read returns `bytes` bytes (`hostile://big/{bytes}`), one whose read
/// never returns (`hostile://spin`).
pub fn tools() -> Toolbox {
    Toolbox::new()
        .resource_template(
            toolhost_guest::resources::Template::new("hostile://big/{bytes}", "A text of `bytes` bytes"),
            |uri, vars| {
                let n: usize = vars
                    .get("bytes")
                    .unwrap_or_default()
                    .parse()
                    .map_err(|_| toolhost_guest::resources::ResourceError::not_found("`bytes` is not a number"))?;
                Ok(vec![toolhost_guest::resources::ResourceContent::text(uri, "x".repeat(n))])
            },
        )
        .resource(
            toolhost_guest::resources::Resource::new("hostile://spin", "A read that never returns"),
            || {
                let mut n = 0u64;
                loop {
                    n = black_box(n.wrapping_add(1));
                }
            },
        )
        .tool(Tool::new("spin", "Loop forever, burning CPU, never checking for cancellation.", spin))
        .tool(Tool::new("spin_checked", "Loop burning CPU until the call is cancelled, then return \"cancelled\".", spin_checked))
        .tool(Tool::new("sleep", "Sleep `ms` milliseconds, then return \"slept\".", sleep))
        .tool(Tool::new("alloc", "Allocate `mib` MiB and touch every page, hold it `hold_ms` ms, then return \"allocated N MiB\".", alloc))
        .tool(Tool::new("recurse", "Recurse `depth` calls deep (non-tail), then return \"recursed N\".", recurse))
        .tool(Tool::new("panic", "Panic with `message` (a trap: the guest aborts).", panic))
        .tool(Tool::new("exit", "Call `std::process::exit(code)` in the middle of a call (WASI p2 reports any non-zero code as 1).", exit))
        .tool(Tool::new("flood", "Write `bytes` bytes to stdout and some to stderr, then return \"flooded\".", flood))
        .tool(Tool::new("big_output", "Return a text of exactly `bytes` bytes.", big_output))
        .tool(Tool::new("getenv", "Return environment variable `name`, or \"unset\".", getenv))
        .tool(Tool::new("read_path", "Read any path as text.", read_path))
        .tool(Tool::new("write_path", "Write `content` to any path.", write_path))
        .tool(Tool::new("hoard_files", "Open `path` `count` times, holding every descriptor (or, with `streams`, only a stream over each); report how many opened and the first error.", hoard_files))
        .tool(Tool::new("fill", "Append `mib` MiB to `path` one MiB at a time; report the bytes written and the first error.", fill))
        .tool(Tool::new("fill_deleted", "Open `path`, delete it, then append `mib` MiB through the open file one MiB at a time; report the bytes written and the first error.", fill_deleted))
        .tool(Tool::new("sneaky_writes", "Create `path`, open it to read only, write through it anyway, then hard-link it as `link` (another directory) and rename it there; report each result.", sneaky_writes))
        .tool(Tool::new("append_race", "Open `path` twice for appending; write 64 KiB through the first, then `count` times 64 KiB through the second; report the bytes written and the first error.", append_race))
        .tool(Tool::new("mkdirs", "Create `count` directories under `path`; report how many were made and the first error.", mkdirs))
        .tool(Tool::new("touch_many", "Create `count` empty files under `path`; report how many were made and the first error.", touch_many))
        .tool(Tool::new("remove", "Remove the file at `path`.", remove))
        .tool(Tool::new("swap_names", "For `ms` milliseconds, swap the names `a` and `b` (three renames each time); report how many swaps.", swap_names))
        .tool(Tool::new("open_often", "For `ms` milliseconds, open `path` for reading and close it again; report how many opens succeeded and failed.", open_often))
        .tool(Tool::new("grow", "Set the size of `path` to `bytes` (a sparse file).", grow))
        .tool(Tool::new("scatter", "Write one byte every `stride` bytes of `path`, `count` times, each with a positioned write (or a stream opened at that offset); report how many were written and the first error.", scatter))
        .tool(Tool::new("bad_output", "Declare an output schema ({count: integer}) and return structured output violating it.", bad_output).output_schema(Some(serde_json::to_value(schemars::schema_for!(Count)).expect("schema serializes"))))
        .tool(Tool::new("wide_output", "Declare an output schema whose array items each try 2,000 `anyOf` branches before the one that passes, and return `bytes` such items (zeros).", wide_output).output_schema(Some(wide_schema())))
        .tool(Tool::new(
            "log_and_progress",
            "For each of `steps` steps: log at info level, report progress, sleep `ms` milliseconds.",
            log_and_progress,
        ))
        .tool(Tool::new("http_get", "GET `url` over wasi:http and return the status code.", http_get))
        .tool(Tool::new("hold_connections", "GET `url` `n` times over wasi:http, keeping every response (and its connection) open unread; report how many were held and the first refusal.", hold_connections))
        .tool(Tool::new("long_request_parts", "On one new request, set an authority, an extension method and a path of `len` bytes each; report which the host accepted.", long_request_parts))
        .tool(Tool::new("hoard_bodies", "Start `n` requests to `url` and fill each one's body as far as the host buffers it, never sending any; report the bytes the host accepted.", hoard_bodies))
        .tool(Tool::new("stall_uploads", "Start `n` POSTs to `url`, writing each body until the host stops taking bytes for 300 ms (the server does not read), then return with every request unfinished; report how many stalled and the first refusal.", stall_uploads))
        .tool(Tool::new("cut_upload", "Start a chunked POST to `url`, write `bytes` of its body, wait for the response to begin, and return without finishing the body (the call's end cuts it off).", cut_upload))
        .tool(Tool::new("write_many", "Create `n` files in directory `dir` and write to each through Rust's std (check-write, write, blocking-flush), keeping every one open; return how many were written.", write_many))
        .tool(Tool::new("read_many", "Make `n` read streams over file `path`, start a read on each without waiting, then read a further stream to its end with blocking reads; return how many bytes that took.", read_many))
        .tool(Tool::new("fan_out_reads", "Open `path` once, make `streams` read streams over it, and for `rounds` rounds skip 64 KiB on each without waiting (each skip of an idle stream starts a host read), then poll them all; return how many bytes were skipped.", fan_out_reads))
        .tool(Tool::new("prime_read_streams", "Open `path` once and start `count` read streams over it, each with a 64 KiB read the host completes and holds; report how many were primed and the first refusal.", prime_read_streams))
        .tool(Tool::new("random", "Ask the host for `len` random bytes at once; report how many came.", random))
        .tool(Tool::new("big_stream_write", "Write 1 MiB to a file stream of `path` at once, past what `check-write` permits; report the outcome.", big_stream_write))
        .tool(Tool::new("touch_following", "Set the times of `path` (symlinks followed) to now; report the outcome.", touch_following))
        .tool(Tool::new("identity", "Return `metadata-hash-at` of `path` twice and `metadata-hash` of its preopened directory, each as `upper:lower` in hex, space-separated.", identity))
        .tool(Tool::new("ask_random", "Ask the client a question that differs on every run (a non-deterministic tool).", ask_random))
        .tool(Tool::new("ask_flood", "Ask the client `n` questions, ignoring every refusal; return how many were refused.", ask_flood))
        .tool(Tool::new("hold_listings", "Open `n` listings of directory `path` at once and keep them; report how many opened and the first refusal.", hold_listings))
        .tool(Tool::new("ask_batch", "Ask the client `n` questions at once (`request-clients`); return how many were refused.", ask_batch))
        .tool(Tool::new("ask_ignoring", "Ask the client a question, ignore that the answer must wait, return \"done anyway\".", ask_ignoring))
        .tool(Tool::new("start_up_wall", "Return the wall-clock time a test fixture's start function left at address 16 of linear memory, then the wall clock's time now, each as seconds.nanoseconds, space-separated.", start_up_wall))
        .tool(Tool::new("uptime", "Return the guest's monotonic clock (`wasi:clocks/monotonic-clock.now`), in nanoseconds: how long this sandbox says it has been up.", uptime))
        .tool(Tool::new(
            "remember",
            "Keep `secret` in a global, count this call in another, and return both as they were before (`{calls, before}`): an instance that served an earlier call would show it.",
            remember,
        ))
}

toolhost_guest::export!(tools);

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

fn spin(_: NoArgs) -> Result<String, ToolError> {
    let mut n = 0u64;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

fn spin_checked(_: NoArgs) -> Result<String, ToolError> {
    let mut n = 0u64;
    loop {
        for _ in 0..10_000 {
            n = black_box(n.wrapping_add(1));
        }
        if toolhost_guest::cancelled() {
            // A warning the caller's event sink gets: proof that the
            // guest saw the cancellation (the caller gets `Cancelled`, not
            // this result).
            toolhost_guest::log(toolhost_guest::Level::Warning, "cancelled");
            return Ok("cancelled".into());
        }
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SleepArgs {
    /// Milliseconds to sleep.
    pub ms: u64,
}

fn sleep(a: SleepArgs) -> Result<String, ToolError> {
    std::thread::sleep(Duration::from_millis(a.ms));
    Ok("slept".into())
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AllocArgs {
    /// MiB to allocate.
    pub mib: u32,
    /// Report a failed allocation as a tool error instead of aborting (a trap).
    #[serde(default)]
    pub graceful: bool,
    /// Milliseconds to hold the memory before returning.
    #[serde(default)]
    pub hold_ms: u64,
}

fn alloc(a: AllocArgs) -> Result<String, ToolError> {
    let bytes = (a.mib as usize).checked_mul(1 << 20).ok_or_else(|| {
        ToolError::invalid(format!("{} MiB does not fit in the address space", a.mib))
    })?;
    let mut v: Vec<u8> = Vec::new();
    if a.graceful {
        v.try_reserve_exact(bytes)
            .map_err(|e| ToolError::failed(format!("cannot allocate {} MiB: {e}", a.mib)))?;
    } else {
        v.reserve_exact(bytes); // aborts on failure
    }
    v.resize(bytes, 0);
    for page in v.chunks_mut(4096) {
        page[0] = 1;
    }
    black_box(&v);
    std::thread::sleep(Duration::from_millis(a.hold_ms));
    Ok(format!("allocated {} MiB", a.mib))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecurseArgs {
    /// How deep to recurse.
    pub depth: u64,
}

#[inline(never)]
fn dive(depth: u64) -> u64 {
    if depth == 0 {
        return 0;
    }
    // A frame the optimizer must keep: its contents are observed after the call.
    let frame = black_box([depth; 8]);
    let below = dive(black_box(depth - 1));
    black_box(below + frame[(depth % 8) as usize] % 2 + 1)
}

fn recurse(a: RecurseArgs) -> Result<String, ToolError> {
    dive(a.depth);
    Ok(format!("recursed {}", a.depth))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PanicArgs {
    /// The panic message.
    pub message: String,
}

fn panic(a: PanicArgs) -> Result<String, ToolError> {
    panic!("{}", a.message)
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExitArgs {
    /// The exit code.
    pub code: i32,
}

fn exit(a: ExitArgs) -> Result<String, ToolError> {
    std::process::exit(a.code)
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BytesArgs {
    /// How many bytes.
    pub bytes: u64,
}

/// Write `n` bytes of text lines straight to a WASI output stream (no std
/// buffering in between, so the count is exactly what the host accepted);
/// on failure, how many bytes went through and why it stopped.
fn write_lines(out: &OutputStream, n: u64) -> Result<(), (u64, String)> {
    let line: &[u8] = b"flood flood flood flood flood flood flood flood flood flood flood flood flood flood flood.\n";
    let chunk: Vec<u8> = line.iter().copied().cycle().take(4096).collect();
    let why = |e: StreamError| match e {
        StreamError::Closed => "stream closed".to_string(),
        StreamError::LastOperationFailed(e) => e.to_debug_string(),
    };
    let mut written = 0u64;
    while written < n {
        let permit = match out.check_write() {
            Ok(0) => {
                out.subscribe().block();
                continue;
            }
            Ok(permit) => permit,
            Err(e) => return Err((written, why(e))),
        };
        let len = (chunk.len() as u64).min(permit).min(n - written) as usize;
        out.write(&chunk[..len]).map_err(|e| (written, why(e)))?;
        written += len as u64;
    }
    out.blocking_flush().map_err(|e| (written, why(e)))
}

/// Write errors (the host may cap captured output) stop the flood without
/// failing the call; the result says so.
fn flood(a: BytesArgs) -> Result<String, ToolError> {
    let mut notes = Vec::new();
    if let Err((n, e)) = write_lines(&wasi::cli::stdout::get_stdout(), a.bytes) {
        notes.push(format!("stdout failed after {n} bytes: {e}"));
    }
    if let Err((n, e)) = write_lines(&wasi::cli::stderr::get_stderr(), a.bytes.min(64 * 1024)) {
        notes.push(format!("stderr failed after {n} bytes: {e}"));
    }
    Ok(if notes.is_empty() {
        "flooded".into()
    } else {
        format!("flooded ({})", notes.join("; "))
    })
}

fn big_output(a: BytesArgs) -> Result<String, ToolError> {
    let n = usize::try_from(a.bytes)
        .map_err(|_| ToolError::invalid("`bytes` does not fit in the address space"))?;
    let pattern = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n";
    Ok(pattern.iter().cycle().take(n).map(|&b| b as char).collect())
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RememberArgs {
    /// Kept for the next call this instance serves (there should be none).
    pub secret: String,
}

/// Calls this instance served, and the secret of the latest one.
static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static SECRET: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

fn uptime(_: NoArgs) -> Result<String, ToolError> {
    Ok(wasi::clocks::monotonic_clock::now().to_string())
}

fn remember(a: RememberArgs) -> Result<String, ToolError> {
    let before_calls = CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let before = SECRET
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .replace(a.secret);
    Ok(serde_json::json!({ "calls": before_calls, "before": before }).to_string())
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NameArgs {
    /// The variable's name.
    pub name: String,
}

fn getenv(a: NameArgs) -> Result<String, ToolError> {
    Ok(match std::env::var(&a.name) {
        Ok(v) => v,
        Err(std::env::VarError::NotPresent) => "unset".into(),
        Err(std::env::VarError::NotUnicode(v)) => format!("not unicode: {v:?}"),
    })
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PathArgs {
    /// Any path.
    pub path: String,
}

fn read_path(a: PathArgs) -> Result<String, ToolError> {
    std::fs::read_to_string(&a.path)
        .map_err(|e| ToolError::failed(format!("cannot read {}: {e}", a.path)))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteArgs {
    /// Any path.
    pub path: String,
    /// What to write.
    pub content: String,
}

fn write_path(a: WriteArgs) -> Result<String, ToolError> {
    std::fs::write(&a.path, &a.content)
        .map_err(|e| ToolError::failed(format!("cannot write {}: {e}", a.path)))?;
    Ok(format!("wrote {} bytes to {}", a.content.len(), a.path))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HoardArgs {
    /// Any path.
    pub path: String,
    /// How many times to open it.
    pub count: u32,
    /// Keep only a stream reading each open file and drop its descriptor
    /// (the stream still holds the host file).
    #[serde(default)]
    pub streams: bool,
}

fn hoard_files(a: HoardArgs) -> Result<String, ToolError> {
    if a.streams {
        return hoard_streams(a);
    }
    let mut held = Vec::new();
    for _ in 0..a.count {
        match std::fs::File::open(&a.path) {
            Ok(f) => held.push(f),
            Err(e) => return Ok(format!("opened {}; then: {e}", held.len())),
        }
    }
    Ok(format!("opened {}", held.len()))
}

/// Open `path` `count` times, each time keeping a stream over the file and
/// dropping the descriptor it came from.
fn hoard_streams(a: HoardArgs) -> Result<String, ToolError> {
    let dirs = wasi::filesystem::preopens::get_directories();
    let (dir, rel) = preopened(&dirs, &a.path)?;
    let mut held = Vec::new();
    for _ in 0..a.count {
        let opened = open_read(dir, &rel).and_then(|f| f.read_via_stream(0));
        match opened {
            Ok(s) => held.push(s),
            Err(e) => return Ok(format!("opened {}; then: {e:?}", held.len())),
        }
    }
    Ok(format!("opened {}", held.len()))
}

/// `rel` under `dir`, opened to read.
fn open_read(
    dir: &wasi::filesystem::types::Descriptor,
    rel: &str,
) -> Result<wasi::filesystem::types::Descriptor, wasi::filesystem::types::ErrorCode> {
    use wasi::filesystem::types::{DescriptorFlags, OpenFlags, PathFlags};
    dir.open_at(
        PathFlags::empty(),
        rel,
        OpenFlags::empty(),
        DescriptorFlags::READ,
    )
}

/// Create (or open) `rel` under `dir` for writing.
fn open_write(
    dir: &wasi::filesystem::types::Descriptor,
    rel: &str,
) -> Result<wasi::filesystem::types::Descriptor, wasi::filesystem::types::ErrorCode> {
    use wasi::filesystem::types::{DescriptorFlags, OpenFlags, PathFlags};
    dir.open_at(
        PathFlags::empty(),
        rel,
        OpenFlags::CREATE,
        DescriptorFlags::WRITE,
    )
}

/// The preopened directory `path` is under, and `path` relative to it.
fn preopened<'a>(
    dirs: &'a [(wasi::filesystem::types::Descriptor, String)],
    path: &str,
) -> Result<(&'a wasi::filesystem::types::Descriptor, String), ToolError> {
    dirs.iter()
        .find_map(|(d, guest)| {
            let rel = path
                .strip_prefix(guest.as_str())?
                .trim_start_matches('/')
                .to_string();
            Some((d, rel))
        })
        .ok_or_else(|| ToolError::failed(format!("{path} is under no preopened directory")))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FillArgs {
    /// Any path.
    pub path: String,
    /// MiB to append.
    pub mib: u32,
}

fn fill(a: FillArgs) -> Result<String, ToolError> {
    append_mib(&a, false)
}

/// A file deleted while open keeps its blocks but leaves the directory
/// the quota measures.
fn fill_deleted(a: FillArgs) -> Result<String, ToolError> {
    append_mib(&a, true)
}

/// Append `a.mib` MiB to `a.path` one MiB at a time (after deleting it,
/// with `deleted`); report the bytes written and the first error.
fn append_mib(a: &FillArgs, deleted: bool) -> Result<String, ToolError> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&a.path)
        .map_err(|e| ToolError::failed(format!("cannot open {}: {e}", a.path)))?;
    if deleted {
        std::fs::remove_file(&a.path)
            .map_err(|e| ToolError::failed(format!("cannot remove: {e}")))?;
    }
    let chunk = vec![7u8; 1 << 20];
    let mut written = 0u64;
    for _ in 0..a.mib {
        if let Err(e) = f.write_all(&chunk) {
            return Ok(format!("wrote {written} bytes; then: {e}"));
        }
        written += chunk.len() as u64;
    }
    Ok(format!("wrote {written} bytes"))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SneakyArgs {
    /// A file under a preopened directory.
    pub path: String,
    /// A new name for it under another preopened directory.
    pub link: String,
}

/// Writes a quota might miss: through a descriptor opened to read
/// (wasmtime-wasi checks only the grant's permissions), and a hard link
/// that moves a file's blocks under another grant's quota.
fn sneaky_writes(a: SneakyArgs) -> Result<String, ToolError> {
    use wasi::filesystem::types::PathFlags;
    let dirs = wasi::filesystem::preopens::get_directories();
    let (dir, rel) = preopened(&dirs, &a.path)?;
    let (to_dir, to_rel) = preopened(&dirs, &a.link)?;
    std::fs::write(&a.path, b"").map_err(|e| ToolError::failed(format!("cannot create: {e}")))?;
    let file =
        open_read(dir, &rel).map_err(|e| ToolError::failed(format!("cannot open: {e:?}")))?;
    let write = match file.write(&[7; 4096], 0) {
        Ok(n) => format!("wrote {n}"),
        Err(e) => format!("{e:?}"),
    };
    let stream = match file.write_via_stream(0) {
        Ok(_) => "opened".to_string(),
        Err(e) => format!("{e:?}"),
    };
    let link = match dir.link_at(PathFlags::empty(), &rel, to_dir, &to_rel) {
        Ok(()) => "linked".to_string(),
        Err(e) => format!("{e:?}"),
    };
    // The file, still open here, moved under the other grant's quota.
    let rename = match dir.rename_at(&rel, to_dir, &to_rel) {
        Ok(()) => "renamed".to_string(),
        Err(e) => format!("{e:?}"),
    };
    Ok(format!(
        "write: {write}; stream: {stream}; link: {link}; rename: {rename}"
    ))
}

/// Two append streams over one file, both opened while it is empty: the
/// second's writes start where it believed the end was, over data the
/// first wrote since, but land at the real end.
fn append_race(a: HoardArgs) -> Result<String, ToolError> {
    use wasi::filesystem::types::{DescriptorFlags, OpenFlags, PathFlags};
    let dirs = wasi::filesystem::preopens::get_directories();
    let (dir, rel) = preopened(&dirs, &a.path)?;
    let open = |flags| {
        dir.open_at(PathFlags::empty(), &rel, flags, DescriptorFlags::WRITE)
            .and_then(|f| f.append_via_stream().map(|s| (f, s)))
            .map_err(|e| ToolError::failed(format!("cannot open {}: {e:?}", a.path)))
    };
    let (_f1, first) = open(OpenFlags::CREATE)?;
    let (_f2, second) = open(OpenFlags::empty())?;
    let chunk = vec![7u8; 64 << 10];
    let mut written = 0usize;
    for part in chunk.chunks(4096) {
        if let Err(e) = first.blocking_write_and_flush(part) {
            return Ok(format!("wrote {written}; then: {e:?}"));
        }
        written += part.len();
    }
    for _ in 0..a.count {
        for part in chunk.chunks(4096) {
            if let Err(e) = second.blocking_write_and_flush(part) {
                return Ok(format!("wrote {written}; then: {e:?}"));
            }
            written += part.len();
        }
    }
    Ok(format!("wrote {written}"))
}

fn mkdirs(a: HoardArgs) -> Result<String, ToolError> {
    for i in 0..a.count {
        if let Err(e) = std::fs::create_dir(format!("{}/{i}", a.path)) {
            return Ok(format!("made {i}; then: {e}"));
        }
    }
    Ok(format!("made {}", a.count))
}

fn touch_many(a: HoardArgs) -> Result<String, ToolError> {
    for i in 0..a.count {
        if let Err(e) = std::fs::File::create(format!("{}/{i}", a.path)) {
            return Ok(format!("made {i}; then: {e}"));
        }
    }
    Ok(format!("made {}", a.count))
}

fn remove(a: PathArgs) -> Result<String, ToolError> {
    std::fs::remove_file(&a.path).map_err(|e| ToolError::failed(e.to_string()))?;
    Ok("removed".into())
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SwapArgs {
    /// One name.
    pub a: String,
    /// The other.
    pub b: String,
    /// For how long.
    pub ms: u64,
}

fn swap_names(a: SwapArgs) -> Result<String, ToolError> {
    let tmp = format!("{}.swap", a.a);
    let end = std::time::Instant::now() + Duration::from_millis(a.ms);
    let mut n = 0u64;
    while std::time::Instant::now() < end {
        let r = std::fs::rename(&a.a, &tmp)
            .and_then(|()| std::fs::rename(&a.b, &a.a))
            .and_then(|()| std::fs::rename(&tmp, &a.b));
        if let Err(e) = r {
            return Ok(format!("swapped {n}; then: {e}"));
        }
        n += 1;
    }
    Ok(format!("swapped {n}"))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OftenArgs {
    /// Any path.
    pub path: String,
    /// For how long.
    pub ms: u64,
}

fn open_often(a: OftenArgs) -> Result<String, ToolError> {
    let end = std::time::Instant::now() + Duration::from_millis(a.ms);
    let (mut ok, mut failed) = (0u64, 0u64);
    while std::time::Instant::now() < end {
        match std::fs::File::open(&a.path) {
            Ok(_) => ok += 1,
            Err(_) => failed += 1,
        }
    }
    Ok(format!("opened {ok}, failed {failed}"))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GrowArgs {
    /// Any path.
    pub path: String,
    /// The new size.
    pub bytes: u64,
}

fn grow(a: GrowArgs) -> Result<String, ToolError> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(&a.path)
        .map_err(|e| ToolError::failed(format!("cannot open {}: {e}", a.path)))?;
    f.set_len(a.bytes)
        .map_err(|e| ToolError::failed(format!("cannot grow {}: {e}", a.path)))?;
    Ok(format!("{} is {} bytes", a.path, a.bytes))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScatterArgs {
    /// A path under a preopened directory.
    pub path: String,
    /// Bytes between two writes.
    pub stride: u64,
    /// How many writes.
    pub count: u32,
    /// Write through a stream opened at each offset instead of a
    /// positioned `write`.
    #[serde(default)]
    pub stream: bool,
}

/// A sparse-file attack on a disk quota: each one-byte write far from the
/// last allocates a whole block.
fn scatter(a: ScatterArgs) -> Result<String, ToolError> {
    let dirs = wasi::filesystem::preopens::get_directories();
    let (dir, rel) = preopened(&dirs, &a.path)?;
    let file = open_write(dir, &rel)
        .map_err(|e| ToolError::failed(format!("cannot open {}: {e:?}", a.path)))?;
    for i in 0..a.count {
        let off = u64::from(i) * a.stride;
        let r = if a.stream {
            file.write_via_stream(off)
                .map_err(|e| format!("{e:?}"))
                .and_then(|s| {
                    s.blocking_write_and_flush(&[7])
                        .map_err(|e| format!("{e:?}"))
                })
        } else {
            file.write(&[7], off)
                .map(drop)
                .map_err(|e| format!("{e:?}"))
        };
        if let Err(e) = r {
            return Ok(format!("wrote {i}; then: {e}"));
        }
    }
    Ok(format!("wrote {}", a.count))
}

/// The output `bad_output` declares.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Count {
    pub count: u32,
}

fn bad_output(_: NoArgs) -> Result<Output, ToolError> {
    let wrong = serde_json::json!({ "count": "many" });
    Ok(Output::new()
        .with(Content::text(wrong.to_string()))
        .structured(wrong))
}

/// `wide_output`'s output schema: `{"r": [...]}`, each item checked
/// against 1,999 branches it fails before the last, which passes.
fn wide_schema() -> serde_json::Value {
    let mut branches: Vec<serde_json::Value> = (0..1999)
        .map(|_| serde_json::json!({ "minimum": 1 }))
        .collect();
    branches.push(serde_json::json!({}));
    serde_json::json!({
        "type": "object",
        "properties": { "r": { "type": "array", "items": { "anyOf": branches } } }
    })
}

fn wide_output(a: BytesArgs) -> Result<Output, ToolError> {
    let out = serde_json::json!({ "r": vec![0; a.bytes as usize] });
    Ok(Output::new().with(Content::text("wide")).structured(out))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepsArgs {
    /// How many steps.
    pub steps: u32,
    /// Milliseconds to sleep after each step.
    pub ms: u64,
}

fn log_and_progress(a: StepsArgs) -> Result<String, ToolError> {
    for i in 1..=a.steps {
        toolhost_guest::log(Level::Info, format!("step {i} of {}", a.steps));
        toolhost_guest::progress(i as f64, Some(a.steps as f64), Some(&format!("step {i}")));
        std::thread::sleep(Duration::from_millis(a.ms));
    }
    Ok(format!("done {} steps", a.steps))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UrlArgs {
    /// An absolute http:// or https:// URL.
    pub url: String,
}

fn http_get(a: UrlArgs) -> Result<String, ToolError> {
    let request = http::Request {
        method: "GET",
        url: &a.url,
        headers: &[],
        body: None,
        max_bytes: 0,
    };
    let response = http::send(&request).map_err(|e| ToolError::failed(e.to_string()))?;
    Ok(response.status.to_string())
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HoldHttpArgs {
    /// An http:// URL.
    pub url: String,
    /// How many.
    pub n: u32,
}

fn request_to(url: &http::Url<'_>) -> wasi::http::types::OutgoingRequest {
    use wasi::http::types::{Fields, OutgoingRequest, Scheme};
    let req = OutgoingRequest::new(Fields::new());
    let _ = req.set_scheme(Some(&Scheme::Http));
    let _ = req.set_authority(Some(url.authority));
    let _ = req.set_path_with_query(Some(&url.path_with_query));
    req
}

fn hold_connections(a: HoldHttpArgs) -> Result<String, ToolError> {
    let url = http::parse_url(&a.url).map_err(ToolError::invalid)?;
    let mut held = 0u32;
    for _ in 0..a.n {
        let future = match wasi::http::outgoing_handler::handle(request_to(&url), None) {
            Ok(f) => f,
            Err(e) => return Ok(format!("held {held}; then: {e:?}")),
        };
        let response = loop {
            match future.get() {
                Some(r) => break r.expect("a response is taken once"),
                None => future.subscribe().block(),
            }
        };
        match response {
            // Never read, never dropped: the connection stays open.
            Ok(r) => {
                std::mem::forget(r);
                std::mem::forget(future);
                held += 1;
            }
            Err(e) => return Ok(format!("held {held}; then: {e:?}")),
        }
    }
    Ok(format!("held {held}"))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LenArgs {
    /// How long each string is.
    pub len: u32,
}

fn long_request_parts(a: LenArgs) -> Result<String, ToolError> {
    use wasi::http::types::{Fields, Method, OutgoingRequest};
    let n = a.len as usize;
    let req = OutgoingRequest::new(Fields::new());
    let word = |ok: bool| if ok { "accepted" } else { "refused" };
    let authority = req.set_authority(Some(&"a".repeat(n))).is_ok();
    let method = req.set_method(&Method::Other("M".repeat(n))).is_ok();
    let path = req
        .set_path_with_query(Some(&format!("/{}", "p".repeat(n.saturating_sub(1)))))
        .is_ok();
    Ok(format!(
        "authority {}, method {}, path {}",
        word(authority),
        word(method),
        word(path)
    ))
}

fn hoard_bodies(a: HoldHttpArgs) -> Result<String, ToolError> {
    let url = http::parse_url(&a.url).map_err(ToolError::invalid)?;
    let chunk = vec![b'x'; 1 << 20];
    let mut bytes = 0u64;
    for i in 0..a.n {
        let req = request_to(&url);
        let Ok(body) = req.body() else {
            return Ok(format!(
                "accepted {bytes} bytes in {i} bodies; then: no body"
            ));
        };
        let Ok(stream) = body.write() else {
            return Ok(format!(
                "accepted {bytes} bytes in {i} bodies; then: no stream"
            ));
        };
        // As much as the host takes without the request being sent.
        while let Ok(n) = stream.check_write() {
            if n == 0 {
                break;
            }
            let n = (n as usize).min(chunk.len());
            if stream.write(&chunk[..n]).is_err() {
                break;
            }
            bytes += n as u64;
        }
        // Held until the call ends (dropping a body before its stream traps).
        std::mem::forget(stream);
        std::mem::forget(body);
        std::mem::forget(req);
    }
    Ok(format!("accepted {bytes} bytes in {} bodies", a.n))
}

/// A POST to `url` handed to the host, its body still open: the body's
/// stream, the body and the response's future (each to be kept or
/// forgotten by the caller), or what refused it.
fn start_post(
    url: &http::Url<'_>,
) -> Result<
    (
        wasi::io::streams::OutputStream,
        wasi::http::types::OutgoingBody,
        wasi::http::types::FutureIncomingResponse,
    ),
    String,
> {
    let req = request_to(url);
    let _ = req.set_method(&wasi::http::types::Method::Post);
    let body = req.body().map_err(|()| "no body".to_string())?;
    let stream = body.write().map_err(|()| "no stream".to_string())?;
    let future = wasi::http::outgoing_handler::handle(req, None).map_err(|e| format!("{e:?}"))?;
    Ok((stream, body, future))
}

fn stall_uploads(a: HoldHttpArgs) -> Result<String, ToolError> {
    let url = http::parse_url(&a.url).map_err(ToolError::invalid)?;
    let chunk = vec![b'x'; 16 << 10];
    for i in 0..a.n {
        let (stream, body, future) = match start_post(&url) {
            Ok(started) => started,
            Err(e) => return Ok(format!("stalled {i}; then: {e}")),
        };
        // Write until the host takes nothing more for 300 ms: the server's
        // and the sockets' buffers are full.
        loop {
            match stream.check_write() {
                Ok(0) => {
                    let ready = stream.subscribe();
                    let timer = wasi::clocks::monotonic_clock::subscribe_duration(300_000_000);
                    if wasi::io::poll::poll(&[&ready, &timer]) == [1] {
                        break;
                    }
                }
                Ok(n) => {
                    let n = (n as usize).min(chunk.len());
                    if stream.write(&chunk[..n]).is_err() {
                        return Ok(format!("stalled {i}; then: the write failed"));
                    }
                }
                Err(e) => return Ok(format!("stalled {i}; then: {e:?}")),
            }
        }
        // Never finished: held until the call ends.
        std::mem::forget(stream);
        std::mem::forget(body);
        std::mem::forget(future);
    }
    Ok(format!("stalled {}", a.n))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CutArgs {
    /// An http:// URL.
    pub url: String,
    /// How much of the body to write.
    pub bytes: u32,
}

fn cut_upload(a: CutArgs) -> Result<String, ToolError> {
    let url = http::parse_url(&a.url).map_err(ToolError::invalid)?;
    let (stream, body, future) = start_post(&url).map_err(ToolError::failed)?;
    stream
        .blocking_write_and_flush(&vec![b'x'; a.bytes as usize])
        .map_err(|e| ToolError::failed(format!("{e:?}")))?;
    // The server answers once it has the head: then the head and the
    // bytes written are on their way.
    future.subscribe().block();
    std::thread::sleep(Duration::from_millis(200));
    // Never finished: the call ends with the request half sent.
    std::mem::forget(stream);
    std::mem::forget(body);
    std::mem::forget(future);
    Ok("cut".into())
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PrimeArgs {
    /// A readable file of 64 KiB or more.
    pub path: String,
    /// How many streams.
    pub count: u32,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ManyArgs {
    /// A directory (`write_many`) or a readable file (`read_many`).
    pub path: String,
    /// How many files or streams.
    pub n: u32,
}

fn write_many(a: ManyArgs) -> Result<String, ToolError> {
    use std::io::Write;
    let mut open = Vec::new();
    for i in 0..a.n {
        let p = format!("{}/many-{i}.txt", a.path);
        let mut f =
            std::fs::File::create(&p).map_err(|e| ToolError::failed(format!("{p}: {e}")))?;
        f.write_all(&[b'x'; 100])
            .and_then(|()| f.flush())
            .map_err(|e| ToolError::failed(format!("{p}: {e}")))?;
        open.push(f);
    }
    Ok(format!("wrote {}", open.len()))
}

fn read_many(a: ManyArgs) -> Result<String, ToolError> {
    let dirs = wasi::filesystem::preopens::get_directories();
    let (dir, rel) = preopened(&dirs, &a.path)?;
    let file = open_read(dir, &rel).map_err(|e| ToolError::failed(format!("{e:?}")))?;
    let mut started = Vec::new();
    for _ in 0..a.n {
        let s = file
            .read_via_stream(0)
            .map_err(|e| ToolError::failed(format!("{e:?}")))?;
        let _ = s.read(64 << 10);
        started.push(s);
    }
    let last = file
        .read_via_stream(0)
        .map_err(|e| ToolError::failed(format!("{e:?}")))?;
    let mut total = 0;
    while let Ok(b) = last.blocking_read(64 << 10) {
        total += b.len();
    }
    Ok(format!("read {total}"))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FanOutArgs {
    /// A readable file.
    pub path: String,
    /// How many streams.
    pub streams: u32,
    /// How many rounds of skips.
    pub rounds: u32,
}

fn fan_out_reads(a: FanOutArgs) -> Result<String, ToolError> {
    let dirs = wasi::filesystem::preopens::get_directories();
    let (dir, rel) = preopened(&dirs, &a.path)?;
    let file = open_read(dir, &rel).map_err(|e| ToolError::failed(format!("{e:?}")))?;
    let mut streams = Vec::new();
    for _ in 0..a.streams {
        match file.read_via_stream(0) {
            Ok(s) => streams.push(s),
            Err(e) => return Err(ToolError::failed(format!("{e:?}"))),
        }
    }
    let pollables: Vec<_> = streams.iter().map(|s| s.subscribe()).collect();
    let refs: Vec<_> = pollables.iter().collect();
    let mut skipped = 0u64;
    for _ in 0..a.rounds {
        for s in &streams {
            skipped += s.skip(64 << 10).unwrap_or(0);
        }
        wasi::io::poll::poll(&refs);
    }
    Ok(format!("skipped {skipped}"))
}

fn prime_read_streams(a: PrimeArgs) -> Result<String, ToolError> {
    let dirs = wasi::filesystem::preopens::get_directories();
    let (dir, rel) = preopened(&dirs, &a.path)?;
    let file = open_read(dir, &rel).map_err(|e| ToolError::failed(format!("{e:?}")))?;
    let mut held = Vec::new();
    for i in 0..a.count {
        let s = match file.read_via_stream(0) {
            Ok(s) => s,
            Err(e) => return Ok(format!("primed {i}; then: {e:?}")),
        };
        // The first read starts the host's 64 KiB read; waiting makes it
        // land in the stream, where the host holds it.
        let _ = s.read(64 << 10);
        s.subscribe().block();
        held.push(s);
    }
    Ok(format!("primed {}", held.len()))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RandomArgs {
    /// How many bytes.
    pub len: u64,
}

fn random(a: RandomArgs) -> Result<String, ToolError> {
    Ok(format!(
        "{} bytes",
        wasi::random::random::get_random_bytes(a.len).len()
    ))
}

fn big_stream_write(a: PathArgs) -> Result<String, ToolError> {
    let dirs = wasi::filesystem::preopens::get_directories();
    let (dir, rel) = preopened(&dirs, &a.path)?;
    let file = open_write(dir, &rel)
        .map_err(|e| ToolError::failed(format!("cannot open {}: {}", a.path, e.name())))?;
    let stream = file
        .write_via_stream(0)
        .map_err(|e| ToolError::failed(format!("no stream: {}", e.name())))?;
    Ok(match stream.write(&vec![7u8; 1 << 20]) {
        Ok(()) => "written".to_string(),
        Err(e) => format!("refused: {e:?}"),
    })
}

fn touch_following(a: PathArgs) -> Result<String, ToolError> {
    use wasi::filesystem::types::{NewTimestamp, PathFlags};
    let dirs = wasi::filesystem::preopens::get_directories();
    let (dir, rel) = preopened(&dirs, &a.path)?;
    Ok(
        match dir.set_times_at(
            PathFlags::SYMLINK_FOLLOW,
            &rel,
            NewTimestamp::Now,
            NewTimestamp::Now,
        ) {
            Ok(()) => "set".to_string(),
            Err(e) => format!("refused: {}", e.name()),
        },
    )
}

fn start_up_wall(_: NoArgs) -> Result<String, ToolError> {
    // SAFETY: addresses 16 to 28 are in linear memory (the shadow stack's
    // far end, below anything this call uses); a fixture's start function
    // wrote a `datetime` there, else they hold whatever they hold.
    let (secs, nanos) = unsafe {
        (
            core::ptr::read_volatile(16 as *const u64),
            core::ptr::read_volatile(24 as *const u32),
        )
    };
    let now = wasi::clocks::wall_clock::now();
    Ok(format!(
        "{secs}.{nanos:09} {}.{:09}",
        now.seconds, now.nanoseconds
    ))
}

fn identity(a: PathArgs) -> Result<String, ToolError> {
    use wasi::filesystem::types::{MetadataHashValue, PathFlags};
    let dirs = wasi::filesystem::preopens::get_directories();
    let (dir, rel) = preopened(&dirs, &a.path)?;
    let shown = |h: Result<MetadataHashValue, wasi::filesystem::types::ErrorCode>| match h {
        Ok(h) => format!("{:x}:{:x}", h.upper, h.lower),
        Err(e) => format!("refused-{}", e.name()),
    };
    Ok(format!(
        "{} {} {}",
        shown(dir.metadata_hash_at(PathFlags::SYMLINK_FOLLOW, &rel)),
        shown(dir.metadata_hash_at(PathFlags::SYMLINK_FOLLOW, &rel)),
        shown(dir.metadata_hash())
    ))
}

fn elicit_params(message: &str) -> serde_json::Value {
    serde_json::json!({
        "mode": "form",
        "message": message,
        "requestedSchema": {"type": "object", "properties": {"ok": {"type": "boolean"}}}
    })
}

fn ask_random(_: NoArgs) -> Result<String, ToolError> {
    use std::hash::{BuildHasher, Hasher};
    // Seeded from the host's random source on every run.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(0);
    let n = h.finish();
    let r = toolhost_guest::request_client(
        "elicitation/create",
        &elicit_params(&format!("Pick {n}?")),
    )?;
    Ok(r.to_string())
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct AskFlood {
    n: u32,
}

fn ask_flood(a: AskFlood) -> Result<String, ToolError> {
    let mut refused = 0;
    for i in 0..a.n {
        let ask = toolhost_guest::client::Ask::new(
            "elicitation/create",
            elicit_params(&format!("Question {i}?")),
        );
        // Every other question reuses the key `same`.
        let ask = if i % 2 == 0 {
            ask.key(format!("q{i}"))
        } else {
            ask.key("same")
        };
        if ask.send().is_err() {
            refused += 1;
        }
    }
    Ok(format!("refused {refused}"))
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct HoldArgs {
    /// A directory.
    pub path: String,
    /// How many listings to hold at once.
    pub n: u32,
}

/// Each open listing is a copy of the whole directory in the host's memory.
fn hold_listings(a: HoldArgs) -> Result<String, ToolError> {
    let mut held = Vec::new();
    let mut refused = None;
    for _ in 0..a.n {
        match std::fs::read_dir(&a.path) {
            Ok(r) => held.push(r),
            Err(e) => {
                refused = Some(e.to_string());
                break;
            }
        }
    }
    let n = held.len();
    drop(held);
    // Dropped listings give their memory back: one more opens.
    let again = std::fs::read_dir(&a.path).is_ok();
    Ok(format!(
        "held {n}; refused: {}; after dropping them: {}",
        refused.as_deref().unwrap_or("none"),
        if again { "opens" } else { "refused" }
    ))
}

fn ask_batch(a: AskFlood) -> Result<String, ToolError> {
    let asks = (0..a.n).map(|i| {
        toolhost_guest::client::Ask::new(
            "elicitation/create",
            elicit_params(&format!("Question {i}?")),
        )
        .key(format!("b{i}"))
    });
    let refused = toolhost_guest::client::ask_all(asks)
        .iter()
        .filter(|r| r.is_err())
        .count();
    Ok(format!("refused {refused}"))
}

fn ask_ignoring(_: NoArgs) -> Result<String, ToolError> {
    let _ = toolhost_guest::request_client("elicitation/create", &elicit_params("Ignored?"));
    Ok("done anyway".into())
}
