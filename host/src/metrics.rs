//! Prometheus metrics of the call path: calls by tool, scope and outcome,
//! errors by kind, latency and pool-queue-wait histograms, calls in flight,
//! quota rejections, and the audit log's own counters. Served (with
//! `feature = "http"`) on a listener of its own by [`MetricsServer`], with
//! `/healthz` and `/readyz`.
//!
//! Label values are bounded: a tool label is a tool of the catalog (the
//! core maps any other name to `_other`), and each label keeps at most
//! [`MAX_LABEL_VALUES`] distinct values, after which new ones become
//! `_other` too. A caller can never grow the registry by inventing names.
//!
//! Metrics record what happened; they decide nothing. The listener that
//! serves them refuses only a `Host` naming it by a name it was not given
//! (see `MetricsServer`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Most distinct values one label keeps; later ones are reported as
/// `_other`.
pub const MAX_LABEL_VALUES: usize = 1000;

/// The label value that stands for every name not worth a series of its own.
pub const OTHER: &str = "_other";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    tool: Label,
    scope: Label,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolLabels {
    tool: Label,
    scope: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScopeLabels {
    scope: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QuotaLabels {
    scope: Label,
    quota: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 100 µs to ~52 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 20))
}

/// A label value, shared: each call's labels are reference counts, not
/// copies of the names (a `String` per label and call was measurable on
/// the call path).
type Label = Arc<str>;

/// Distinct values seen for one label, capped.
struct Bounded {
    seen: Mutex<HashSet<Label>>,
    other: Label,
}

impl Default for Bounded {
    fn default() -> Self {
        Bounded {
            seen: Mutex::default(),
            other: Arc::from(OTHER),
        }
    }
}

impl Bounded {
    fn value(&self, v: &str) -> Label {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(known) = seen.get(v) {
            return known.clone();
        }
        if seen.len() >= MAX_LABEL_VALUES {
            return self.other.clone();
        }
        let v: Label = Arc::from(v);
        seen.insert(v.clone());
        v
    }
}

struct Inner {
    registry: Mutex<Registry>,
    calls: Family<CallLabels, Counter>,
    errors: Family<KindLabels, Counter>,
    duration: HistogramFamily<ToolLabels>,
    queue_wait: HistogramFamily<ScopeLabels>,
    in_flight: Family<ScopeLabels, Gauge>,
    quota: Family<QuotaLabels, Counter>,
    loads: Counter,
    load_errors: Gauge,
    tools: Bounded,
    scopes: Bounded,
    ready: AtomicBool,
    audit_attached: AtomicBool,
    memory_attached: AtomicBool,
    memory: Arc<MemoryCollector>,
}

/// The host's metrics registry. A cheap-clone handle: give the same one to
/// [`CoreBuilder::metrics`](crate::CoreBuilder::metrics) and to a
/// [`MetricsServer`].
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A registry with every metric of the call path, none observed yet.
    pub fn new() -> Metrics {
        let mut r = Registry::default();
        let calls = Family::<CallLabels, Counter>::default();
        r.register(
            "toolhost_calls",
            "Tool calls by tool, scope and outcome (ok or the error kind)",
            calls.clone(),
        );
        let errors = Family::<KindLabels, Counter>::default();
        r.register(
            "toolhost_call_errors",
            "Failed tool calls by error kind",
            errors.clone(),
        );
        let duration: HistogramFamily<ToolLabels> = Family::new_with_constructor(latency_histogram);
        r.register(
            "toolhost_call_duration_seconds",
            "Tool call latency, queueing included",
            duration.clone(),
        );
        let queue_wait: HistogramFamily<ScopeLabels> =
            Family::new_with_constructor(latency_histogram);
        r.register(
            "toolhost_queue_wait_seconds",
            "Time calls waited for room in the sandbox pool",
            queue_wait.clone(),
        );
        let in_flight = Family::<ScopeLabels, Gauge>::default();
        r.register(
            "toolhost_calls_in_flight",
            "Tool calls running or queued now",
            in_flight.clone(),
        );
        let quota = Family::<QuotaLabels, Counter>::default();
        r.register(
            "toolhost_quota_rejections",
            "Calls refused because a quota was used up",
            quota.clone(),
        );
        // A reload that leaves tools out says so on stderr; an operator's
        // alert needs it as a number (found by the user review).
        let loads = Counter::default();
        r.register(
            "toolhost_loads",
            "Catalog loads: the first, and each reload applied",
            loads.clone(),
        );
        let load_errors = Gauge::default();
        r.register(
            "toolhost_load_errors",
            "Manifests or sources that failed to load in the catalog served now",
            load_errors.clone(),
        );
        Metrics {
            inner: Arc::new(Inner {
                registry: Mutex::new(r),
                calls,
                errors,
                duration,
                queue_wait,
                in_flight,
                quota,
                loads,
                load_errors,
                tools: Bounded::default(),
                scopes: Bounded::default(),
                ready: AtomicBool::new(false),
                audit_attached: AtomicBool::new(false),
                memory_attached: AtomicBool::new(false),
                memory: Default::default(),
            }),
        }
    }

    /// Register the audit log's counters (once per registry).
    pub(crate) fn attach_audit(&self, audit: &crate::audit::Audit) {
        let Some(c) = audit.counters() else { return };
        if self.inner.audit_attached.swap(true, Ordering::SeqCst) {
            return;
        }
        let mut r = self
            .inner
            .registry
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        r.register("toolhost_audit_records", "Audit records written", c.records);
        r.register(
            "toolhost_audit_queue_full",
            "Times a call waited because the audit queue was full",
            c.queue_full,
        );
        r.register(
            "toolhost_audit_dropped",
            "Audit records dropped (only records that cannot wait)",
            c.dropped,
        );
        r.register(
            "toolhost_audit_write_errors",
            "Failed writes, syncs or rotations of the audit log",
            c.write_errors,
        );
    }

    /// Report the memory a core's sandboxes hold against its `[engine]
    /// max-memory`. Several cores sharing a registry are summed; a core
    /// dropped drops out of the sums.
    pub(crate) fn attach_memory(&self, memory: &Arc<crate::caps::limits::SharedMemory>) {
        let mut cores = self
            .inner
            .memory
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        cores.retain(|m| m.strong_count() > 0);
        cores.push(Arc::downgrade(memory));
        drop(cores);
        if !self.inner.memory_attached.swap(true, Ordering::SeqCst) {
            self.inner
                .registry
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .register_collector(Box::new(self.inner.memory.clone()));
        }
    }

    fn scope(&self, scope: &str) -> Label {
        self.inner.scopes.value(scope)
    }

    /// A call of `tool` in `scope` started (`tool` must be a catalog name or
    /// [`OTHER`]); returns what ends it.
    pub(crate) fn started(&self, scope: &str) -> InFlight {
        let labels = ScopeLabels {
            scope: self.scope(scope),
        };
        let gauge = self.inner.in_flight.get_or_create(&labels).clone();
        gauge.inc();
        InFlight { gauge }
    }

    /// A call ended: `outcome` is `ok` or its error kind.
    pub(crate) fn finished(
        &self,
        scope: &str,
        tool: &str,
        outcome: &'static str,
        duration: Duration,
    ) {
        let tool = self.inner.tools.value(tool);
        let scope = self.scope(scope);
        self.inner
            .calls
            .get_or_create(&CallLabels {
                tool: tool.clone(),
                scope: scope.clone(),
                outcome,
            })
            .inc();
        if outcome != "ok" {
            self.inner
                .errors
                .get_or_create(&KindLabels { kind: outcome })
                .inc();
        }
        self.inner
            .duration
            .get_or_create(&ToolLabels { tool, scope })
            .observe(duration.as_secs_f64());
    }

    /// The series a call of `tool` (a catalog name) in `scope` ends in,
    /// looked up once: the catalog keeps it with the tool
    /// ([`Metrics::finished_in`]), so that a call's end hashes no labels
    /// and takes no lock but the histogram's (the lookups were a tenth of
    /// a short call's time before its output, BENCHMARKS.md "Prepared
    /// after the reply").
    pub(crate) fn series(&self, scope: &str, tool: &str) -> Series {
        let labels = CallLabels {
            tool: self.inner.tools.value(tool),
            scope: self.scope(scope),
            outcome: "ok",
        };
        let of_scope = ScopeLabels {
            scope: labels.scope.clone(),
        };
        Series {
            ok: self.inner.calls.get_or_create(&labels).clone(),
            duration: self
                .inner
                .duration
                .get_or_create(&ToolLabels {
                    tool: labels.tool.clone(),
                    scope: labels.scope.clone(),
                })
                .clone(),
            in_flight: self.inner.in_flight.get_or_create(&of_scope).clone(),
            queue_wait: self.inner.queue_wait.get_or_create(&of_scope).clone(),
            labels,
        }
    }

    /// A call of `series`' tool started (what [`Metrics::started`] records,
    /// from its scope's gauge looked up before); returns what ends it.
    pub(crate) fn started_in(&self, series: &Series) -> InFlight {
        series.in_flight.inc();
        InFlight {
            gauge: series.in_flight.clone(),
        }
    }

    /// A call of `series`' tool waited `wait` for room in the sandbox pool
    /// (what [`Metrics::queued`] records, from a handle looked up before).
    pub(crate) fn queued_in(&self, series: &Series, wait: Duration) {
        series.queue_wait.observe(wait.as_secs_f64());
    }

    /// A call ended in `series` (what [`Metrics::finished`] records, from
    /// handles looked up before).
    pub(crate) fn finished_in(&self, series: &Series, outcome: &'static str, duration: Duration) {
        if outcome == "ok" {
            series.ok.inc();
        } else {
            self.inner
                .calls
                .get_or_create(&CallLabels {
                    outcome,
                    ..series.labels.clone()
                })
                .inc();
            self.inner
                .errors
                .get_or_create(&KindLabels { kind: outcome })
                .inc();
        }
        series.duration.observe(duration.as_secs_f64());
    }

    /// A call waited `wait` for room in the sandbox pool.
    pub(crate) fn queued(&self, scope: &str, wait: Duration) {
        self.inner
            .queue_wait
            .get_or_create(&ScopeLabels {
                scope: self.scope(scope),
            })
            .observe(wait.as_secs_f64());
    }

    /// A call of `scope` was refused by its quota `quota` (a fixed name,
    /// like `calls-per-minute`).
    pub fn quota_rejected(&self, scope: &str, quota: &'static str) {
        self.inner
            .quota
            .get_or_create(&QuotaLabels {
                scope: self.scope(scope),
                quota,
            })
            .inc();
    }

    /// A catalog was loaded (or reloaded) with `errors` that failed.
    pub(crate) fn loaded(&self, errors: usize) {
        self.inner.loads.inc();
        self.inner
            .load_errors
            .set(i64::try_from(errors).unwrap_or(i64::MAX));
    }

    /// Mark the host ready (its catalog is loaded) or not: `/readyz`.
    pub fn set_ready(&self, ready: bool) {
        self.inner.ready.store(ready, Ordering::SeqCst);
    }

    /// Whether the host is ready (see [`Metrics::set_ready`]).
    pub fn ready(&self) -> bool {
        self.inner.ready.load(Ordering::SeqCst)
    }

    /// Every metric in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let r = self
            .inner
            .registry
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        out
    }
}

/// One tool's series in one scope (see [`Metrics::series`]): handles on
/// the registry's own counters, not copies.
pub(crate) struct Series {
    ok: Counter,
    duration: Histogram,
    /// Its scope's calls in flight and queue wait: one scope's series,
    /// shared by its tools.
    in_flight: Gauge,
    queue_wait: Histogram,
    labels: CallLabels,
}

impl std::fmt::Debug for Series {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Series")
            .field("labels", &self.labels)
            .finish()
    }
}

/// A call in flight: the gauge goes down when this is dropped, however the
/// call ends (even if its future is dropped). It holds the registry's own
/// gauge, so the end looks nothing up.
pub(crate) struct InFlight {
    gauge: Gauge,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// The memory bound of each core using the registry, summed into two
/// gauges at each scrape.
#[derive(Debug, Default)]
struct MemoryCollector(Mutex<Vec<std::sync::Weak<crate::caps::limits::SharedMemory>>>);

impl prometheus_client::collector::Collector for MemoryCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::gauge::ConstGauge;
        let (mut held, mut limit, mut residue) = (0i64, 0i64, 0i64);
        for m in self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(std::sync::Weak::upgrade)
        {
            held = held.saturating_add(m.used() as i64);
            limit = limit.saturating_add(m.limit() as i64);
            residue = residue.saturating_add(i64::try_from(m.residue()).unwrap_or(i64::MAX));
        }
        for (name, help, value) in [
            (
                "toolhost_memory_held_bytes",
                "Memory sandboxes hold now (calls, describe, sandboxes prepared ahead; linear and host-side), against toolhost_memory_limit_bytes",
                held,
            ),
            (
                "toolhost_memory_limit_bytes",
                "[engine] max-memory: the memory all sandboxes together may hold",
                limit,
            ),
            (
                "toolhost_memory_residue_max_bytes",
                "The most the sandbox pool keeps resident between calls beside toolhost_memory_limit_bytes (memory-keep-resident per memory slot, table pages, and whole fiber stacks)",
                residue,
            ),
        ] {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_rejections_are_counted_and_labels_are_capped() {
        let m = Metrics::new();
        m.quota_rejected("a", "calls-per-minute");
        m.quota_rejected("a", "calls-per-minute");
        for i in 0..MAX_LABEL_VALUES + 50 {
            m.finished("s", &format!("t{i}"), "ok", Duration::from_millis(1));
        }
        let text = m.encode();
        assert!(
            text.contains(
                r#"toolhost_quota_rejections_total{scope="a",quota="calls-per-minute"} 2"#
            ),
            "{text}"
        );
        let series = text
            .lines()
            .filter(|l| l.starts_with("toolhost_calls_total{"))
            .count();
        assert_eq!(series, MAX_LABEL_VALUES + 1, "the cap, plus `_other`");
        assert!(
            text.contains(r#"toolhost_calls_total{tool="_other",scope="s",outcome="ok"} 50"#),
            "the rest share `_other`"
        );
    }

    #[test]
    fn a_series_looked_up_once_counts_in_the_same_series_as_a_lookup_per_call() {
        let m = Metrics::new();
        let s = m.series("t", "echo");
        m.finished_in(&s, "ok", Duration::from_millis(1));
        m.finished_in(&s, "timeout", Duration::from_millis(2));
        m.finished("t", "echo", "ok", Duration::from_millis(3));
        // The scope's gauge and queue wait, through the tool's series and
        // by a lookup, are one series too.
        let (a, b) = (m.started_in(&s), m.started("t"));
        m.queued_in(&s, Duration::from_millis(1));
        m.queued("t", Duration::from_millis(1));
        let text = m.encode();
        for line in [
            r#"toolhost_calls_total{tool="echo",scope="t",outcome="ok"} 2"#,
            r#"toolhost_calls_total{tool="echo",scope="t",outcome="timeout"} 1"#,
            r#"toolhost_call_errors_total{kind="timeout"} 1"#,
            r#"toolhost_call_duration_seconds_count{tool="echo",scope="t"} 3"#,
            r#"toolhost_calls_in_flight{scope="t"} 2"#,
            r#"toolhost_queue_wait_seconds_count{scope="t"} 2"#,
        ] {
            assert!(text.contains(line), "{line}\n{text}");
        }
        drop(a);
        assert!(
            m.encode()
                .contains(r#"toolhost_calls_in_flight{scope="t"} 1"#)
        );
        drop(b);
        assert!(
            m.encode()
                .contains(r#"toolhost_calls_in_flight{scope="t"} 0"#)
        );
    }

    #[test]
    fn cores_sharing_a_registry_report_their_memory_together_while_they_live() {
        use crate::caps::limits::{MemoryBudget, SharedMemory};
        let m = Metrics::new();
        let (a, b) = (SharedMemory::new(64 << 20), SharedMemory::new(32 << 20));
        m.attach_memory(&a);
        m.attach_memory(&b);
        let held = MemoryBudget::new(8 << 20, Some(a.clone()));
        assert!(held.charge(3 << 20));
        let text = m.encode();
        assert!(
            text.contains(&format!("toolhost_memory_held_bytes {}", 3 << 20)),
            "{text}"
        );
        assert!(
            text.contains(&format!("toolhost_memory_limit_bytes {}", 96 << 20)),
            "{text}"
        );
        drop((held, a));
        let text = m.encode();
        assert!(text.contains("toolhost_memory_held_bytes 0\n"), "{text}");
        assert!(
            text.contains(&format!("toolhost_memory_limit_bytes {}", 32 << 20)),
            "{text}"
        );
    }
}

#[cfg(feature = "http")]
pub use serve::MetricsServer;

#[cfg(feature = "http")]
mod serve {
    use super::Metrics;
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    use std::net::SocketAddr;

    /// Connections the metrics listener serves at once; past it, new ones
    /// wait in the kernel's backlog.
    const METRICS_CONNECTIONS: usize = 64;
    /// Of which one client address may hold.
    const METRICS_CONNECTIONS_PER_ADDRESS: usize = 8;

    /// The metrics listener: `/metrics` (OpenMetrics text), `/healthz`
    /// (200 while the process serves) and `/readyz` (200 once the catalog
    /// is loaded, see [`Metrics::set_ready`]; 503 before). Kept apart from
    /// the MCP listener so that it can stay on loopback or an internal
    /// network; it serves nothing but these three paths.
    ///
    /// A request whose `Host` names this server by a name (not an IP
    /// address) is refused (403) unless the name is `localhost` or one
    /// [`MetricsServer::allow_hosts`] names: found by review, a web page
    /// the operator visited could rebind its own name to 127.0.0.1 and
    /// read every tenant's and tool's name from `/metrics`. Scrapers and
    /// probes reach it by address.
    pub struct MetricsServer {
        listener: tokio::net::TcpListener,
        /// Keeps this address out of every tool's reach while it lives.
        _own: crate::caps::net::OwnListener,
        metrics: Metrics,
        /// Host names (beyond `localhost`) requests may name.
        hosts: Vec<String>,
    }

    /// Whether a request's `Host` may reach the metrics listener: an IP
    /// address, `localhost`, or a name in `hosts` (a port is ignored).
    fn host_allowed(host: Option<&str>, hosts: &[String]) -> bool {
        let Some(host) = host else { return true };
        let Some(name) = crate::mcp::accept::host_name(host) else {
            return false;
        };
        name.parse::<std::net::IpAddr>().is_ok()
            || name.eq_ignore_ascii_case("localhost")
            || hosts.iter().any(|h| {
                let h = h.rsplit_once(':').map_or(h.as_str(), |(n, _)| n);
                h.eq_ignore_ascii_case(&name)
            })
    }

    impl MetricsServer {
        /// Bind `addr` for `metrics`.
        pub async fn bind(addr: SocketAddr, metrics: Metrics) -> std::io::Result<MetricsServer> {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            Ok(MetricsServer {
                _own: crate::caps::net::OwnListener::register(listener.local_addr()?),
                listener,
                metrics,
                hosts: Vec::new(),
            })
        }

        /// Host names requests may name besides `localhost` (addresses
        /// always pass): the names a scraper uses for this server.
        pub fn allow_hosts(mut self, hosts: Vec<String>) -> MetricsServer {
            self.hosts = hosts;
            self
        }

        /// The address bound (useful with port 0).
        pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
            self.listener.local_addr()
        }

        /// Serve until `shutdown` completes.
        pub async fn serve(
            self,
            shutdown: impl Future<Output = ()> + Send + 'static,
        ) -> std::io::Result<()> {
            let m = self.metrics.clone();
            let r = self.metrics.clone();
            let hosts = std::sync::Arc::new(self.hosts);
            let app = axum::Router::new()
                .route(
                    "/metrics",
                    axum::routing::get(move || {
                        let m = m.clone();
                        async move {
                            (
                                [(
                                    header::CONTENT_TYPE,
                                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                )],
                                m.encode(),
                            )
                        }
                    }),
                )
                .route("/healthz", axum::routing::get(|| async { "ok\n" }))
                .route(
                    "/readyz",
                    axum::routing::get(move || {
                        let r = r.clone();
                        async move {
                            if r.ready() {
                                (StatusCode::OK, "ready\n").into_response()
                            } else {
                                (StatusCode::SERVICE_UNAVAILABLE, "loading\n").into_response()
                            }
                        }
                    }),
                )
                .layer(axum::middleware::from_fn(
                    move |req: axum::extract::Request, next: axum::middleware::Next| {
                        let allowed = host_allowed(
                            req.headers()
                                .get(header::HOST)
                                .and_then(|h| h.to_str().ok()),
                            &hosts,
                        );
                        async move {
                            if allowed {
                                next.run(req).await
                            } else {
                                (StatusCode::FORBIDDEN, "Host not allowed\n").into_response()
                            }
                        }
                    },
                ));
            // Bounded as the MCP listener is (M7): a client that opened
            // thousands of connections and never finished their headers
            // held a descriptor each, until the process had none left for
            // `/mcp`, `/healthz` or its own files (found by review). A
            // scraper needs few.
            crate::mcp::accept::serve(
                self.listener,
                app,
                crate::mcp::accept::Bounds {
                    max_connections: crate::mcp::accept::connection_cap(METRICS_CONNECTIONS),
                    claims: false,
                    // Else one client keeping 64 connections alive holds
                    // every slot, and the kubelet's probes (this port)
                    // fail (review); the kubelet and Prometheus each come
                    // from their own address.
                    per_address: METRICS_CONNECTIONS_PER_ADDRESS,
                    header_read_timeout: std::time::Duration::from_secs(10),
                    grace: std::time::Duration::from_secs(1),
                },
                shutdown,
            )
            .await;
            Ok(())
        }
    }

    #[cfg(test)]
    mod tests {
        /// Addresses and `localhost` pass with or without a port, and
        /// names the operator allowed (`--allow-host`, with or without a
        /// port); any other name, as a page rebinding its own is, does
        /// not, nor a value that is no authority.
        #[test]
        fn only_addresses_and_allowed_names_reach_the_metrics() {
            let allowed = ["metrics.internal:9090".to_string()];
            for host in [
                "127.0.0.1:9",
                "[::1]:9",
                "10.0.0.5",
                "LOCALHOST:1",
                "metrics.internal",
            ] {
                assert!(super::host_allowed(Some(host), &allowed), "{host}");
            }
            for host in [
                "evil.example",
                "evil.example:9090",
                "metrics.internal.evil",
                "a b",
            ] {
                assert!(!super::host_allowed(Some(host), &allowed), "{host}");
            }
        }
    }
}
