//! The sandbox: one wasmtime `Engine` per process, components compiled once
//! (and cached on disk), an `InstancePre` per component, and a fresh `Store`
//! per call whose WASI context is built from the tool's grants alone.
//!
//! This module enforces limits and grants; it does not decide *whether* a
//! call may happen (that is `policy`/`core`) and knows no front end.

mod cache;
mod state;

pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "toolhost",
        imports: { "toolhost:tool/host.request-client": async },
        exports: { default: async },
    });
}

use crate::config::HostConfig;
use crate::error::{CallError, LoadError};
use crate::manifest::{FsMode, HostPattern, Limits, Manifest};
use crate::model::{
    Annotations, ClientRequests, Content, EventSink, ResourceContents, ToolDef, ToolOutput,
};
use bindings::exports::toolhost::tool::tool as wit_tool;
use sha2::{Digest, Sha256};
use state::{CallState, Limiter, NetGate};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};
use wasmtime_wasi_http::WasiHttpCtx;

/// Owns the engine, the linker and the epoch ticker.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<CallState>,
    cache: Option<cache::Cache>,
    config: HostConfig,
    /// Bounds live stores to the pool's size: a call waits for a slot
    /// rather than failing when the pool is momentarily full.
    slots: Arc<Semaphore>,
    _ticker: Ticker,
}

/// A loaded component: its pre-linked instance, its tools and the limits and
/// grants every call of it gets.
pub struct LoadedComponent {
    pub manifest: Arc<Manifest>,
    pub limits: Limits,
    pub tools: Vec<ToolDef>,
    pub network: Arc<[HostPattern]>,
    /// MCP client requests the tool may make.
    pub client_requests: Arc<[String]>,
    /// Whether this load compiled the component (false: came from the cache).
    pub compiled: bool,
    pre: bindings::ToolhostPre<CallState>,
    concurrency: Arc<Semaphore>,
}

/// What a call carries into the sandbox besides its tool and arguments.
#[derive(Default)]
pub struct CallContext {
    pub events: Option<EventSink>,
    pub cancel: CancellationToken,
    /// The caller's client, for the requests the manifest grants.
    pub client: Option<Arc<dyn ClientRequests>>,
}

/// Advances the engine's epoch every tick: deadlines, cancellation checks and
/// cooperative yields of running guests all hang off it.
struct Ticker {
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Sandbox {
    pub fn new(config: HostConfig) -> anyhow::Result<Sandbox> {
        let mut wc = Config::new();
        wc.wasm_component_model(true)
            .epoch_interruption(true)
            .consume_fuel(true)
            .max_wasm_stack(config.max_wasm_stack)
            .async_stack_size(config.max_wasm_stack + (1 << 20))
            .cranelift_opt_level(wasmtime::OptLevel::Speed);
        let n = config.max_instances;
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(n)
            .total_core_instances(n * 8)
            .max_core_instances_per_component(32)
            .total_memories(n * 2)
            .max_memories_per_component(4)
            .total_tables(n * 8)
            .max_tables_per_component(16)
            .total_stacks(n)
            .max_memory_size(config.caps.memory as usize)
            // Keep the first pages of each slot resident: resetting them with
            // memset is far cheaper than unmapping and faulting them back in,
            // and it roughly halves the cost of a fresh sandbox.
            .linear_memory_keep_resident(config.memory_keep_resident)
            .table_keep_resident(64 << 10)
            .async_stack_keep_resident(64 << 10)
            .pagemap_scan(if config.pagemap_scan {
                wasmtime::Enabled::Auto
            } else {
                wasmtime::Enabled::No
            });
        wc.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&wc)?;

        let mut linker: Linker<CallState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        bindings::Toolhost::add_to_linker::<_, HasSelf<CallState>>(&mut linker, |s| s)?;

        let cache = match &config.cache_dir {
            Some(dir) => match cache::Cache::new(dir, &engine) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), "compile cache disabled: {e}");
                    None
                }
            },
            None => None,
        };

        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = stop.clone();
            let tick = config.epoch_tick;
            std::thread::Builder::new()
                .name("toolhost-epoch".into())
                .spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        std::thread::sleep(tick);
                        engine.increment_epoch();
                    }
                })?;
        }

        Ok(Sandbox {
            engine,
            linker,
            cache,
            slots: Arc::new(Semaphore::new(n as usize)),
            config,
            _ticker: Ticker { stop },
        })
    }

    /// Compile (or fetch from cache) and pre-link a component, then ask it
    /// what tools it offers.
    pub async fn load(&self, manifest: Manifest) -> Result<LoadedComponent, LoadError> {
        let mpath = manifest.path.clone();
        let cpath = manifest.component.clone();
        let bytes = std::fs::read(&cpath).map_err(|source| LoadError::ReadComponent {
            manifest: mpath.clone(),
            component: cpath.clone(),
            source,
        })?;
        let actual: [u8; 32] = Sha256::digest(&bytes).into();
        if actual != manifest.sha256 {
            return Err(LoadError::DigestMismatch {
                manifest: mpath,
                component: cpath,
                expected: hex::encode(manifest.sha256),
                actual: hex::encode(actual),
            });
        }
        if !self.config.allow_rw_fs
            && let Some(g) = manifest.fs.iter().find(|g| g.mode == FsMode::ReadWrite)
        {
            return Err(LoadError::GrantRefused {
                manifest: mpath,
                reason: format!(
                    "read-write directory `{}` (this host allows read-only grants only)",
                    g.guest
                ),
            });
        }

        let (component, compiled) = match self
            .cache
            .as_ref()
            .and_then(|c| c.get(&self.engine, &actual))
        {
            Some(c) => (c, false),
            None => {
                let engine = self.engine.clone();
                let c =
                    tokio::task::spawn_blocking(move || Component::from_binary(&engine, &bytes))
                        .await
                        .expect("compile task panicked")
                        .map_err(|e| LoadError::InvalidComponent {
                            manifest: mpath.clone(),
                            component: cpath.clone(),
                            reason: format!("{e:#}"),
                        })?;
                if let Some(cache) = &self.cache {
                    cache.put(&actual, &c);
                }
                (c, true)
            }
        };
        let wrong_world = |e: wasmtime::Error| LoadError::WrongWorld {
            manifest: mpath.clone(),
            component: cpath.clone(),
            reason: format!("{e:#}"),
        };
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(wrong_world)?;
        let pre = bindings::ToolhostPre::new(pre).map_err(wrong_world)?;

        let limits = self.config.cap(&manifest.limits);
        let network: Arc<[HostPattern]> = match &self.config.network_allow {
            None => manifest.network.clone().into(),
            // Narrow: keep only manifest patterns the operator also allows.
            Some(host) => manifest
                .network
                .iter()
                .filter(|p| host.iter().any(|h| h.matches(&p.host, port_probe(p))))
                .cloned()
                .collect(),
        };
        let mut loaded = LoadedComponent {
            concurrency: Arc::new(Semaphore::new(limits.max_concurrency as usize)),
            client_requests: manifest.client_requests.clone().into(),
            manifest: Arc::new(manifest),
            limits,
            tools: Vec::new(),
            network,
            compiled,
            pre,
        };

        // `describe` runs under the same limits as a call, with no grants.
        let describe_err = |reason: String| LoadError::Describe {
            manifest: mpath.clone(),
            reason,
        };
        let mut store = self
            .store(&loaded, CallContext::default(), false)
            .map_err(|e| describe_err(format!("{e:#}")))?;
        let fut = async {
            let inst = loaded.pre.instantiate_async(&mut store).await?;
            inst.toolhost_tool_tool().call_describe(&mut store).await
        };
        let defs = tokio::time::timeout(loaded.limits.timeout, fut)
            .await
            .map_err(|_| {
                describe_err(format!("did not answer within {:?}", loaded.limits.timeout))
            })?
            .map_err(|e| describe_err(format!("{e:#}")))?;
        drop(store);
        for d in defs {
            let tool = convert_def(d).map_err(|reason| LoadError::BadToolDef {
                manifest: mpath.clone(),
                tool: reason.0,
                reason: reason.1,
            })?;
            if loaded.tools.iter().any(|t| t.name == tool.name) {
                return Err(LoadError::BadToolDef {
                    manifest: mpath,
                    tool: tool.name.to_string(),
                    reason: "described twice".into(),
                });
            }
            loaded.tools.push(tool);
        }
        Ok(loaded)
    }

    /// A fresh store for one call of `comp`, with its grants and limits.
    fn store(
        &self,
        comp: &LoadedComponent,
        cx: CallContext,
        grants: bool,
    ) -> anyhow::Result<Store<CallState>> {
        let stdout = MemoryOutputPipe::new(self.config.max_stdio);
        let stderr = MemoryOutputPipe::new(self.config.max_stdio);
        let mut b = WasiCtxBuilder::new();
        b.stdout(stdout.clone()).stderr(stderr.clone());
        if grants {
            let m = &comp.manifest;
            for (k, v) in &m.env {
                b.env(k, v);
            }
            for g in &m.fs {
                let perms = match g.mode {
                    FsMode::ReadOnly => FsPerms::ReadOnly,
                    FsMode::ReadWrite => FsPerms::ReadWrite,
                };
                b.preopened_dir(&g.host, &g.guest, perms)?;
            }
        }
        let state = CallState {
            wasi: b.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            net: NetGate {
                allow: if grants {
                    comp.network.clone()
                } else {
                    Arc::from([])
                },
            },
            limiter: Limiter {
                memory: comp.limits.memory as usize,
                denied_memory: false,
            },
            events: cx.events,
            event_budget: self.config.max_stdio * 4,
            cancel: cx.cancel,
            stdout,
            stderr,
            client: cx.client,
            client_grants: if grants {
                comp.client_requests.clone()
            } else {
                Arc::from([])
            },
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.set_fuel(comp.limits.fuel.unwrap_or(u64::MAX))?;
        // Every tick, yield to the executor so a busy guest never starves
        // other calls; the deadline and cancellation are enforced around the
        // call future (see `call`).
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);
        Ok(store)
    }

    /// Run tool `tool` of `comp` with `arguments` (JSON text) in a fresh
    /// sandbox. Waits for a concurrency slot within the tool's timeout.
    pub async fn call(
        &self,
        comp: &LoadedComponent,
        tool: &str,
        arguments: &str,
        cx: CallContext,
    ) -> Result<ToolOutput, CallError> {
        let limits = &comp.limits;
        let deadline = Instant::now() + limits.timeout;
        let cancel = cx.cancel.clone();
        let err_tool = || tool.to_string();

        let run = async {
            let _own = comp
                .concurrency
                .acquire()
                .await
                .expect("semaphore never closed");
            let _slot = self.slots.acquire().await.expect("semaphore never closed");
            let mut store = self
                .store(comp, cx, true)
                .map_err(|e| CallError::Internal {
                    tool: err_tool(),
                    message: format!("{e:#}"),
                })?;
            let result = async {
                let inst = comp.pre.instantiate_async(&mut store).await?;
                inst.toolhost_tool_tool()
                    .call_call(&mut store, tool, arguments)
                    .await
            }
            .await;
            Ok::<_, CallError>((result, store))
        };

        let (result, store) = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(CallError::Cancelled { tool: err_tool() }),
            _ = tokio::time::sleep_until(deadline.into()) => return Err(CallError::Timeout { tool: err_tool(), after: limits.timeout }),
            r = run => r?,
        };

        let state = store.data();
        match result {
            Ok(Ok(r)) => {
                // Weigh the result as the guest sent it (structured JSON as
                // text), before any of it is parsed.
                let size: usize = r.content.iter().map(wit_content_size).sum::<usize>()
                    + r.structured.as_ref().map_or(0, String::len);
                if size as u64 > limits.max_output {
                    return Err(CallError::OutputTooLarge {
                        tool: err_tool(),
                        size: size as u64,
                        limit: limits.max_output,
                    });
                }
                convert_result(r).map_err(|details| CallError::BadResult {
                    tool: err_tool(),
                    details,
                })
            }
            Ok(Err(e)) => Err(match e {
                wit_tool::ToolError::InvalidArguments(m) => CallError::InvalidArguments {
                    tool: err_tool(),
                    details: m,
                },
                wit_tool::ToolError::UnknownTool(_) => CallError::UnknownTool { tool: err_tool() },
                wit_tool::ToolError::Failed(m) => CallError::ToolFailed {
                    tool: err_tool(),
                    message: m,
                },
            }),
            Err(e) => Err(self.classify_trap(tool, limits, state, e)),
        }
    }

    /// An instance that is reused across calls. **Not a sandbox per call**:
    /// state survives from one call to the next. It exists to measure what
    /// the fresh sandbox costs (see `benches/sandbox.rs`).
    #[doc(hidden)]
    pub async fn warm_instance(&self, comp: &LoadedComponent) -> anyhow::Result<WarmInstance> {
        let mut store = self.store(comp, CallContext::default(), true)?;
        let bindings = comp.pre.instantiate_async(&mut store).await?;
        Ok(WarmInstance { store, bindings })
    }

    /// Turn a wasmtime error into the limit or fault that caused it.
    fn classify_trap(
        &self,
        tool: &str,
        limits: &Limits,
        state: &CallState,
        e: wasmtime::Error,
    ) -> CallError {
        let tool = tool.to_string();
        let max = self.config.max_stdio;
        if state.stdout.contents().len() >= max {
            return CallError::StdioFlood {
                tool,
                stream: "stdout",
                limit: max,
            };
        }
        if state.stderr.contents().len() >= max {
            return CallError::StdioFlood {
                tool,
                stream: "stderr",
                limit: max,
            };
        }
        match e.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => {
                return CallError::FuelExhausted {
                    tool,
                    fuel: limits.fuel.unwrap_or(u64::MAX),
                };
            }
            Some(Trap::StackOverflow) => return CallError::StackOverflow { tool },
            _ => {}
        }
        if state.limiter.denied_memory {
            return CallError::MemoryExhausted {
                tool,
                limit: limits.memory,
            };
        }
        // A Rust guest prints its panic message to stderr before aborting.
        let stderr = String::from_utf8_lossy(&state.stderr.contents()).into_owned();
        let detail = stderr
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with("note:"))
            .take(3)
            .collect::<Vec<_>>()
            .join(" | ");
        let trap = match e.downcast_ref::<Trap>() {
            Some(t) => t.to_string(),
            None => format!("{e:#}"),
        };
        let message = if detail.is_empty() {
            trap
        } else {
            format!("{detail} ({trap})")
        };
        CallError::Trap { tool, message }
    }
}

#[doc(hidden)]
pub struct WarmInstance {
    store: Store<CallState>,
    bindings: bindings::Toolhost,
}

impl WarmInstance {
    pub async fn call(&mut self, tool: &str, arguments: &str) -> anyhow::Result<ToolOutput> {
        let r = self
            .bindings
            .toolhost_tool_tool()
            .call_call(&mut self.store, tool, arguments)
            .await?;
        let r = r.map_err(|e| anyhow::anyhow!("{e:?}"))?;
        convert_result(r).map_err(|e| anyhow::anyhow!(e))
    }
}

/// A port a pattern matches, to test it against the operator's patterns.
fn port_probe(p: &HostPattern) -> u16 {
    match p.port {
        crate::manifest::PortPattern::Exactly(n) => n,
        _ => 443,
    }
}

fn valid_tool_name(n: &str) -> bool {
    (1..=64).contains(&n.len())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
}

fn parse_schema(
    tool: &str,
    what: &str,
    s: &str,
) -> Result<Arc<serde_json::Map<String, serde_json::Value>>, (String, String)> {
    match serde_json::from_str::<serde_json::Value>(s) {
        Ok(serde_json::Value::Object(m)) => Ok(Arc::new(m)),
        Ok(_) => Err((tool.into(), format!("{what} must be a JSON object"))),
        Err(e) => Err((tool.into(), format!("{what} is not JSON: {e}"))),
    }
}

fn convert_def(d: wit_tool::ToolDef) -> Result<ToolDef, (String, String)> {
    if !valid_tool_name(&d.name) {
        return Err((
            d.name.clone(),
            "tool names must be 1-64 characters of A-Z a-z 0-9 _ - .".into(),
        ));
    }
    let input_schema = parse_schema(&d.name, "input schema", &d.input_schema)?;
    if input_schema.get("type").and_then(|t| t.as_str()) != Some("object") {
        return Err((
            d.name.clone(),
            "input schema must have \"type\": \"object\"".into(),
        ));
    }
    let output_schema = d
        .output_schema
        .as_deref()
        .map(|s| parse_schema(&d.name, "output schema", s))
        .transpose()?;
    let a = d.annotations;
    Ok(ToolDef {
        name: d.name.into(),
        title: d.title,
        description: d.description,
        input_schema,
        output_schema,
        annotations: Annotations {
            title: a.title,
            read_only: a.read_only,
            destructive: a.destructive,
            idempotent: a.idempotent,
            open_world: a.open_world,
        },
    })
}

fn wit_content_size(c: &bindings::toolhost::tool::types::Content) -> usize {
    use bindings::toolhost::tool::types as wit;
    match c {
        wit::Content::Text(t) => t.len(),
        wit::Content::Image(m) | wit::Content::Audio(m) => m.data.len() + m.mime_type.len(),
        wit::Content::Resource(r) => {
            r.uri.len()
                + r.mime_type.as_ref().map_or(0, String::len)
                + match &r.contents {
                    wit::ResourceContents::Text(t) => t.len(),
                    wit::ResourceContents::Blob(b) => b.len(),
                }
        }
    }
}

fn convert_result(r: wit_tool::CallResult) -> Result<ToolOutput, String> {
    use bindings::toolhost::tool::types as wit;
    let content = r
        .content
        .into_iter()
        .map(|c| match c {
            wit::Content::Text(t) => Content::Text(t),
            wit::Content::Image(m) => Content::Image {
                data: m.data,
                mime_type: m.mime_type,
            },
            wit::Content::Audio(m) => Content::Audio {
                data: m.data,
                mime_type: m.mime_type,
            },
            wit::Content::Resource(r) => Content::Resource {
                uri: r.uri,
                mime_type: r.mime_type,
                contents: match r.contents {
                    wit::ResourceContents::Text(t) => ResourceContents::Text(t),
                    wit::ResourceContents::Blob(b) => ResourceContents::Blob(b),
                },
            },
        })
        .collect();
    let structured = r
        .structured
        .map(|s| {
            serde_json::from_str(&s).map_err(|e| format!("structured result is not JSON: {e}"))
        })
        .transpose()?;
    Ok(ToolOutput {
        content,
        structured,
    })
}
