//! The per-call store data: WASI and wasi:http contexts built from the
//! tool's grants, the memory limiter, the outbound-host gate and the channel
//! back to the caller. One `CallState` lives exactly as long as one call.

use super::bindings::toolhost::tool::host as wit_host;
use crate::manifest::HostPattern;
use crate::model::{CallEvent, ClientRequests, EventSink, LogLevel};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

pub struct CallState {
    pub wasi: WasiCtx,
    pub http: WasiHttpCtx,
    pub table: ResourceTable,
    pub net: NetGate,
    pub limiter: Limiter,
    pub events: Option<EventSink>,
    /// Bytes of log/progress text this call may still emit; past it, events
    /// are dropped (a guest cannot flood the caller or the host's memory).
    pub event_budget: usize,
    pub cancel: CancellationToken,
    pub stdout: MemoryOutputPipe,
    pub stderr: MemoryOutputPipe,
    /// The caller's client, for the requests the manifest grants.
    pub client: Option<Arc<dyn ClientRequests>>,
    pub client_grants: Arc<[String]>,
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for CallState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.net,
        }
    }
}

/// Lets outbound HTTP through only to the hosts the manifest grants (as
/// narrowed by the host config). Everything else is `HTTP request denied`
/// before any connection or DNS lookup is made.
pub struct NetGate {
    pub allow: Arc<[HostPattern]>,
}

impl NetGate {
    pub fn permits(&self, uri: &http::Uri) -> bool {
        let Some(host) = uri.host() else { return false };
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme() == Some(&http::uri::Scheme::HTTPS) {
                443
            } else {
                80
            });
        self.allow.iter().any(|p| p.matches(host, port))
    }
}

impl WasiHttpHooks for NetGate {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<
        dyn Future<
                Output = wasmtime_wasi_http::Result<(
                    http::Response<wasmtime_wasi_http::WasiBody>,
                    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
                )>,
            > + Send,
    > {
        if !self.permits(request.uri()) {
            tracing::debug!(uri = %request.uri(), "outbound request denied: host not granted");
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        Box::new(async move {
            use http_body_util::BodyExt;
            let (res, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                res.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

/// Caps linear memory and tables, and remembers that it said no so a trap
/// can be reported as "memory limit" rather than a bare crash.
pub struct Limiter {
    pub memory: usize,
    pub denied_memory: bool,
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = desired <= self.memory;
        if !ok {
            self.denied_memory = true;
        }
        Ok(ok)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

impl CallState {
    fn emit(&mut self, size: usize, event: CallEvent) {
        if let Some(tx) = &self.events
            && size <= self.event_budget
        {
            self.event_budget -= size;
            let _ = tx.send(event);
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
        self.emit(message.len(), CallEvent::Log { level, message });
    }

    fn progress(&mut self, progress: f64, total: Option<f64>, message: Option<String>) {
        let size = 16 + message.as_ref().map_or(0, String::len);
        self.emit(
            size,
            CallEvent::Progress {
                progress,
                total,
                message,
            },
        );
    }

    fn cancelled(&mut self) -> bool {
        self.cancel.is_cancelled()
    }

    fn request_client(
        &mut self,
        method: String,
        params: String,
    ) -> impl Future<Output = Result<String, String>> + Send {
        let granted = self.client_grants.contains(&method);
        let client = self.client.clone();
        async move {
            if !granted {
                return Err(format!(
                    "`{method}` is not granted to this tool (its manifest needs `[client] requests`)"
                ));
            }
            let client = client.ok_or_else(|| {
                format!("`{method}` is not available: this call did not come from a client that can answer it")
            })?;
            let params: serde_json::Value = serde_json::from_str(&params)
                .map_err(|e| format!("params of `{method}` are not JSON: {e}"))?;
            client.request(method, params).await.map(|v| v.to_string())
        }
    }
}

impl super::bindings::toolhost::tool::types::Host for CallState {}
