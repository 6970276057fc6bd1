//! Command-line front end: parse arguments, build the `Core`, print results.
//! No tool logic lives here.

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use toolhost::{CallEvent, CallRequest, Content, Core, HostConfig, LoadEvent, Scope, ToolOutput};

#[derive(Parser)]
#[command(name = "toolhost", version, about = "Run untrusted AI-agent tools as sandboxed WASI components.", long_about = None)]
#[command(
    after_help = "Tools are WASI components (.wasm) with a TOML manifest beside each one.\nExamples:\n  toolhost list --tools build/tools\n  toolhost call echo '{\"text\":\"hi\"}' --tools build/tools\n  toolhost check build/tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct HostOpts {
    /// Tools directory, manifest or .wasm for the default scope (repeatable).
    /// No default: a host loads only what it is named, never whatever the
    /// working directory holds.
    #[arg(
        long = "tools",
        short = 't',
        env = "TOOLHOST_TOOLS",
        value_delimiter = ','
    )]
    tools: Vec<PathBuf>,
    /// Tools for a named scope: NAME=PATH (repeatable).
    #[arg(long = "scope-tools", value_name = "NAME=PATH")]
    scope_tools: Vec<String>,
    /// Host config (TOML): engine sizing, caps that narrow every manifest.
    #[arg(long, env = "TOOLHOST_CONFIG")]
    config: Option<PathBuf>,
    /// Append an audit record (JSON line) for every call to this file
    /// (overrides `[audit] path` of the host config).
    #[arg(long, env = "TOOLHOST_AUDIT")]
    audit: Option<PathBuf>,
    /// Print every tool as it loads.
    #[arg(long, short)]
    verbose: bool,
}

#[derive(Subcommand)]
enum Command {
    /// List the tools of a scope.
    List {
        #[command(flatten)]
        host: HostOpts,
        /// Which scope to list.
        #[arg(long, default_value = "default")]
        scope: String,
        /// Print full definitions (schemas, annotations) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Call a tool once and print its result. Exits 1 if the tool fails.
    Call {
        /// The tool's name.
        tool: String,
        /// Arguments as a JSON object (default `{}`); `-` reads stdin.
        arguments: Option<String>,
        #[command(flatten)]
        host: HostOpts,
        #[arg(long, default_value = "default")]
        scope: String,
        /// Print the whole result (MCP shape) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Serve the tools over MCP: stdio (default) or Streamable HTTP.
    Serve {
        #[command(flatten)]
        host: HostOpts,
        #[command(flatten)]
        serve: ServeOpts,
    },
    /// Run a Claude agent (the `claude` CLI) with a scope's tools, sandboxed.
    Agent {
        #[command(flatten)]
        host: HostOpts,
        #[command(flatten)]
        agent: crate::agent_cli::AgentArgs,
    },
    #[command(flatten)]
    Package(crate::package_cli::PackageCommand),
    /// Who ran what: print the audit log's records that match (newest
    /// last), from the rotated files too.
    Audit(crate::audit_cli::AuditArgs),
    /// Validate manifests and components; report every problem at once.
    Check {
        /// Directories, manifests or .wasm files.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[arg(long, env = "TOOLHOST_CONFIG")]
        config: Option<PathBuf>,
    },
}

/// JSON text with the characters a terminal acts on or reorders by
/// written as `\uXXXX` escapes: C1 controls (U+0080-U+009F, which some
/// terminals read as escape sequences: an 8-bit OSC 52 writes the
/// clipboard) and the bidirectional and invisible format marks. serde_json
/// escapes only U+0000-U+001F, so a hostile tool name or description went
/// out raw in `--json` output (found by review). The same JSON value,
/// safe to show.
pub(crate) fn json_safe(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        let u = c as u32;
        if (0x80..=0x9f).contains(&u)
            || matches!(u, 0x061c | 0x200b..=0x200f | 0x202a..=0x202e | 0x2060..=0x2069 | 0xfeff)
        {
            // Outside a JSON string these never occur: they are always in one.
            out.push_str(&format!("\\u{u:04x}"));
        } else {
            out.push(c);
        }
    }
    out
}

/// `text` as a terminal shows it: each line's control and bidi-control
/// characters escaped. Package metadata, a tool's output and a model's text
/// are others' to choose: an escape sequence in one could erase or hide
/// the lines before it (found by review: a package's grant review hid a
/// new network grant under "(nothing else new)").
pub(crate) fn shown(text: &str) -> String {
    text.split('\n')
        .map(toolhost::Audit::printable)
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn main() -> ExitCode {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let log = tracing_subscriber::fmt::layer()
        .with_writer(crate::log::Stderr)
        .with_filter(crate::log::filter());
    #[cfg(feature = "otel")]
    let (otel, export) = crate::otel::layer().unzip();
    #[cfg(not(feature = "otel"))]
    let otel: Option<tracing_subscriber::layer::Identity> = None;
    tracing_subscriber::registry().with(log).with(otel).init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", shown(&format!("{e:#}")));
            ExitCode::from(2)
        }
    };
    drop(rt);
    #[cfg(feature = "otel")]
    if let Some(e) = export {
        e.finish();
    }
    code
}

pub(crate) fn host_config(path: &Option<PathBuf>) -> Result<HostConfig> {
    match path {
        Some(p) => HostConfig::load(p).map_err(|d| {
            eprint!("{}", d.render());
            anyhow::anyhow!(
                "the host config {} has {} problem(s)",
                p.display(),
                d.items.len()
            )
        }),
        None => Ok(HostConfig::default()),
    }
}

/// Progress printer for loading: compiles and failures, always; the rest
/// with `--verbose`.
fn load_printer(verbose: bool) -> impl Fn(LoadEvent<'_>) + Send + Sync + 'static {
    move |ev| match ev {
        LoadEvent::Loading {
            manifest,
            index,
            total,
            ..
        } if verbose || (total > 1 && std::io::stderr().is_terminal()) => {
            eprintln!(
                "[{}/{}] loading {}",
                index + 1,
                total,
                shown(&manifest.display().to_string())
            )
        }
        LoadEvent::Loaded {
            manifest,
            tools,
            compiled: true,
            millis,
            ..
        } => {
            eprintln!(
                "compiled {} ({tools} tools) in {millis} ms; cached for next time",
                shown(&manifest.display().to_string())
            )
        }
        LoadEvent::Loaded {
            manifest,
            tools,
            compiled: false,
            described,
            millis,
            ..
        } if verbose => {
            eprintln!(
                "loaded {} ({tools} tools) from cache{} in {millis} ms",
                shown(&manifest.display().to_string()),
                if described {
                    ", then asked what it offers"
                } else {
                    ""
                }
            )
        }
        LoadEvent::Failed { error, .. } => eprint!("{}", shown(&error.render())),
        _ => {}
    }
}

async fn build_core(h: &HostOpts) -> Result<Core> {
    let config = host_config(&h.config)?;
    build_core_with(h, config, toolhost::Metrics::new(), None).await
}

/// The core of `h` and `config`; `secret`, a file of the front end's own
/// (the state key ring), is protected like the host's files.
async fn build_core_with(
    h: &HostOpts,
    config: HostConfig,
    metrics: toolhost::Metrics,
    secret: Option<&Path>,
) -> Result<Core> {
    let mut audit = config.audit.clone();
    if let Some(a) = &h.audit {
        audit.path = Some(a.clone());
    }
    let sources = all_sources(h, &config)?;
    let mut b = Core::builder().config(config).metrics(metrics);
    // A tool that read the key ring could forge session ids and the sealed
    // state of any replica's calls (found by review).
    if let Some(p) = secret {
        b = b.protect(p);
    }
    for s in sources {
        b = b.add_source(s);
    }
    if let Some(p) = &audit.path {
        b = b.audit(
            toolhost::Audit::open(&audit).with_context(|| format!("audit log {}", p.display()))?,
        );
    }
    let core = b.on_load(load_printer(h.verbose)).build().await?;
    Ok(core)
}

/// Every tool source: `--tools` in the default scope; each tenant and
/// agent a scope of its own (its named tools from `--tools`, its own
/// paths, all under its narrower caps); `--scope-tools`.
fn all_sources(h: &HostOpts, config: &HostConfig) -> Result<Vec<toolhost::Source>> {
    let mut sources: Vec<_> = h
        .tools
        .iter()
        .map(|t| toolhost::Source::new(Scope::default(), t))
        .collect();
    sources.extend(config.sources(&h.tools));
    for s in &h.scope_tools {
        let (name, path) = s
            .split_once('=')
            .with_context(|| format!("--scope-tools `{s}`: expected NAME=PATH"))?;
        sources.push(toolhost::Source::new(Scope::new(name), path));
    }
    if sources.is_empty() {
        bail!(
            "no tools named: pass --tools DIR (or TOOLHOST_TOOLS), --scope-tools NAME=PATH, or tenants' tool paths in --config"
        );
    }
    Ok(sources)
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::List { host, scope, json } => list(&host, &scope, json).await,
        Command::Call {
            tool,
            arguments,
            host,
            scope,
            json,
        } => call(&host, &scope, &tool, arguments.as_deref(), json).await,
        Command::Serve { host, serve } => serve_mcp(&host, serve).await,
        Command::Package(cmd) => crate::package_cli::run(cmd).await,
        Command::Audit(args) => crate::audit_cli::run(args),
        Command::Agent { host, agent } => {
            let config = host_config(&host.config)?;
            crate::agent_cli::run(build_core(&host).await?, &config, agent).await
        }
        Command::Check { paths, config } => check(&paths, &config).await,
    }
}

/// `list`: the tools of `scope`, a line each or as JSON.
async fn list(host: &HostOpts, scope: &str, json: bool) -> Result<ExitCode> {
    let core = build_core(host).await?;
    let tools = core.tools(&Scope::new(scope));
    if json {
        println!("{}", json_safe(&serde_json::to_string_pretty(&tools)?));
    } else if tools.is_empty() {
        eprintln!(
            "no tools in scope `{scope}` (sources: {})",
            host.tools
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    } else {
        let w = tools.iter().map(|t| t.name.len()).max().unwrap_or(0);
        for t in &tools {
            let first = t.description.lines().next().unwrap_or("");
            println!("{:w$}  {}", t.name, shown(first));
        }
    }
    // What failed to load was printed as it failed: a script sees it too.
    Ok(if core.load_errors().is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `call`: one call of `tool`, its log and progress on stderr, its result
/// printed (exit code 1 if it fails).
async fn call(
    host: &HostOpts,
    scope: &str,
    tool: &str,
    arguments: Option<&str>,
    json: bool,
) -> Result<ExitCode> {
    let args = call_arguments(arguments)?;
    let core = build_core(host).await?;
    let (tx, rx) = toolhost::EventSink::channel(1024);
    let printer = tokio::spawn(print_events(rx));
    let result = core
        .call(
            CallRequest::new(Scope::new(scope), tool, args)
                .caller("cli")
                .events(tx),
        )
        .await;
    let _ = printer.await;
    core.flush_audit().await;
    print_result(&result, json)
}

/// The arguments of `call`: a JSON object given on the command line, or
/// read from stdin for `-`; none when not given.
fn call_arguments(arguments: Option<&str>) -> Result<Option<serde_json::Map<String, Value>>> {
    let args = match arguments {
        None => None,
        Some("-") => Some(std::io::read_to_string(std::io::stdin())?),
        Some(s) => Some(s.to_string()),
    };
    Ok(match args {
        None => None,
        Some(text) => match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(m)) => Some(m),
            Ok(_) => bail!("arguments must be a JSON object, like '{{\"text\": \"hi\"}}'"),
            Err(e) => bail!("arguments are not valid JSON: {e}"),
        },
    })
}

/// Print a call's log and progress messages to stderr until it ends.
async fn print_events(mut rx: toolhost::EventStream) {
    while let Some(ev) = rx.recv().await {
        match ev {
            CallEvent::Log { level, message } => eprintln!("[{level:?}] {}", shown(&message)),
            CallEvent::Dropped { count } => {
                eprintln!("[warning] {count} log or progress messages were dropped")
            }
            CallEvent::Progress {
                progress,
                total,
                message,
            } => {
                let total = total.map(|t| format!("/{t}")).unwrap_or_default();
                eprintln!(
                    "[progress {progress}{total}] {}",
                    shown(&message.unwrap_or_default())
                )
            }
            _ => {}
        }
    }
}

/// Print a call's result, as text or (`json`) in MCP's shape; a failed
/// call is exit code 1.
fn print_result(result: &Result<ToolOutput, toolhost::CallError>, json: bool) -> Result<ExitCode> {
    match result {
        Ok(out) => {
            if json {
                println!(
                    "{}",
                    json_safe(&serde_json::to_string_pretty(&output_json(out, false))?)
                );
            } else {
                print_output(out);
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            if json {
                println!(
                    "{}",
                    json_safe(&serde_json::to_string_pretty(
                        &json!({"content": [{"type": "text", "text": e.to_string()}], "isError": true})
                    )?)
                );
            } else {
                eprintln!("error: {}", shown(&e.to_string()));
            }
            Ok(ExitCode::from(1))
        }
    }
}

/// `check`: load `paths` as the default scope, every problem printed.
async fn check(paths: &[PathBuf], config: &Option<PathBuf>) -> Result<ExitCode> {
    let host = host_config(config)?;
    let core = Core::builder().config(host.clone());
    let core = paths
        .iter()
        .fold(core, |b, p| b.source(Scope::default(), p));
    let core = core.on_load(load_printer(true)).build().await?;
    let errors = core.load_errors();
    let tools = core.tools(&Scope::default());
    // What the host config narrows without refusing (a network allow-list,
    // a capped limit) loads fine and is met only by a call: said here, as
    // `install` says it (found by the user review).
    for p in paths {
        let manifests = toolhost::Source::new(Scope::default(), p)
            .manifests()
            .unwrap_or_default();
        for m in manifests {
            let Ok(manifest) = toolhost::Manifest::load(&m) else {
                continue;
            };
            let review = toolhost_package::grants::review(&manifest, &host, &[]);
            let narrowed: Vec<String> = review
                .lines
                .iter()
                .filter_map(|(kind, what, v)| match v {
                    toolhost_package::grants::Verdict::Narrowed(why) => {
                        Some(shown(&format!("  {kind}: {what}: narrowed: {why}")))
                    }
                    _ => None,
                })
                .collect();
            if !narrowed.is_empty() {
                println!(
                    "{}: this host narrows (its host config, or the default caps):\n{}",
                    shown(&m.display().to_string()),
                    narrowed.join("\n")
                );
            }
        }
    }
    if errors.is_empty() {
        println!("ok: {} tools, no problems", tools.len());
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "{} manifest(s) or source(s) with problems (each printed above); {} tools loaded fine",
            errors.len(),
            tools.len()
        );
        Ok(ExitCode::from(1))
    }
}

/// A call's output on stdout; escaped (see [`shown`]) when stdout is a
/// terminal, as it is when a person reads it, and as written when piped.
fn print_output(out: &ToolOutput) {
    use std::io::IsTerminal as _;
    let terminal = std::io::stdout().is_terminal();
    let text = |t: &str| {
        if terminal { shown(t) } else { t.to_string() }
    };
    for c in &out.content {
        match c {
            Content::Text(t) => println!("{}", text(t)),
            // Escaped always: a type is a short token, and one holding
            // control characters (found by review) is not one.
            Content::Image { data, mime_type } => {
                println!("[image {}, {} bytes]", shown(mime_type), data.len())
            }
            Content::Audio { data, mime_type } => {
                println!("[audio {}, {} bytes]", shown(mime_type), data.len())
            }
            Content::Resource { uri, .. } => println!("[resource {}]", shown(uri)),
            _ => println!("[content of a kind this version cannot print]"),
        }
    }
}

/// The result in MCP's `CallToolResult` shape.
fn output_json(out: &ToolOutput, is_error: bool) -> Value {
    let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
    let content: Vec<Value> = out
        .content
        .iter()
        .map(|c| match c {
            Content::Text(t) => json!({"type": "text", "text": t}),
            Content::Image { data, mime_type } => {
                json!({"type": "image", "data": b64(data), "mimeType": mime_type})
            }
            Content::Audio { data, mime_type } => {
                json!({"type": "audio", "data": b64(data), "mimeType": mime_type})
            }
            Content::Resource {
                uri,
                mime_type,
                contents,
            } => {
                let mut r = json!({"uri": uri});
                if let Some(m) = mime_type {
                    r["mimeType"] = json!(m);
                }
                match contents {
                    toolhost::ResourceContents::Text(t) => r["text"] = json!(t),
                    toolhost::ResourceContents::Blob(b) => r["blob"] = json!(b64(b)),
                    _ => {}
                }
                json!({"type": "resource", "resource": r})
            }
            _ => json!({"type": "text", "text": "[content of a kind this version cannot print]"}),
        })
        .collect();
    let mut v = json!({"content": content, "isError": is_error});
    if let Some(s) = &out.structured {
        v["structuredContent"] = s.clone();
    }
    v
}

#[derive(Args)]
struct ServeOpts {
    /// Speak MCP on stdin/stdout (the default).
    #[arg(long, conflicts_with = "http")]
    stdio: bool,
    /// Serve Streamable HTTP at http://ADDR/mcp (default 127.0.0.1:8750).
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:8750")]
    http: Option<std::net::SocketAddr>,
    /// Require `Authorization: Bearer TOKEN` on HTTP (needed off loopback;
    /// 16 bytes at least). Prefer the environment variable: a command line
    /// is visible to every user of the machine.
    #[arg(long, env = "TOOLHOST_BEARER_TOKEN", hide_env_values = true)]
    bearer_token: Option<String>,
    /// Another accepted HTTP `Host` (name or name:port; repeatable).
    #[arg(long = "allow-host", value_name = "HOST")]
    allow_hosts: Vec<String>,
    /// Another accepted browser `Origin` (scheme://host[:port|:*]; repeatable).
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    allow_origins: Vec<String>,
    /// The scope whose tools are served.
    #[arg(long, default_value = "default")]
    scope: String,
    /// Serve Prometheus metrics at http://ADDR/metrics, with /healthz and
    /// /readyz, on a listener of their own.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    /// Reload the tools when their files change (on by default).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    watch: bool,
    /// A file of keys (64 hex digits each, one per line, newest first; `#`
    /// comments) sealing 2025-11-25 session ids and the request state of
    /// 2026-07-28 calls: replicas behind one load balancer must share them.
    /// The newest seals, every one opens (rotation). Without it, the keys in
    /// the TOOLHOST_STATE_KEY variable (same format, commas or spaces
    /// between keys); without either, a random key per process. Never on the
    /// command line.
    #[arg(long, value_name = "FILE")]
    state_key_file: Option<PathBuf>,
    /// How long a 2025-11-25 HTTP session stays valid (e.g. 24h, 30m); then
    /// its client starts a new one.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = humantime::parse_duration)]
    session_ttl: std::time::Duration,
    /// HTTP connections open at once; past it, new ones wait in the
    /// kernel's accept queue.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    max_connections: usize,
    /// HTTP connections one client address (IPv6: its /64) may hold open
    /// at once; past it, 429 and the connection is closed. 0 (the default)
    /// is no limit: behind a proxy or load balancer every connection comes
    /// from its address. Set it when clients connect directly.
    #[arg(long, value_name = "N", default_value_t = 0)]
    max_connections_per_address: usize,
    /// How long an HTTP client may take to send a request's headers (also
    /// the longest a request's body may send nothing, and the longest an
    /// idle keep-alive connection stays open).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = positive_duration)]
    header_read_timeout: std::time::Duration,
    /// 2025-11-25 HTTP sessions held open at once per tenant (or by a
    /// server without tenants), unless a tenant's `max-sessions` says
    /// otherwise; past it, a new session gets 429.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    max_sessions: u32,
    /// HTTP requests in progress at once per tenant (or for a server
    /// without tenants), streamed responses included, unless a tenant's
    /// `max-open-requests` says otherwise; past it, 429.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    max_open_requests: u32,
    /// Bytes of HTTP request bodies held at once per tenant (or by a
    /// server without tenants), counted as they arrive and until each
    /// response ends, unless a tenant's `max-request-bytes` says otherwise;
    /// past it, 429 (`8 MiB`, or a number of bytes).
    #[arg(long, value_name = "SIZE", default_value = "64 MiB", value_parser = request_bytes)]
    max_request_bytes: usize,
}

/// A size of at least 1 KiB (`64 MiB`, `65536`).
fn request_bytes(s: &str) -> Result<usize, String> {
    match toolhost::caps::parse_size(s)? {
        n if n >= 1 << 10 => usize::try_from(n).map_err(|e| e.to_string()),
        _ => Err("must be at least 1 KiB".into()),
    }
}

/// A duration above zero (`10s`, `500ms`).
fn positive_duration(s: &str) -> Result<std::time::Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("must be more than zero".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

/// The key ring sealing session ids and request state: `--state-key-file`,
/// else `TOOLHOST_STATE_KEY`, else a random key.
fn state_key(opts: &ServeOpts) -> Result<toolhost::StateKey> {
    if let Some(path) = &opts.state_key_file {
        let name = || format!("--state-key-file {}", path.display());
        return state_key_file(path)
            .and_then(|text| Ok(toolhost::StateKey::from_hex_list(&text)?))
            .with_context(name);
    }
    match std::env::var("TOOLHOST_STATE_KEY") {
        Ok(text) => toolhost::StateKey::from_hex_list(&text).context("TOOLHOST_STATE_KEY"),
        Err(std::env::VarError::NotPresent) => Ok(toolhost::StateKey::random()),
        Err(e) => Err(e).context("TOOLHOST_STATE_KEY"),
    }
}

/// The state-key file's text: a regular file (a FIFO would hold the start
/// up), of at most 64 KiB, in the hands of toolhost's user
/// (`files::open_trusted`), that no other user may read except its group,
/// and no one but its owner write. Anyone who reads the ring can seal session ids
/// and request state the replicas take as their own; it was read whatever
/// its mode (found by review). Group-readable is fine: a Kubernetes secret
/// is mounted `root:fsGroup`, `0440`.
fn state_key_file(path: &Path) -> Result<String> {
    use std::io::Read as _;
    // Who may replace it chooses the ring (found by the review of the
    // fix: a 0600 file in a directory every user may write).
    let (file, meta) = toolhost::files::open_trusted(path)?;
    toolhost::files::kept(path, &meta, toolhost::files::Keep::Secret)?;
    if meta.len() > 64 << 10 {
        anyhow::bail!("{} bytes, more than a key ring of 64 KiB", meta.len());
    }
    let mut text = String::new();
    file.take(meta.len()).read_to_string(&mut text)?;
    Ok(text)
}

async fn serve_mcp(host: &HostOpts, opts: ServeOpts) -> Result<ExitCode> {
    use toolhost::mcp::{HttpOptions, HttpServer, McpServer};
    let metrics = toolhost::Metrics::new();
    // Up before the tools load: /healthz answers, /readyz says "loading".
    let metrics_task = match opts.metrics {
        Some(addr) => {
            if !addr.ip().is_loopback() {
                eprintln!(
                    "toolhost: warning: metrics on {addr} show tool and tenant names to anyone who can reach it; keep it on an internal network"
                );
            }
            let server = toolhost::MetricsServer::bind(addr, metrics.clone())
                .await
                .with_context(|| format!("--metrics {addr}"))?
                .allow_hosts(opts.allow_hosts.clone());
            eprintln!(
                "toolhost: serving metrics at http://{}/metrics",
                server.local_addr()?
            );
            Some(tokio::spawn(server.serve(shutdown_signal())))
        }
        None => None,
    };
    // Read once: the core, the tenants and the reloads start from the same.
    let config = host_config(&host.config)?;
    let core = build_core_with(
        host,
        config.clone(),
        metrics,
        opts.state_key_file.as_deref(),
    )
    .await?;
    let audit_core = core.clone();
    let scope = Scope::new(&opts.scope);
    let key = state_key(&opts)?;
    // `--stdio` and `--http` conflict: `--stdio` only makes the default explicit.
    match opts.http.filter(|_| !opts.stdio) {
        Some(addr) => {
            let mut http = HttpOptions::new(addr);
            http.bearer_token = opts.bearer_token;
            http.allowed_hosts = opts.allow_hosts;
            http.allowed_origins = opts.allow_origins;
            http.session_ttl = opts.session_ttl;
            http.max_connections = opts.max_connections;
            http.max_connections_per_address = opts.max_connections_per_address;
            http.header_read_timeout = opts.header_read_timeout;
            http.max_sessions = opts.max_sessions as usize;
            http.max_open_requests = opts.max_open_requests as usize;
            http.max_request_bytes = opts.max_request_bytes;
            let bound = if config.tenants.is_empty() {
                let server = McpServer::with_state_key(core.clone(), scope, "mcp-http", key);
                HttpServer::bind(server, http).await
            } else {
                // Tenants: each credential selects its tenant's scope.
                let tenancy = toolhost::mcp::Tenancy::new(&config.tenants, &config.auth)?;
                HttpServer::bind_tenants(core.clone(), tenancy, key, http).await
            };
            let http = bound.map_err(|e| match e {
                toolhost::mcp::HttpError::PublicWithoutToken(_) => {
                    anyhow::anyhow!("{e}; set --bearer-token (or TOOLHOST_BEARER_TOKEN)")
                }
                e => e.into(),
            })?;
            let reloads = Reloads::start(host, &core, http.tenants(), config, opts.watch)?;
            eprintln!("toolhost: serving MCP at http://{}/mcp", http.local_addr());
            http.serve(shutdown_signal()).await?;
            drop(reloads);
        }
        None => {
            let reloads = Reloads::start(host, &core, None, config, opts.watch)?;
            let server = McpServer::with_state_key(core, scope, "mcp-stdio", key);
            // Pipes and sockets (as MCP clients start servers) polled on
            // the I/O driver, not read and written on the blocking pool;
            // `tools/call` answered without the hops of rmcp's loop.
            let running = server
                .clone()
                .serve_stdio(toolhost::mcp::stdio())
                .await
                .context("MCP initialization over stdio failed")?;
            tokio::select! {
                r = running.waiting() => { r.context("MCP stdio session failed")?; }
                _ = shutdown_signal() => {}
            }
            drop(reloads);
            server.drain().await;
        }
    }
    // A clean shutdown: every call's record is on disk before we exit.
    audit_core.flush_audit().await;
    if let Some(t) = metrics_task {
        t.abort();
    }
    Ok(ExitCode::SUCCESS)
}

/// Reloads a running server: on SIGHUP, and (with `--watch`) when the host
/// config, a JWKS file or a tool source changes. The host config is read
/// again and checked whole; a config with problems is refused (they are
/// printed) and the running one stays. Calls already running finish under
/// what they started with (`Core::reconfigure`). Dropping it stops.
struct Reloads(tokio::task::JoinHandle<()>);

impl Drop for Reloads {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Reloads {
    fn start(
        host: &HostOpts,
        core: &Core,
        tenants: Option<toolhost::mcp::TenantsHandle>,
        config: HostConfig,
        watch: bool,
    ) -> Result<Reloads> {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("cannot handle SIGHUP")?;
        // Fail at start, not at the first reload, if the paths cannot be watched.
        let mut changes = match watch {
            true => Some(watched(host, &config)?),
            false => None,
        };
        let (host, core) = (host.clone(), core.clone());
        let mut config = config;
        Ok(Reloads(tokio::spawn(async move {
            loop {
                let changed = async {
                    match &mut changes {
                        Some(c) => c.next().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = hup.recv() => eprintln!("toolhost: SIGHUP: reloading"),
                    Some(()) = changed => {}
                    else => return,
                }
                match reload(&host, &core, tenants.as_ref(), &config).await {
                    Ok(c) => config = c,
                    Err(e) => {
                        eprintln!(
                            "toolhost: reload refused, still serving the previous configuration: {e:#}"
                        );
                        // The tools may have changed all the same.
                        let errors = core.reload().await;
                        eprintln!(
                            "toolhost: tools reloaded under the previous configuration ({} load errors)",
                            errors.len()
                        );
                    }
                }
                // The tool paths may have changed with the config: the new
                // watcher starts before the old one goes, and a change the
                // old one saw during the reload makes another.
                if let Some(old) = &mut changes {
                    match watched(&host, &config) {
                        Ok(c) => {
                            if old.pending() {
                                c.touch();
                            }
                            changes = Some(c);
                        }
                        Err(e) => eprintln!(
                            "toolhost: {}; watching the previous paths",
                            shown(&format!("{e:#}"))
                        ),
                    }
                }
            }
        })))
    }
}

/// Watch the host config, its JWKS file and every tool source.
fn watched(host: &HostOpts, config: &HostConfig) -> Result<toolhost::Changes> {
    let mut paths: Vec<PathBuf> = all_sources(host, config)?
        .into_iter()
        .map(|s| s.path)
        .collect();
    paths.extend(host.config.iter().cloned());
    paths.extend(config.auth.jwt.iter().map(|j| j.jwks_file.clone()));
    toolhost::Changes::new(&paths, std::time::Duration::from_millis(250))
        .context("cannot watch the tools and host config for changes (use --watch false)")
}

/// Read the host config again and serve it: the HTTP tenants'
/// credentials, then the core's tools, caps, rules and quotas. Nothing
/// changes if the config (or its JWKS file) has a problem.
async fn reload(
    host: &HostOpts,
    core: &Core,
    tenants: Option<&toolhost::mcp::TenantsHandle>,
    old: &HostConfig,
) -> Result<HostConfig> {
    let config = host_config(&host.config)?;
    let tenancy = match tenants {
        Some(_) if config.tenants.is_empty() => anyhow::bail!(
            "a server started with `[[tenant]]`s keeps at least one; restart it to serve without tenants"
        ),
        Some(_) => Some(toolhost::mcp::Tenancy::new(&config.tenants, &config.auth)?),
        // Refused whole, not half applied: the tenants' caps and quotas
        // would change while the server went on serving its one scope as
        // before (found by review: an operator adding tenants to lock a
        // server down was told it would take a restart, and was not).
        None if !config.tenants.is_empty() && old.tenants.is_empty() => anyhow::bail!(
            "a server started without `[[tenant]]`s serves its one scope until it is restarted; restart it to serve tenants"
        ),
        None => None,
    };
    let sources = all_sources(host, &config)?;
    // Credentials first: a revoked one reaches nothing from now on, and a
    // new tenant is served once its tools have loaded (until then it sees
    // its scope as it was: empty, if it is new).
    if let (Some(h), Some(t)) = (tenants, tenancy) {
        h.replace(t);
    }
    let done = core.reconfigure(config.clone(), sources).await;
    for s in &done.needs_restart {
        eprintln!("toolhost: {s} changed; it takes effect after a restart");
    }
    eprintln!(
        "toolhost: configuration reloaded ({} tenants, {} load errors)",
        config.tenants.len(),
        done.load_errors.len()
    );
    Ok(config)
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A review's case: `--json` output carried a hostile name's C1
    /// controls (an 8-bit OSC 52 writes the terminal's clipboard) and bidi
    /// overrides raw. They are escaped now, and the JSON means the same.
    #[test]
    fn json_output_escapes_what_a_terminal_acts_on() {
        let hostile = "echo\u{202e}\u{9d}52;c;SGk=\u{9c}\u{200b}é";
        let text = serde_json::to_string(&json!({ "name": hostile })).unwrap();
        let safe = json_safe(&text);
        assert!(
            safe.chars().all(|c| !(('\u{80}'..='\u{9f}').contains(&c)
                || c == '\u{202e}'
                || c == '\u{200b}')),
            "{safe:?}"
        );
        assert!(
            safe.contains("\\u202e") && safe.contains("\\u009d"),
            "{safe}"
        );
        // Other text as it was.
        assert!(safe.contains('é'), "{safe}");
        let back: Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back["name"], hostile);
    }
}
