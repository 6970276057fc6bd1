//! Target `host_config`: `HostConfig::parse`, the reader of
//! `toolhost.toml` (`[engine]` … `[[tenant]]`, `[auth]`, `[[trust]]`).

use crate::support::{Scratch, budget, check_diagnostics, text_corpus};
use toolhost::HostConfig;
use toolhost_fuzz::{Script, TOML_VALUES, TomlPalette, mutate_toml};

const KEYS: &[&str] = &[
    "engine",
    "limits",
    "fs",
    "env",
    "network",
    "client",
    "output",
    "audit",
    "rule",
    "trust",
    "tenant",
    "agent",
    "auth",
    "cache-dir",
    "max-instances",
    "epoch-tick",
    "max-wasm-stack",
    "memory-keep-resident",
    "pagemap-scan",
    "prewarm",
    "prewarm-memory",
    "timeout",
    "memory",
    "fuel",
    "max-output",
    "max-concurrency",
    "handles",
    "pool-share",
    "roots",
    "deny-rw",
    "default-quota",
    "max-quota",
    "max-open",
    "pass",
    "allow",
    "requests",
    "max-tokens",
    "max-requests",
    "max-stdio",
    "event-budget",
    "event-overhead",
    "path",
    "fsync",
    "fsync-interval",
    "max-size",
    "keep",
    "queue",
    "raw-arguments",
    "redact",
    "effect",
    "tool",
    "scope",
    "arg",
    "contains",
    "pattern",
    "reason",
    "source",
    "keys",
    "keyless",
    "name",
    "tools",
    "token-sha256",
    "max-concurrent",
    "calls-per-minute",
    "output-bytes-per-minute",
    "fuel-per-minute",
    "resource",
    "authorization-servers",
    "jwt",
    "issuer",
    "audience",
    "jwks-file",
    "tenant-claim",
    "leeway",
    "bogus",
];

const LINES: &[&str] = &[
    "[engine]",
    "[limits]",
    "[fs]",
    "[env]",
    "[network]",
    "[client]",
    "[output]",
    "[audit]",
    "[[rule]]",
    "[[trust]]",
    "[[tenant]]",
    "[[agent]]",
    "[agent.limits]",
    "[tenant.limits]",
    "[tenant.fs]",
    "[tenant.network]",
    "[tenant.env]",
    "[auth]",
    "[auth.jwt]",
    "[[auth]]",
    "[[engine]]",
    "[rule]",
    "[tenant]",
    "[bogus]",
    "name = \"alpha\"",
    "name = \"\"",
    "name = \"default\"",
    "tools = [\"echo\", \"tools/alpha/\", \"../..\"]",
    "token-sha256 = [\"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"]",
    "token-sha256 = [\"zz\"]",
    "roots = [\"data\", \"/\"]",
    "deny-rw = [\"/\"]",
    "allow = [\"api.example.com\", \"*\", \"127.0.0.1:*\"]",
    "pass = [\"TOOLHOST_BEARER_TOKEN\"]",
    "keys = [\"keys/acme.pub\", \"keys/missing.pub\", \"/\"]",
    "keyless = [{ issuer = \"https://i\", subject = \"*\" }]",
    "source = \"ghcr.io/**\"",
    "jwks-file = \"auth/jwks.json\"",
    "jwks-file = \"auth\"",
    "jwks-file = \"missing.json\"",
    "effect = \"deny\"",
    "effect = \"allow\"",
    "pattern = \"(a+)+$\"",
    "pattern = \"[\"",
    "max-instances = 1",
    "prewarm = 64",
    "pool-share = 0.0",
    "pool-share = 1.5",
    "leeway = \"1000000000000000s\"",
];

const PALETTE: TomlPalette<'static> = TomlPalette {
    keys: KEYS,
    values: TOML_VALUES,
    lines: LINES,
};

#[test]
fn host_config() {
    let scratch = Scratch::new();
    let path = scratch.path().join("toolhost.toml");
    let seeds = text_corpus("host_config");
    bolero::check!(name = "host_config")
        .with_test_time(budget(2000))
        .for_each(|input: &[u8]| {
            let text = String::from_utf8_lossy(input);
            check_diagnostics(&text, HostConfig::parse(&path, &text), false);
            let mut script = Script::new(input);
            let seed = script.pick(seeds.as_slice()).expect("seeds");
            let text = mutate_toml(seed, &mut script, &PALETTE);
            check_diagnostics(&text, HostConfig::parse(&path, &text), true);
        });
}
