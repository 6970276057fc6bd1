//! Packages end to end against a real OCI registry: the Debian
//! `docker-registry` (CNCF distribution 2.8) started per test on a free
//! 127.0.0.1 port with a temporary storage directory, driven by the real
//! `toolhost` binary (`pack`, `push`, `sign`, `keygen`, `install`, `tools`,
//! `remove`); signatures also checked without our code (the registry's
//! HTTP API and `openssl`); a running `toolhost serve`
//! seen by the official Python MCP client picking up an install.
//!
//! The registry and openssl come from `scripts/install-registry.sh`
//! (`make test-deps`); without them these tests fail and say so.

use crate::support::{component, listens_on, root, sha256_hex};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_toolhost");

/// A real registry on 127.0.0.1, killed on drop.
struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    addr: String,
}

impl Registry {
    fn start() -> Registry {
        let bin = which("docker-registry").unwrap_or_else(|| {
            panic!("docker-registry is not installed: run `scripts/install-registry.sh` (or `make test-deps`)")
        });
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: {addr}\n  secret: toolhost-test\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new(bin)
            .args(["serve"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut r = Registry { child, dir, addr };
        // Ready when the registry itself listens (not whatever took the
        // port between our look and its bind).
        let deadline = Instant::now() + Duration::from_secs(15);
        while !listens_on(r.child.id(), port) {
            assert!(
                matches!(r.child.try_wait(), Ok(None)),
                "the registry exited: {} was not free",
                r.addr
            );
            assert!(
                Instant::now() < deadline,
                "the registry did not start on {}",
                r.addr
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        r
    }

    fn reference(&self, repo: &str) -> String {
        format!("{}/{repo}", self.addr)
    }

    /// Where the registry keeps blob `digest` (`sha256:…`).
    fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// Run `toolhost ARGS`; nothing inherited that could change its behaviour.
fn toolhost(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("TOOLHOST_CONFIG")
        .env_remove("TOOLHOST_STORE")
        .env_remove("COSIGN_PASSWORD")
        .env("TOOLHOST_CACHE_DIR", root().join("target/test-cache"))
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = toolhost(args);
    assert!(
        out.status.success(),
        "toolhost {args:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A scratch world: a tool directory, keys, a store, a host config.
struct World {
    tmp: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        World {
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    fn s(&self, p: &str) -> String {
        self.path(p).display().to_string()
    }

    /// An echo tool directory `name/` whose manifest has `memory` and adds `extra`.
    fn tool(&self, name: &str, memory: &str, extra: &str) -> PathBuf {
        let d = self.path(name);
        std::fs::create_dir_all(&d).unwrap();
        let wasm = d.join("echo.wasm");
        std::fs::copy(component("echo"), &wasm).unwrap();
        std::fs::write(
            d.join("echo.toml"),
            format!(
                "[component]\npath = \"echo.wasm\"\nsha256 = \"{}\"\n\n[limits]\ntimeout = \"5s\"\nmemory = \"{memory}\"\n{extra}\n",
                sha256_hex(&wasm)
            ),
        )
        .unwrap();
        d
    }

    /// `toolhost pack` the tool into NAME.oci.tar.
    fn pack(&self, name: &str, extra: &str) -> String {
        self.pack_with(name, "16 MiB", extra)
    }

    fn pack_with(&self, name: &str, memory: &str, extra: &str) -> String {
        let d = self.tool(name, memory, extra);
        let out = self.s(&format!("{name}.oci.tar"));
        ok(&["pack", d.to_str().unwrap(), "-o", &out]);
        out
    }

    /// `toolhost keygen NAME`: (private, public) paths.
    fn key(&self, name: &str) -> (String, String) {
        ok(&["keygen", &self.s(name)]);
        (
            self.s(&format!("{name}.key")),
            self.s(&format!("{name}.pub")),
        )
    }

    /// A host config trusting `keys` for `source`, plus `extra`.
    fn config(&self, name: &str, source: &str, keys: &[&str], extra: &str) -> String {
        let keys: Vec<String> = keys.iter().map(|k| format!("{k:?}")).collect();
        let p = self.path(name);
        std::fs::write(
            &p,
            format!(
                "{extra}\n[[trust]]\nsource = {source:?}\nkeys = [{}]\n",
                keys.join(", ")
            ),
        )
        .unwrap();
        p.display().to_string()
    }

    fn store(&self) -> String {
        self.s("store")
    }

    fn install(&self, source: &str, config: &str, extra: &[&str]) -> Output {
        let store = self.store();
        let mut args = vec!["install", source, "--store", &store, "--config", config];
        args.extend_from_slice(extra);
        toolhost(&args)
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_ok(o: &Output) -> String {
    assert!(o.status.success(), "failed ({}):\n{}", o.status, stderr(o));
    stderr(o)
}

/// Push NAME.oci.tar to REF; the pushed `registry/repo@digest`.
fn push(tar: &str, reference: &str) -> String {
    ok(&["push", tar, reference]).trim().to_string()
}

/// Load the store into a real host and call its echo.
async fn call_echo_from(store: &str) -> String {
    let core = crate::support::core(Path::new(store)).await;
    let out = crate::support::call(&core, "echo", serde_json::json!({"text": "from the store"}))
        .await
        .unwrap();
    out.text()
}

#[tokio::test(flavor = "multi_thread")]
async fn push_then_install_by_tag_and_by_digest_then_call_it() {
    let reg = Registry::start();
    let w = World::new();
    let tar = w.pack("echo", "");
    let (key, public) = w.key("signer");
    let r = reg.reference("tools/echo:1.0");
    let pushed = push(&tar, &r);
    let digest = pushed.rsplit_once('@').unwrap().1.to_string();
    // A tag names whatever the registry serves when it is read: signing
    // one is refused, naming the digest to sign instead.
    let out = toolhost(&["sign", &r, "--key", &key]);
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(e.contains("is a tag") && e.contains(&digest), "{e}");
    ok(&["sign", &pushed, "--key", &key]);
    let config = w.config(
        "host.toml",
        &format!("{}/tools/*", reg.addr),
        &[&public],
        "",
    );

    let out = w.install(&r, &config, &[]);
    let err = assert_ok(&out);
    assert!(err.contains("installed echo"), "{err}");
    assert!(
        err.contains("signed by") && err.contains("signer.pub"),
        "{err}"
    );
    assert!(
        err.contains("limits:") && err.contains("memory 16 MiB"),
        "{err}"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("echo {digest}")
    );
    let manifest = std::fs::read_to_string(w.path("store/echo.toml")).unwrap();
    let comp = format!("sha256/{}/component.wasm", &digest[7..]);
    assert!(manifest.contains(&comp), "{manifest}");
    assert_eq!(call_echo_from(&w.store()).await, "from the store");
    // Again: said to be there already (it said "installed" as if new).
    let again = assert_ok(&w.install(&r, &config, &[]));
    assert!(again.contains("already installed: echo"), "{again}");

    // By digest, into a second store: the same package.
    let by_digest = format!("{}/tools/echo@{digest}", reg.addr);
    let store2 = w.s("store2");
    let out = toolhost(&[
        "install", &by_digest, "--store", &store2, "--config", &config,
    ]);
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&digest));
    // A digest the registry does not have is an error, not a fallback.
    let missing = format!("{}/tools/echo@sha256:{}", reg.addr, "0".repeat(64));
    let e = stderr(&toolhost(&[
        "install", &missing, "--store", &store2, "--config", &config,
    ]));
    assert!(
        e.contains("no such package") || e.contains("manifest unknown"),
        "{e}"
    );

    let listed = ok(&["tools", "--store", &w.store()]);
    assert!(
        listed.contains("echo") && listed.contains(&digest),
        "{listed}"
    );
    assert!(
        listed.contains("signer.pub") && listed.contains("limits timeout 5s, memory 16 MiB"),
        "{listed}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_layer_in_the_registry_is_refused() {
    let reg = Registry::start();
    let w = World::new();
    let tar = w.pack("echo", "");
    let (key, public) = w.key("signer");
    let r = reg.reference("tools/echo:1.0");
    let pushed = push(&tar, &r);
    ok(&["sign", &pushed, "--key", &key]);
    let config = w.config("host.toml", "**", &[&public], "");
    let comp = format!("sha256:{}", sha256_hex(&w.path("echo/echo.wasm")));
    // Flip one byte of the component as the registry stores it: same size,
    // same advertised digest, different bytes.
    let blob = reg.blob_file(&comp);
    let mut data = std::fs::read(&blob).unwrap();
    let last = data.len() - 1;
    data[last] ^= 0xff;
    std::fs::write(&blob, data).unwrap();

    let e = stderr(&w.install(&r, &config, &[]));
    assert!(e.contains("does not match its digest"), "{e}");
    assert!(e.contains(&comp), "the error names the layer's digest: {e}");
    assert!(
        e.contains("application/vnd.wasm.content.layer.v1+wasm"),
        "{e}"
    );
    assert!(!w.path("store/echo.toml").exists(), "nothing was installed");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unsigned_package_is_refused_with_how_to_trust_it() {
    let reg = Registry::start();
    let w = World::new();
    let tar = w.pack("echo", "");
    let (_, public) = w.key("signer");
    let r = reg.reference("tools/echo:1.0");
    push(&tar, &r);
    let config = w.config("host.toml", "**", &[&public], "");
    let e = stderr(&w.install(&r, &config, &[]));
    assert!(e.contains("it is not signed"), "{e}");
    assert!(
        e.contains(&format!("source = \"{}/tools/*\"", reg.addr)),
        "{e}"
    );
    assert!(
        e.contains("[[trust]]") && e.contains("--allow-unsigned"),
        "{e}"
    );
    assert!(!w.path("store/echo.toml").exists());

    // The override works, loudly, for a remote source.
    let out = w.install(&r, &config, &["--allow-unsigned"]);
    let err = assert_ok(&out);
    assert!(
        err.contains("WARNING") && err.contains("remote source"),
        "{err}"
    );
    assert!(err.contains("UNSIGNED"), "{err}");
    let listed = ok(&["tools", "--store", &w.store()]);
    assert!(listed.contains("signer: none"), "{listed}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_package_signed_by_an_untrusted_key_is_refused() {
    let reg = Registry::start();
    let w = World::new();
    let tar = w.pack("echo", "");
    let (evil, _) = w.key("evil");
    let (_, trusted) = w.key("trusted");
    let r = reg.reference("tools/echo:1.0");
    let pushed = push(&tar, &r);
    ok(&["sign", &pushed, "--key", &evil]);
    let config = w.config(
        "host.toml",
        &format!("{}/tools/*", reg.addr),
        &[&trusted],
        "",
    );
    let e = stderr(&w.install(&r, &config, &[]));
    assert!(e.contains("signed, but by no key this host trusts"), "{e}");
    assert!(
        e.contains("none of the keys trusted for it verifies") && e.contains("trusted.pub"),
        "{e}"
    );
    assert!(!w.path("store/echo.toml").exists());

    // A trusted key for another namespace does not count either.
    let config = w.config("other.toml", "ghcr.io/acme/*", &[&trusted], "");
    ok(&["sign", &pushed, "--key", &w.key("acme").0]);
    let e = stderr(&w.install(&r, &config, &[]));
    assert!(
        e.contains("which no [[trust]] source covers") && e.contains("pass it with --config"),
        "{e}"
    );

    // A review's case: a trusted key's file any user may write (left so
    // by `umask 0`) was trusted as it read; whoever rewrote it signed for
    // the host. Now it is not read, and the install is refused.
    ok(&[
        "sign",
        &pushed,
        "--key",
        &w.path("trusted.key").display().to_string(),
    ]);
    let config = w.config(
        "trusting.toml",
        &format!("{}/tools/*", reg.addr),
        &[&trusted],
        "",
    );
    std::fs::set_permissions(
        &trusted,
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    let e = stderr(&w.install(&r, &config, &[]));
    assert!(
        e.contains("trusted.pub") && e.contains("may be written by every user (mode 666)"),
        "{e}"
    );
    std::fs::set_permissions(
        &trusted,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    assert_ok(&w.install(&r, &config, &[]));
}

/// A review's case: `keygen` checked for an existing `.pub` through links
/// and wrote it through them: a dangling link planted at the name made the
/// trust anchor a file its planter chose. A link there is refused, and the
/// public key is 0644 whatever the umask.
#[test]
fn keygen_never_writes_through_a_link_and_makes_its_public_key_0644() {
    use std::os::unix::fs::PermissionsExt;
    let w = World::new();
    std::os::unix::fs::symlink(w.path("elsewhere"), w.path("op.pub")).unwrap();
    let out = toolhost(&["keygen", &w.s("op")]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("op.pub exists; not overwriting a key"),
        "{}",
        stderr(&out)
    );
    assert!(!w.path("elsewhere").exists() && !w.path("op.key").exists());
    let (_, public) = w.key("fresh");
    let mode = std::fs::metadata(public).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
}

/// A keyless signature, attached as cosign attaches one (certificate,
/// chain and Rekor bundle annotations on the signature layer, in the real
/// registry), is verified offline by `toolhost install` against the
/// `trusted-root` of the `[[trust]]` entry: accepted for a matching issuer
/// and subject, refused for another subject, for a root of another
/// Sigstore deployment, and with a hint when only keys are trusted. The
/// deployment (CAs, log key, certificates) is made with openssl.
#[tokio::test(flavor = "multi_thread")]
async fn a_keyless_signature_is_verified_offline_against_the_trust_root() {
    use toolhost_package::keyless::testing::{ISSUER, Leaf, SUBJECT, Sigstore, T0};
    use toolhost_package::sign::{Signature, SignatureManifest, SimpleSigning};
    let reg = Registry::start();
    let w = World::new();
    let r = reg.reference("tools/echo:1.0");
    let pushed = push(&w.pack("echo", ""), &r);
    let digest = toolhost_package::Digest::parse(pushed.rsplit_once('@').unwrap().1).unwrap();

    let sigstore = Sigstore::new();
    let payload = SimpleSigning::new(&reg.reference("tools/echo"), &digest).to_bytes();
    let made = sigstore.sign(&payload, &Leaf::default(), T0 + 60);
    let sigs = SignatureManifest {
        signatures: vec![Signature {
            payload,
            signature: made.signature,
            certificate: Some(made.certificate),
            chain: Some(made.chain),
            bundle: Some(made.bundle),
        }],
    };
    let rr = toolhost_package::RegistryRef::parse(&r).unwrap();
    toolhost_package::Registry::for_ref(&rr)
        .unwrap()
        .push_signatures(&rr, &digest, &sigs)
        .await
        .unwrap();
    std::fs::write(w.path("trusted_root.json"), sigstore.trusted_root(None)).unwrap();
    std::fs::write(
        w.path("other_root.json"),
        Sigstore::new().trusted_root(None),
    )
    .unwrap();
    let config = |name: &str, subject: &str, root: &str| {
        let p = w.path(name);
        std::fs::write(
            &p,
            format!(
                "[[trust]]\nsource = \"{}/tools/*\"\nkeyless = [{{ issuer = {ISSUER:?}, subject = {subject:?} }}]\ntrusted-root = {root:?}\n",
                reg.addr
            ),
        )
        .unwrap();
        p.display().to_string()
    };

    let e = stderr(&w.install(
        &r,
        &config(
            "evil.toml",
            "https://github.com/evil/**",
            "trusted_root.json",
        ),
        &[],
    ));
    assert!(
        e.contains("none of the keyless identities trusted for it matches") && e.contains(SUBJECT),
        "{e}"
    );
    let e = stderr(&w.install(
        &r,
        &config(
            "other.toml",
            "https://github.com/acme/**",
            "other_root.json",
        ),
        &[],
    ));
    assert!(e.contains("does not verify against the trust root"), "{e}");
    let keys_only = w.config(
        "keys.toml",
        &format!("{}/tools/*", reg.addr),
        &[&w.key("signer").1],
        "",
    );
    let e = stderr(&w.install(&r, &keys_only, &[]));
    assert!(
        e.contains("trusts keyless identities") && e.contains(SUBJECT) && e.contains(ISSUER),
        "{e}"
    );
    assert!(!w.path("store/echo.toml").exists());

    let out = w.install(
        &r,
        &config(
            "good.toml",
            "https://github.com/acme/**",
            "trusted_root.json",
        ),
        &[],
    );
    let err = assert_ok(&out);
    assert!(
        err.contains("installed echo") && err.contains(&format!("keyless: {SUBJECT}")),
        "{err}"
    );
    assert_eq!(call_echo_from(&w.store()).await, "from the store");
    let listed = ok(&["tools", "--store", &w.store()]);
    assert!(
        listed.contains(SUBJECT) && listed.contains(ISSUER),
        "{listed}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_keys_trusted_during_a_rollover_both_verify() {
    let reg = Registry::start();
    let w = World::new();
    let (old_key, old_pub) = w.key("old");
    let (new_key, new_pub) = w.key("new");
    // v1 signed by the old key only, v2 by the new key only.
    let v1 = reg.reference("tools/echo:1");
    let v1_pushed = push(&w.pack("echo", ""), &v1);
    ok(&["sign", &v1_pushed, "--key", &old_key]);
    let v2 = reg.reference("tools/echo:2");
    let v2_pushed = push(&w.pack("echo2", "[env]\nset = { V = \"2\" }"), &v2);
    ok(&["sign", &v2_pushed, "--key", &new_key]);
    let source = format!("{}/tools/*", reg.addr);
    let both = w.config("both.toml", &source, &[&old_pub, &new_pub], "");
    let out = w.install(&v1, &both, &[]);
    assert!(assert_ok(&out).contains("old.pub"));
    let out = w.install(&v2, &both, &["--accept-new-grants"]);
    assert!(assert_ok(&out).contains("new.pub"));
    // After the rollover only the new key is trusted: v1 is refused.
    let new_only = w.config("new.toml", &source, &[&new_pub], "");
    let e = stderr(&w.install(&v1, &new_only, &[]));
    assert!(e.contains("signed, but by no key this host trusts"), "{e}");
    // Signing v1 again with the new key adds a second signature; both kept.
    ok(&["sign", &v1_pushed, "--key", &new_key]);
    let store3 = w.s("store3");
    let out = toolhost(&["install", &v1, "--store", &store3, "--config", &new_only]);
    assert_ok(&out);
    let old_only = w.config("old.toml", &source, &[&old_pub], "");
    let out = toolhost(&[
        "install",
        &v1,
        "--store",
        &w.s("store4"),
        "--config",
        &old_only,
    ]);
    assert_ok(&out);
}

/// Install v1, then try v2 which asks for `more`: refused naming exactly
/// `expected` (and nothing else), v1 still installed; then accepted.
fn upgrade_is_refused_until_accepted(memory: &str, more: &str, expected: &str) {
    let w = World::new();
    let (key, public) = w.key("signer");
    let config = w.config("host.toml", "example.org/tools/*", &[&public], "");
    let v1 = w.pack("v1", "");
    ok(&[
        "sign",
        &v1,
        "--key",
        &key,
        "--identity",
        "example.org/tools/echo",
    ]);
    let v2 = w.pack_with("v2", memory, more);
    ok(&[
        "sign",
        &v2,
        "--key",
        &key,
        "--identity",
        "example.org/tools/echo",
    ]);
    assert_ok(&w.install(&v1, &config, &[]));
    let before = std::fs::read_to_string(w.path("store/echo.toml")).unwrap();

    let e = stderr(&w.install(&v2, &config, &[]));
    assert!(e.contains("refusing to upgrade echo"), "{e}");
    let added: Vec<&str> = e
        .lines()
        .filter(|l| l.trim_start().starts_with("+ "))
        .collect();
    assert_eq!(added, vec![format!("  + {expected}")], "{e}");
    assert!(e.contains("--accept-new-grants"), "{e}");
    assert_eq!(
        std::fs::read_to_string(w.path("store/echo.toml")).unwrap(),
        before,
        "nothing changed"
    );

    let out = w.install(&v2, &config, &["--accept-new-grants"]);
    let err = assert_ok(&out);
    assert!(
        err.contains("upgraded echo") && err.contains(&format!("+ {expected}")),
        "{err}"
    );
    assert_ne!(
        std::fs::read_to_string(w.path("store/echo.toml")).unwrap(),
        before
    );
    // Re-installing the same version asks for nothing new.
    assert_ok(&w.install(&v2, &config, &[]));
}

/// The review's case: the signature covers the repository and the
/// manifest, not the tag or the version, so a registry (or a URL) could
/// serve a genuinely signed old release in place of a newer one, and the
/// install said "upgraded". An older version than the installed one is
/// refused unless `--allow-downgrade`; a tag naming a version must hold
/// that version (or, with fewer numbers, one of its series).
#[tokio::test(flavor = "multi_thread")]
async fn an_older_signed_version_is_refused_in_place_of_a_newer_one() {
    let reg = Registry::start();
    let w = World::new();
    let (key, public) = w.key("signer");
    let config = w.config(
        "host.toml",
        &format!("{}/tools/*", reg.addr),
        &[&public],
        "",
    );
    let packed = |name: &str, version: &str| {
        let d = w.tool(name, "16 MiB", "");
        let out = w.s(&format!("{name}.oci.tar"));
        ok(&[
            "pack",
            d.to_str().unwrap(),
            "-o",
            &out,
            "--pkg-version",
            version,
        ]);
        out
    };
    let (old, new) = (packed("old", "1.0.0"), packed("new", "2.0.0"));
    // Pushed to the registry under `tag`, and signed there.
    let publish = |tar: &str, tag: &str| {
        let r = reg.reference(tag);
        let pushed = push(tar, &r);
        ok(&["sign", &pushed, "--key", &key]);
        r
    };
    // The old release pushed where the new one should be, and signed (for
    // the repository, as every release of it is).
    let new_tag = publish(&old, "tools/echo:2.0.0");
    let e = stderr(&w.install(&new_tag, &config, &[]));
    assert!(
        e.contains("its tag names version 2.0.0, but the package is version 1.0.0"),
        "{e}"
    );
    assert!(!w.path("store/echo.toml").exists());
    // A series tag holds any version of its series.
    let series = publish(&new, "tools/echo:2.0");
    assert_ok(&w.install(&series, &config, &[]));
    let before = std::fs::read_to_string(w.path("store/echo.toml")).unwrap();
    // The old release under its own tag, over the installed 2.0.0.
    let old_tag = publish(&old, "tools/echo:1.0.0");
    let e = stderr(&w.install(&old_tag, &config, &[]));
    assert!(
        e.contains("refusing to replace echo 2.0.0 with the older 1.0.0"),
        "{e}"
    );
    assert!(e.contains("--allow-downgrade"), "{e}");
    assert_eq!(
        std::fs::read_to_string(w.path("store/echo.toml")).unwrap(),
        before
    );
    // A release with no version over a versioned one counts as older.
    let plain = w.pack("plain", "");
    let latest = publish(&plain, "tools/echo:latest");
    let e = stderr(&w.install(&latest, &config, &[]));
    assert!(e.contains("with a release with no version"), "{e}");
    let err = assert_ok(&w.install(&old_tag, &config, &["--allow-downgrade"]));
    assert!(err.contains("downgraded echo"), "{err}");
    let listed = ok(&["tools", "--store", &w.store()]);
    assert!(listed.contains("1.0.0"), "{listed}");
    // A later review's case: versions that do not parse were never
    // compared, so `r7` replaced `r8` silently. Only the same version
    // passes unasked; build numbers are ordered as numbers.
    let r8 = publish(&packed("r8", "r8"), "tools/echo:r8");
    let e = stderr(&w.install(&r8, &config, &[]));
    assert!(e.contains("with the unordered r8"), "{e}");
    assert_ok(&w.install(&r8, &config, &["--allow-downgrade"]));
    let r7 = publish(&packed("r7", "r7"), "tools/echo:r7");
    let e = stderr(&w.install(&r7, &config, &[]));
    assert!(
        e.contains("refusing to replace echo r8 with the unordered r7"),
        "{e}"
    );
    let b43 = publish(&packed("b43", "43"), "tools/echo:b43");
    assert_ok(&w.install(&b43, &config, &["--allow-downgrade"]));
    let b42 = publish(&packed("b42", "42"), "tools/echo:b42");
    let e = stderr(&w.install(&b42, &config, &[]));
    assert!(e.contains("with the older 42"), "{e}");
    let b44 = publish(&packed("b44", "44"), "tools/echo:b44");
    assert_ok(&w.install(&b44, &config, &[]));
    // A build number against a version: as a version of one number.
    let v45 = publish(&packed("v45", "45.0.1"), "tools/echo:v45");
    assert_ok(&w.install(&v45, &config, &[]));
}

/// Two publishers the host trusts, both with a package named `echo`: the
/// second's does not silently replace the first's (and inherit the grants
/// the operator reviewed for it), even asking for nothing more.
#[test]
fn another_publishers_package_of_the_same_name_is_refused_until_accepted() {
    let w = World::new();
    let (key, public) = w.key("signer");
    let config = w.config("host.toml", "example.org/*/echo", &[&public], "");
    let sign_as = |file: &str, identity: &str| {
        ok(&["sign", file, "--key", &key, "--identity", identity]);
    };
    let acme = w.pack("acme", "");
    sign_as(&acme, "example.org/acme/echo");
    // Different bytes (a lower memory limit: nothing more asked for).
    let other = w.pack_with("other", "8 MiB", "");
    sign_as(&other, "example.org/community/echo");
    assert_ok(&w.install(&acme, &config, &[]));
    let before = std::fs::read_to_string(w.path("store/echo.toml")).unwrap();
    let e = stderr(&w.install(&other, &config, &[]));
    assert!(
        e.contains("signed for `example.org/acme/echo`")
            && e.contains("for `example.org/community/echo`")
            && e.contains("--accept-new-signer"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(w.path("store/echo.toml")).unwrap(),
        before,
        "nothing changed"
    );
    assert_ok(&w.install(&other, &config, &["--accept-new-signer"]));
    assert_ne!(
        std::fs::read_to_string(w.path("store/echo.toml")).unwrap(),
        before
    );
}

#[test]
fn an_upgrade_asking_for_a_new_host_is_refused_until_accepted() {
    upgrade_is_refused_until_accepted(
        "16 MiB",
        "[network]\nallow = [\"api.example.com\"]",
        "network host api.example.com",
    );
}

#[test]
fn an_upgrade_asking_for_a_new_directory_is_refused_until_accepted() {
    let data = tempfile::tempdir().unwrap();
    let host = data.path().canonicalize().unwrap().display().to_string();
    upgrade_is_refused_until_accepted(
        "16 MiB",
        &format!("[[fs]]\nguest = \"/data\"\nhost = {host:?}\nmode = \"ro\""),
        &format!("directory /data -> {host} (ro)"),
    );
}

#[test]
fn an_upgrade_asking_for_a_client_request_is_refused_until_accepted() {
    upgrade_is_refused_until_accepted(
        "16 MiB",
        "[client]\nrequests = [\"sampling\"]",
        "client request sampling",
    );
}

/// A review's case: a package's own text reached the operator's terminal
/// raw. An env value erasing the line before it and hiding what follows
/// hid a new grant in the refusal the operator decides on. It is escaped.
#[test]
fn an_upgrade_refusal_shows_a_packages_escapes_escaped() {
    upgrade_is_refused_until_accepted(
        "16 MiB",
        "[env]\nset = { LANG = \"C\\u001b[1A\\u001b[2K\\r (nothing else new)\\u001b[8m\" }",
        "env set LANG=C\\u{1b}[1A\\u{1b}[2K\\u{d} (nothing else new)\\u{1b}[8m",
    );
}

#[test]
fn an_upgrade_raising_a_limit_is_refused_until_accepted() {
    upgrade_is_refused_until_accepted("48 MiB", "", "limits.memory 16 MiB -> 48 MiB");
}

#[test]
fn grants_the_host_refuses_are_refused_at_install_with_the_review() {
    let w = World::new();
    let (key, public) = w.key("signer");
    let config = w.config(
        "host.toml",
        "**",
        &[&public],
        "[fs]\ndeny-rw = true\n[limits]\nmemory = \"8 MiB\"\n[network]\nallow = [\"127.0.0.1:*\"]",
    );
    std::fs::create_dir_all(w.path("store")).unwrap();
    // A package that asks for the store itself (read-write) and more.
    let tar = w.pack(
        "grabby",
        &format!(
            "[[fs]]\nguest = \"/store\"\nhost = {:?}\nmode = \"rw\"\n[network]\nallow = [\"evil.example.com\", \"127.0.0.1:8080\"]",
            w.s("store")
        ),
    );
    ok(&[
        "sign",
        &tar,
        "--key",
        &key,
        "--identity",
        "example.org/grabby",
    ]);
    let e = stderr(&w.install(&tar, &config, &[]));
    assert!(e.contains("this host refuses 1 of its grants"), "{e}");
    assert!(
        e.contains("REFUSED: grant at `/store`: `rw` grant of")
            && e.contains("this host allows read-only grants only"),
        "{e}"
    );
    assert!(
        e.contains("evil.example.com")
            && e.contains("narrowed: outside this host's network allow-list"),
        "{e}"
    );
    assert!(
        e.contains("memory 16 MiB") && e.contains("capped to 8 MiB"),
        "{e}"
    );
    assert!(!w.path("store/echo.toml").exists());

    // With rw allowed, the store directory is still never granted.
    let config = w.config("rw.toml", "**", &[&public], "");
    let e = stderr(&w.install(&tar, &config, &[]));
    assert!(
        e.contains("contains the host's protected path") && e.contains("this host refuses 1"),
        "{e}"
    );
}

#[test]
fn local_files_and_loopback_urls_install_when_signed() {
    let w = World::new();
    let (key, public) = w.key("signer");
    let config = w.config("host.toml", "example.org/tools/*", &[&public], "");
    let tar = w.pack("echo", "");
    // Unsigned local file: refused, then allowed quietly.
    let e = stderr(&w.install(&tar, &config, &[]));
    assert!(
        e.contains("it is not signed") && e.contains("--identity"),
        "{e}"
    );
    let err = assert_ok(&w.install(&tar, &config, &["--allow-unsigned"]));
    assert!(
        err.contains("unverified") && !err.contains("WARNING"),
        "{err}"
    );
    ok(&["remove", "echo", "--store", &w.store()]);
    assert!(!w.path("store/echo.toml").exists());

    ok(&[
        "sign",
        &tar,
        "--key",
        &key,
        "--identity",
        "example.org/tools/echo",
    ]);
    assert_ok(&w.install(&tar, &config, &[]));

    // The same file over http from 127.0.0.1 (the explicit loopback
    // exception to https-only).
    let body = std::fs::read(&tar).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/echo.oci.tar", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut req = [0u8; 4096];
        let _ = s.read(&mut req);
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = s.write_all(&body);
    });
    let store2 = w.s("store2");
    let out = toolhost(&["install", &url, "--store", &store2, "--config", &config]);
    assert_ok(&out);
    server.join().unwrap();
    let e = stderr(&toolhost(&[
        "install",
        "http://example.com/x.tar",
        "--store",
        &store2,
    ]));
    assert!(e.contains("refusing plain http"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn remove_unloads_and_tools_lists_what_is_left() {
    let w = World::new();
    let (key, public) = w.key("signer");
    let config = w.config("host.toml", "example.org/**", &[&public], "");
    let a = w.pack("echo", "");
    ok(&["sign", &a, "--key", &key, "--identity", "example.org/echo"]);
    assert_ok(&w.install(&a, &config, &[]));
    assert_eq!(call_echo_from(&w.store()).await, "from the store");
    ok(&["remove", "echo", "--store", &w.store()]);
    let listed = toolhost(&["tools", "--store", &w.store()]);
    assert!(stderr(&listed).contains("nothing installed"));
    let e = stderr(&toolhost(&["remove", "echo", "--store", &w.store()]));
    assert!(e.contains("`echo` is not installed"), "{e}");
    let leftover: Vec<_> = std::fs::read_dir(w.path("store/sha256")).unwrap().collect();
    assert!(
        leftover.is_empty(),
        "the package's files are gone: {leftover:?}"
    );
}

/// `GET http://ADDR/PATH` (the registry's distribution API, loopback): the
/// body. Written by hand so nothing of ours or of oci-client reads it.
fn registry_get(addr: &str, path: &str, accept: &str) -> Vec<u8> {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: {accept}\r\n\r\n"
    )
    .unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let split = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&resp[..split]).into_owned();
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "GET {path}: {head}"
    );
    resp[split + 4..].to_vec()
}

/// Our signatures are cosign's key-based format, checked without our code:
/// the registry's distribution API (plain HTTP) serves the `sha256-<hex>.sig`
/// tag, shaped as cosign writes it (a simple-signing layer with the
/// signature annotation), whose payload names the pushed repository and
/// digest; `openssl dgst -verify` accepts the signature with our public
/// key and refuses it with another key or a changed payload.
/// (Debian's skopeo, which would check the same with its `sigstoreSigned`
/// policy, is built with sigstore support disabled.)
#[test]
fn openssl_verifies_our_cosign_signatures_fetched_from_the_registry() {
    let openssl = which("openssl").unwrap_or_else(|| {
        panic!("openssl is not installed: run `scripts/install-registry.sh` (or `make test-deps`)")
    });
    let reg = Registry::start();
    let w = World::new();
    let (key, public) = w.key("signer");
    let (_, other) = w.key("other");
    let r = reg.reference("tools/echo:1.0");
    let pushed = push(&w.pack("echo", ""), &r);
    let digest = pushed.rsplit_once('@').unwrap().1.to_string();
    ok(&["sign", &pushed, "--key", &key]);

    let sig_tag = format!("sha256-{}.sig", &digest[7..]);
    let raw = registry_get(
        &reg.addr,
        &format!("/v2/tools/echo/manifests/{sig_tag}"),
        "application/vnd.oci.image.manifest.v1+json",
    );
    let m: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    let layer = &m["layers"][0];
    assert_eq!(
        layer["mediaType"],
        "application/vnd.dev.cosign.simplesigning.v1+json"
    );
    let sig_b64 = layer["annotations"]["dev.cosignproject.cosign/signature"]
        .as_str()
        .unwrap()
        .to_string();
    let payload = registry_get(
        &reg.addr,
        &format!("/v2/tools/echo/blobs/{}", layer["digest"].as_str().unwrap()),
        "*/*",
    );
    let p: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(
        p["critical"]["identity"]["docker-reference"],
        reg.reference("tools/echo")
    );
    assert_eq!(p["critical"]["image"]["docker-manifest-digest"], digest);
    assert_eq!(p["critical"]["type"], "cosign container image signature");

    // base64 -> DER with openssl too.
    std::fs::write(w.path("sig.b64"), format!("{sig_b64}\n")).unwrap();
    let st = Command::new(&openssl)
        .args(["base64", "-d", "-A", "-in"])
        .arg(w.path("sig.b64"))
        .arg("-out")
        .arg(w.path("sig.der"))
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::write(w.path("payload.json"), &payload).unwrap();
    let mut bad_payload = payload.clone();
    let last = bad_payload.len() - 2;
    bad_payload[last] ^= 1;
    std::fs::write(w.path("changed.json"), &bad_payload).unwrap();
    let verify = |pubkey: &str, data: &str| {
        Command::new(&openssl)
            .args(["dgst", "-sha256", "-verify", pubkey, "-signature"])
            .arg(w.path("sig.der"))
            .arg(w.path(data))
            .output()
            .unwrap()
    };
    let good = verify(&public, "payload.json");
    assert!(
        good.status.success() && String::from_utf8_lossy(&good.stdout).contains("Verified OK"),
        "openssl refused our signature: {}",
        stderr(&good)
    );
    assert!(
        !verify(&other, "payload.json").status.success(),
        "another key verified"
    );
    assert!(
        !verify(&public, "changed.json").status.success(),
        "a changed payload verified"
    );
}

/// The official Python MCP client, connected to `toolhost serve --tools
/// STORE` over stdio, sees a tool installed while it runs.
#[test]
fn a_running_serve_picks_up_an_install() {
    let deps = std::env::var_os("TOOLHOST_TEST_DEPS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".test-deps"));
    let python = deps.join("venv/bin/python");
    assert!(
        python.is_file(),
        "the Python MCP SDK is not installed in {}: run `scripts/install-test-deps.sh`",
        deps.display()
    );
    let w = World::new();
    let (key, public) = w.key("signer");
    let config = w.config("host.toml", "example.org/**", &[&public], "");
    let tar = w.pack("echo", "");
    ok(&[
        "sign",
        &tar,
        "--key",
        &key,
        "--identity",
        "example.org/echo",
    ]);
    std::fs::create_dir_all(w.path("store")).unwrap();
    let mut child = Command::new(&python)
        .arg(root().join("tests/clients/mcp_client.py"))
        .args([
            "list_changed",
            "--mode",
            "legacy",
            "--",
            BIN,
            "serve",
            "--tools",
        ])
        .arg(w.path("store"))
        .env("TOOLHOST_TEST_DEPS", &deps)
        .env("TOOLHOST_CACHE_DIR", root().join("target/test-cache"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = lines.next().and_then(Result::ok).unwrap_or_default();
    if !ready.starts_with("READY") {
        let _ = child.kill();
        let mut e = String::new();
        let _ = child.stderr.take().unwrap().read_to_string(&mut e);
        panic!("client not ready: {ready}\n{e}");
    }
    assert!(!ready.contains("echo"), "{ready}");
    assert_ok(&w.install(&tar, &config, &[]));
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut tools = None;
    for l in lines.map_while(Result::ok) {
        if l.starts_with("TOOLS") {
            tools = Some(l);
            break;
        }
        assert!(Instant::now() < deadline);
    }
    let _ = child.kill();
    let _ = child.wait();
    let tools = tools.expect("no tool list after the install");
    assert!(tools.contains("\"echo\""), "{tools}");
}
