//! Target `manifest`: `Manifest::parse`, the reader of every tool's TOML.

use crate::support::{Scratch, budget, check_diagnostics, text_corpus};
use toolhost::Manifest;
use toolhost_fuzz::{Script, TOML_VALUES, TomlPalette, mutate_toml};

const KEYS: &[&str] = &[
    "component",
    "limits",
    "fs",
    "env",
    "network",
    "client",
    "path",
    "sha256",
    "timeout",
    "memory",
    "fuel",
    "max-output",
    "max-concurrency",
    "guest",
    "host",
    "mode",
    "quota",
    "set",
    "pass",
    "allow",
    "requests",
    "bogus",
    "\"\"",
    "a.b.c",
    "limits.memory",
];

const LINES: &[&str] = &[
    "[component]",
    "[limits]",
    "[[fs]]",
    "[env]",
    "[env.set]",
    "[network]",
    "[client]",
    "[fs]",
    "[[limits]]",
    "[[component]]",
    "[component.path]",
    "[bogus]",
    "path = \"tool.wasm\"",
    "path = \"../../../../etc/passwd\"",
    "path = \"/\"",
    "sha256 = \"sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855\"",
    "sha256 = \"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85\"",
    "guest = \"/data\"",
    "guest = \"/\"",
    "host = \"data\"",
    "host = \"/\"",
    "mode = \"rw\"",
    "mode = \"ro\"",
    "quota = \"1 MiB\"",
    "quota = \"0 B\"",
    "pass = [\"HOME\", \"TOOLHOST_BEARER_TOKEN\"]",
    "set = { A = \"1\", B = \"\" }",
    "allow = [\"127.0.0.1:*\", \"*\", \"169.254.169.254\", \"10.0.0.0/8:80\"]",
    "requests = [\"sampling\", \"elicitation\", \"roots\", \"telepathy\"]",
    "fuel = 1",
    "memory = \"16 MiB\"",
    "max-concurrency = 0",
    "timeout = \"1ns\"",
];

const PALETTE: TomlPalette<'static> = TomlPalette {
    keys: KEYS,
    values: TOML_VALUES,
    lines: LINES,
};

#[test]
fn manifest() {
    let scratch = Scratch::new();
    let path = scratch.path().join("tool.toml");
    let seeds = text_corpus("manifest");
    bolero::check!(name = "manifest")
        .with_test_time(budget(2000))
        .for_each(|input: &[u8]| {
            // The bytes as a file...
            let text = String::from_utf8_lossy(input);
            check_diagnostics(&text, Manifest::parse(&path, &text), false);
            // ...and as edits to a valid manifest.
            let mut script = Script::new(input);
            let seed = script.pick(seeds.as_slice()).expect("seeds");
            let text = mutate_toml(seed, &mut script, &PALETTE);
            check_diagnostics(&text, Manifest::parse(&path, &text), true);
        });
}
