//! The manifest's TOML shapes, as serde reads them: every key a manifest may
//! have, with spans for diagnostics. No checks beyond types live here: what
//! the values mean is decided by `normalize` and the capability units.

use crate::caps::limits::SizeText;
use serde::Deserialize;
use std::collections::BTreeMap;

pub(crate) use toml::Spanned;

/// Keys allowed in each table, for "unknown key" hints.
pub(crate) const TOP_KEYS: &str = "[component], [limits], [[fs]], [env], [network], [client]";
pub(crate) const COMPONENT_KEYS: &str = "path, sha256";
pub(crate) const LIMITS_KEYS: &str = "timeout, memory, fuel, max-output, max-concurrency";
pub(crate) const FS_KEYS: &str = "guest, host, mode, quota";
pub(crate) const ENV_KEYS: &str = "set, pass";
pub(crate) const NETWORK_KEYS: &str = "allow";
pub(crate) const CLIENT_KEYS: &str = "requests";

/// `[component]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Component {
    pub(crate) path: Spanned<String>,
    pub(crate) sha256: Spanned<String>,
}

/// `[limits]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct Limits {
    pub(crate) timeout: Option<Spanned<String>>,
    pub(crate) memory: Option<Spanned<SizeText>>,
    pub(crate) fuel: Option<Spanned<u64>>,
    pub(crate) max_output: Option<Spanned<SizeText>>,
    pub(crate) max_concurrency: Option<Spanned<u32>>,
}

/// One `[[fs]]` entry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Fs {
    pub(crate) guest: Spanned<String>,
    pub(crate) host: Spanned<String>,
    pub(crate) mode: Spanned<String>,
    pub(crate) quota: Option<Spanned<SizeText>>,
}

/// `[env]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct Env {
    #[serde(default)]
    pub(crate) set: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    pub(crate) pass: Vec<Spanned<String>>,
}

/// `[network]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct Network {
    #[serde(default)]
    pub(crate) allow: Vec<Spanned<String>>,
}

/// `[client]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct Client {
    #[serde(default)]
    pub(crate) requests: Vec<Spanned<String>>,
}
