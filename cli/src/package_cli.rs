//! `toolhost pack | push | sign | keygen | install | tools | remove`:
//! packages, registries, signatures and the local store. Argument handling
//! and printing only: everything is `toolhost_package`.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use toolhost_package::sign::SignatureManifest;
use toolhost_package::store::summarize;
use toolhost_package::{
    InstallOptions, Layout, PackOptions, Registry, RegistryRef, SigningKey, Source, Store,
    TrustPolicy,
};

#[derive(Subcommand)]
pub enum PackageCommand {
    /// Build a package (OCI artifact) from a tool directory: its manifest,
    /// component, and optional README.md and icon.png/icon.svg.
    Pack {
        /// A tool directory (one *.toml manifest) or a manifest.
        dir: PathBuf,
        /// Output: a .tar file, or a directory (an OCI image layout).
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Package name (default: the manifest's file name).
        #[arg(long)]
        name: Option<String>,
        /// Package version (also the layout's tag).
        #[arg(long = "pkg-version", value_name = "VERSION")]
        version: Option<String>,
    },
    /// Push a package (a packed layout, with its signatures, or a tool
    /// directory packed on the fly) to a registry.
    Push {
        /// A .tar or layout directory from `toolhost pack`, or a tool directory.
        package: PathBuf,
        /// REGISTRY/REPOSITORY[:TAG], e.g. ghcr.io/acme/echo:1.0.
        reference: String,
    },
    /// Sign a package: in a registry (pushes the cosign `sha256-<hex>.sig`
    /// tag) or in a packed layout (added to the file).
    Sign {
        /// A registry reference by digest (REPOSITORY@sha256:…, as `push`
        /// prints it), or a .tar/layout directory.
        target: String,
        /// Private key: PKCS#8 PEM, or cosign's encrypted key with
        /// COSIGN_PASSWORD set.
        #[arg(long)]
        key: PathBuf,
        /// For a file: the REGISTRY/REPOSITORY the signature names (the
        /// identity `[[trust]] source` patterns are matched against).
        #[arg(long)]
        identity: Option<String>,
    },
    /// Generate an ECDSA P-256 signing key: PREFIX.key (private, mode 0600)
    /// and PREFIX.pub (the public key to list in `[[trust]] keys`).
    Keygen {
        /// Path prefix of the two files.
        #[arg(default_value = "toolhost")]
        prefix: PathBuf,
        /// Write the private key in cosign's encrypted format, with the
        /// password in COSIGN_PASSWORD (usable by `cosign sign --key`).
        #[arg(long)]
        encrypt: bool,
    },
    /// Install a package into the store: from a file, an https:// URL, or a
    /// registry (by tag or @sha256: digest). Verifies every digest, the
    /// signature against the host config's [[trust]] policy, and reviews the
    /// grants the package asks for against the host config.
    Install {
        source: String,
        #[command(flatten)]
        store: StoreOpts,
        /// Host config (TOML): the caps grants are reviewed against, and [[trust]].
        #[arg(long, env = "TOOLHOST_CONFIG")]
        config: Option<PathBuf>,
        /// Install even if no trusted signature verifies it (a loud warning
        /// for remote sources).
        #[arg(long)]
        allow_unsigned: bool,
        /// Apply an upgrade that asks for grants the installed version
        /// does not have.
        #[arg(long)]
        accept_new_grants: bool,
        /// Replace an installed package signed for one repository with one
        /// signed for another (or not signed).
        #[arg(long)]
        accept_new_signer: bool,
        /// Replace an installed package with an older version of it.
        #[arg(long)]
        allow_downgrade: bool,
    },
    /// List installed packages with their grants and signer.
    Tools {
        #[command(flatten)]
        store: StoreOpts,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Uninstall a package.
    Remove {
        name: String,
        #[command(flatten)]
        store: StoreOpts,
    },
}

#[derive(Args, Clone)]
pub struct StoreOpts {
    /// The package store (a tools directory: serve it with --tools).
    /// Default $TOOLHOST_STORE, else $XDG_DATA_HOME/toolhost/store.
    #[arg(long)]
    store: Option<PathBuf>,
}

impl StoreOpts {
    fn open(&self) -> Result<Store> {
        let root = match &self.store {
            Some(p) => p.clone(),
            None => Store::default_root()
                .context("no store: pass --store DIR (or set TOOLHOST_STORE or HOME)")?,
        };
        Ok(Store::open(&root)?)
    }
}

fn password() -> Option<Vec<u8>> {
    std::env::var_os("COSIGN_PASSWORD").map(|p| p.into_encoded_bytes())
}

/// Whether `p` is a packed layout (a file, or a directory with an
/// `index.json`) rather than a tool directory. A directory holding both a
/// layout and a manifest is neither: it was pushed as the layout, and the
/// manifest the operator reviewed was not what went out (found by review).
fn is_layout(p: &Path) -> Result<bool> {
    if p.is_file() {
        return Ok(true);
    }
    if !p.join("index.json").is_file() {
        return Ok(false);
    }
    let manifests = std::fs::read_dir(p)
        .with_context(|| p.display().to_string())?
        .filter_map(|e| e.ok())
        .any(|e| e.path().extension().is_some_and(|x| x == "toml"));
    if manifests {
        anyhow::bail!(
            "{} holds both a packed layout (index.json) and a tool manifest (*.toml): push one or the other from a directory of its own",
            crate::cli::shown(&p.display().to_string())
        );
    }
    Ok(true)
}

pub async fn run(cmd: PackageCommand) -> Result<ExitCode> {
    match cmd {
        PackageCommand::Pack {
            dir,
            output,
            name,
            version,
        } => pack(&dir, output, name, version),
        PackageCommand::Push { package, reference } => push(&package, &reference).await,
        PackageCommand::Sign {
            target,
            key,
            identity,
        } => sign(target, &key, identity).await,
        PackageCommand::Keygen { prefix, encrypt } => keygen(&prefix, encrypt),
        PackageCommand::Install {
            source,
            store,
            config,
            allow_unsigned,
            accept_new_grants,
            accept_new_signer,
            allow_downgrade,
        } => {
            let opts = InstallOptions {
                allow_unsigned,
                accept_new_grants,
                accept_new_signer,
                allow_downgrade,
            };
            install(&source, &store, &config, &opts).await
        }
        PackageCommand::Tools { store, json } => list_tools(&store, json),
        PackageCommand::Remove { name, store } => remove(&name, &store),
    }
}

/// `pack`: a tool directory into a .tar or layout directory.
fn pack(
    dir: &Path,
    output: Option<PathBuf>,
    name: Option<String>,
    version: Option<String>,
) -> Result<ExitCode> {
    let pkg = toolhost_package::pack(dir, &PackOptions { name, version })?;
    eprintln!("packed {}", layers(&pkg));
    let out = output.unwrap_or_else(|| PathBuf::from(format!("{}.oci.tar", pkg.config.name)));
    Layout::with_package(&pkg).write(&out)?;
    println!("{} {}", pkg.digest, out.display());
    eprintln!(
        "packed {} ({} layers, component {} bytes) into {}",
        pkg.config.name,
        pkg.manifest.layers.len(),
        pkg.component().len(),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// What `pkg` holds, file by file: what a pack put in, for the packer to
/// see before it goes out (a README.md nobody meant to publish, say).
fn layers(pkg: &toolhost_package::Package) -> String {
    pkg.manifest
        .layers
        .iter()
        .map(|l| {
            let title = l
                .annotations
                .as_ref()
                .and_then(|a| a.get(toolhost_package::oci::TITLE_ANNOTATION))
                .map_or("(untitled)", String::as_str);
            format!("{} ({} bytes)", crate::cli::shown(title), l.size)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `push`: a packed layout with the signatures naming the target repository,
/// or a tool directory packed on the fly.
async fn push(package: &Path, reference: &str) -> Result<ExitCode> {
    let r = RegistryRef::parse(reference)?;
    let (pkg, sigs) = if is_layout(package)? {
        let layout = Layout::read(package)?;
        let what = package.display().to_string();
        let f = toolhost_package::source::from_layout(
            &layout,
            &what,
            toolhost_package::Origin::File(what.clone()),
        )?;
        (f.package, f.signatures)
    } else {
        let pkg = toolhost_package::pack(package, &PackOptions::default())?;
        eprintln!("packed {}", layers(&pkg));
        (pkg, SignatureManifest::default())
    };
    let reg = Registry::for_ref(&r)?;
    let digest = reg.push_package(&r, &pkg).await?;
    let repo = r.repository();
    let mut keep = SignatureManifest::default();
    for s in sigs.signatures {
        match toolhost_package::sign::SimpleSigning::parse(&s.payload) {
            Ok(p) if p.critical.identity.docker_reference == repo => keep.signatures.push(s),
            // What a third party's signature names, escaped.
            Ok(p) => eprintln!(
                "warning: not pushing a signature naming {} (this push goes to {repo}); sign the pushed package with `toolhost sign {repo}@{digest} --key KEY`",
                crate::cli::shown(&p.critical.identity.docker_reference)
            ),
            Err(e) => eprintln!(
                "warning: not pushing an unreadable signature: {}",
                crate::cli::shown(&e.to_string())
            ),
        }
    }
    if !keep.signatures.is_empty() {
        reg.push_signatures(&r, &digest, &keep).await?;
        eprintln!("pushed {} signature(s)", keep.signatures.len());
    }
    println!("{repo}@{digest}");
    Ok(ExitCode::SUCCESS)
}

/// `sign`: a packed layout on disk, or a package in a registry.
async fn sign(target: String, key: &Path, identity: Option<String>) -> Result<ExitCode> {
    let key = SigningKey::load(key, password().as_deref())?;
    let path = Path::new(&target);
    if path.exists() {
        sign_layout(path, &target, &key, identity)?;
    } else {
        sign_in_registry(&target, &key, identity).await?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Sign the package in the layout at `path`, the signature added to the file.
fn sign_layout(
    path: &Path,
    target: &str,
    key: &SigningKey,
    identity: Option<String>,
) -> Result<()> {
    let identity = identity.context(
        "signing a file needs --identity REGISTRY/REPOSITORY: the name the signature vouches for",
    )?;
    RegistryRef::parse(&identity)?;
    let mut layout = Layout::read(path)?;
    let (digest, _) = layout.package_entry(target)?;
    let mut sigs = toolhost_package::source::signatures_in_layout(&layout, &digest, target)?;
    sigs.add(key.sign(&identity, &digest)?, key.public());
    let (raw, blobs) = sigs.to_oci();
    for (d, b) in blobs {
        layout.blobs.insert(d, b);
    }
    layout.add_manifest(raw, None, &digest.signature_tag());
    layout.write(path)?;
    eprintln!(
        "signed {target} ({}) as {identity} with {} ({}); {} signature(s)",
        digest.short(),
        key.public().origin,
        key.public().fingerprint(),
        sigs.signatures.len()
    );
    Ok(())
}

/// Sign a package in a registry: its signatures pulled, added to and pushed back.
async fn sign_in_registry(target: &str, key: &SigningKey, identity: Option<String>) -> Result<()> {
    let r = RegistryRef::parse(target)?;
    if let Some(i) = &identity
        && *i != r.repository()
    {
        bail!(
            "--identity {i} differs from the repository {}: a registry signature names its own repository",
            r.repository()
        );
    }
    let reg = Registry::for_ref(&r)?;
    let pkg = reg.pull_package(&r).await?;
    // A tag names whatever the registry serves when it is read: anyone who
    // can push there could move it between `push` and `sign`, and have this
    // key vouch for their package (found by review). Only a digest names
    // what was pushed.
    if r.digest().is_none() {
        bail!(
            "{target} is a tag, which names whatever the registry serves when it is read (now {}); sign the digest you pushed: `toolhost sign {}@<digest> --key KEY` (`toolhost push` prints it)",
            pkg.digest,
            r.repository()
        );
    }
    let mut sigs = reg.pull_signatures(&r, &pkg.digest).await?;
    sigs.add(key.sign(&r.repository(), &pkg.digest)?, key.public());
    reg.push_signatures(&r, &pkg.digest, &sigs).await?;
    eprintln!(
        "signed {}@{} with {} ({}); {} signature(s)",
        r.repository(),
        pkg.digest,
        key.public().origin,
        key.public().fingerprint(),
        sigs.signatures.len()
    );
    Ok(())
}

/// Write `bytes` to a file made new at `path` (never through a link left
/// there), of `mode` whatever the umask: a key others may read is not
/// private, and a trust anchor others may write trusts them (found by
/// review: a `.pub` made under `umask 0` was 0666).
fn write_new(path: &Path, mode: u32, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| path.display().to_string())?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    f.write_all(bytes)?;
    Ok(())
}

/// `keygen`: PREFIX.key (mode 0600, optionally encrypted) and PREFIX.pub.
fn keygen(prefix: &Path, encrypt: bool) -> Result<ExitCode> {
    let key = SigningKey::generate()?;
    let private = PathBuf::from(format!("{}.key", prefix.display()));
    let public = PathBuf::from(format!("{}.pub", prefix.display()));
    for p in [&private, &public] {
        // `symlink_metadata`: a dangling link is there too (`exists`
        // follows it, and the key was written through it).
        if std::fs::symlink_metadata(p).is_ok() {
            bail!("{} exists; not overwriting a key", p.display());
        }
    }
    let pem = if encrypt {
        let pw = password().context("--encrypt needs the password in COSIGN_PASSWORD")?;
        key.to_encrypted_pem(&pw)?
    } else {
        key.to_pem()?
    };
    write_new(&private, 0o600, pem.as_bytes())?;
    write_new(&public, 0o644, key.public().to_pem().as_bytes())?;
    println!("{}", key.public().fingerprint());
    eprintln!(
        "wrote {} (private, keep it secret) and {} (trust it with [[trust]] keys = [\"{}\"])",
        private.display(),
        public.display(),
        public.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `install`: fetch, verify and review a package into the store, printing
/// the review and what was installed (a refusal is exit code 1).
async fn install(
    source: &str,
    store: &StoreOpts,
    config: &Option<PathBuf>,
    opts: &InstallOptions,
) -> Result<ExitCode> {
    let store = store.open()?;
    let host = crate::cli::host_config(config)?;
    let trust = TrustPolicy::load(&host.trust)?;
    let src = Source::parse(source)?;
    let installed = match store.install(&src, &host, &trust, opts).await {
        Ok(i) => i,
        Err(e) => {
            // The package's own text (versions, grants) is escaped.
            eprintln!("error: {}", crate::cli::shown(&e.to_string()));
            return Ok(ExitCode::from(1));
        }
    };
    for w in &installed.warnings {
        eprintln!("{}", crate::cli::shown(w));
    }
    eprint!("{}", crate::cli::shown(&installed.review.to_string()));
    if !installed.new_grants.is_empty() {
        eprintln!("accepted new grants (--accept-new-grants):");
        for g in &installed.new_grants {
            eprintln!("  + {}", crate::cli::shown(g));
        }
    }
    let signer = match &installed.entry.signer {
        Some(s) => format!("signed by {} ({}) as {}", s.key, s.fingerprint, s.identity),
        None => "UNSIGNED".to_string(),
    };
    let (what, was) = match &installed.replaced {
        Some(old) if installed.downgrade => ("downgraded", format!(" (was {})", &old[..19])),
        Some(old) => ("upgraded", format!(" (was {})", &old[..19])),
        None if installed.reinstalled => ("already installed:", String::new()),
        None => ("installed", String::new()),
    };
    eprintln!(
        "{}",
        crate::cli::shown(&format!(
            "{what} {} {}{was} into {}; {signer}",
            installed.name,
            installed.entry.digest,
            store.root().display()
        ))
    );
    println!("{} {}", installed.name, installed.entry.digest);
    Ok(ExitCode::SUCCESS)
}

/// `tools`: the installed packages with their grants and signer, as text or JSON.
fn list_tools(store: &StoreOpts, json: bool) -> Result<ExitCode> {
    let store = store.open()?;
    let list = store.list()?;
    if json {
        let v: Vec<serde_json::Value> = list
            .iter()
            .map(|l| {
                serde_json::json!({
                    "name": l.name,
                    "digest": l.entry.digest,
                    "version": l.entry.version,
                    "source": l.entry.source,
                    "signer": l.entry.signer,
                    "grants": l.grants.as_ref().map(summarize).unwrap_or_default(),
                })
            })
            .collect();
        println!(
            "{}",
            crate::cli::json_safe(&serde_json::to_string_pretty(&v)?)
        );
    } else if list.is_empty() {
        eprintln!("nothing installed in {}", store.root().display());
    } else {
        use std::fmt::Write as _;
        let mut out = String::new();
        for l in &list {
            let _ = writeln!(
                out,
                "{} {} {}",
                l.name,
                l.entry.version.as_deref().unwrap_or("-"),
                l.entry.digest
            );
            let _ = writeln!(out, "  source: {}", l.entry.source);
            let _ = match &l.entry.signer {
                Some(s) => writeln!(
                    out,
                    "  signer: {} ({}) as {}",
                    s.key, s.fingerprint, s.identity
                ),
                None => writeln!(out, "  signer: none (installed with --allow-unsigned)"),
            };
            match &l.grants {
                Ok(g) => {
                    for line in summarize(g) {
                        let _ = writeln!(out, "  {line}");
                    }
                }
                Err(e) => {
                    let _ = writeln!(out, "  grants: unreadable: {e}");
                }
            }
        }
        // Versions, sources and grants are the packages' to choose.
        print!("{}", crate::cli::shown(&out));
    }
    Ok(ExitCode::SUCCESS)
}

/// `remove`: uninstall a package.
fn remove(name: &str, store: &StoreOpts) -> Result<ExitCode> {
    let store = store.open()?;
    let e = store.remove(name)?;
    eprintln!(
        "removed {name} ({}) from {}",
        e.digest,
        store.root().display()
    );
    Ok(ExitCode::SUCCESS)
}
