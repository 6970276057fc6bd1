//! The operator's host configuration: engine sizing and the caps that narrow
//! every manifest. A tool can never widen what this allows.
//!
//! Owns no runtime state; `sandbox` reads the engine settings and `catalog`
//! applies the caps when it loads a tool.

use crate::manifest::{HostPattern, Limits, parse_duration, parse_size};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// Host-wide settings. Defaults suit a laptop or a small server.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Where compiled components are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// Sandboxes that may exist at once (the pooling allocator's size).
    pub max_instances: u32,
    /// Upper bound on any tool's limits.
    pub caps: Limits,
    /// If set, no tool may reach a host outside these patterns, whatever its
    /// manifest says.
    pub network_allow: Option<Vec<HostPattern>>,
    /// Whether manifests may grant read-write directories at all.
    pub allow_rw_fs: bool,
    /// Granularity of wall-clock deadlines and cancellation.
    pub epoch_tick: Duration,
    /// Maximum wasm stack per call.
    pub max_wasm_stack: usize,
    /// Captured stdout/stderr per call (each), for diagnostics.
    pub max_stdio: usize,
    /// Bytes at the start of each linear-memory slot that are reset in place
    /// (memset, or only the dirty pages where the kernel supports pagemap
    /// scans) rather than unmapped between calls. A fresh sandbox per call
    /// lives or dies by this: see BENCHMARKS.md for the trade-off.
    pub memory_keep_resident: usize,
    /// Reset only the pages a call dirtied (Linux `PAGEMAP_SCAN`, 6.7+),
    /// where the kernel supports it; otherwise the resident part is memset.
    pub pagemap_scan: bool,
    /// Allow/deny rules (`[[rule]]` in the config file), see `policy`.
    pub rules: Vec<crate::policy::Rule>,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            cache_dir: default_cache_dir(),
            max_instances: 128,
            caps: Limits {
                timeout: Duration::from_secs(300),
                memory: 1 << 30,
                fuel: None,
                max_output: 64 << 20,
                max_concurrency: 128,
            },
            network_allow: None,
            allow_rw_fs: true,
            epoch_tick: Duration::from_millis(1),
            max_wasm_stack: 512 << 10,
            max_stdio: 64 << 10,
            memory_keep_resident: 1 << 20,
            pagemap_scan: true,
            rules: Vec::new(),
        }
    }
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

impl HostConfig {
    /// Narrow a manifest's limits to this host's caps.
    pub fn cap(&self, l: &Limits) -> Limits {
        Limits {
            timeout: l.timeout.min(self.caps.timeout),
            memory: l.memory.min(self.caps.memory),
            fuel: match (l.fuel, self.caps.fuel) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            max_output: l.max_output.min(self.caps.max_output),
            max_concurrency: l.max_concurrency.min(self.caps.max_concurrency),
        }
    }

    /// Read a host config file (TOML), starting from the defaults.
    pub fn load(path: &std::path::Path) -> anyhow::Result<Self> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields, rename_all = "kebab-case")]
        struct Raw {
            cache_dir: Option<PathBuf>,
            max_instances: Option<u32>,
            max_timeout: Option<String>,
            max_memory: Option<String>,
            max_fuel: Option<u64>,
            max_output: Option<String>,
            max_concurrency: Option<u32>,
            network_allow: Option<Vec<String>>,
            allow_rw_fs: Option<bool>,
            #[serde(default)]
            rule: Vec<crate::policy::Rule>,
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let raw: Raw =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let mut c = HostConfig::default();
        let bad = |e: String| anyhow::anyhow!("{}: {e}", path.display());
        if let Some(d) = raw.cache_dir {
            c.cache_dir = Some(d);
        }
        if let Some(n) = raw.max_instances {
            c.max_instances = n.max(1);
        }
        if let Some(t) = raw.max_timeout {
            c.caps.timeout = parse_duration(&t).map_err(bad)?;
        }
        if let Some(m) = raw.max_memory {
            c.caps.memory = parse_size(&m).map_err(bad)?;
        }
        c.caps.fuel = raw.max_fuel.or(c.caps.fuel);
        if let Some(o) = raw.max_output {
            c.caps.max_output = parse_size(&o).map_err(bad)?;
        }
        if let Some(n) = raw.max_concurrency {
            c.caps.max_concurrency = n.max(1);
        }
        if let Some(list) = raw.network_allow {
            c.network_allow = Some(
                list.iter()
                    .map(|s| HostPattern::parse(s))
                    .collect::<Result<_, _>>()
                    .map_err(bad)?,
            );
        }
        if let Some(b) = raw.allow_rw_fs {
            c.allow_rw_fs = b;
        }
        c.rules = raw.rule;
        Ok(c)
    }
}
