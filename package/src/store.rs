//! The local store of installed packages, itself a tools directory the host
//! loads like any other (`toolhost serve --tools <store>`):
//!
//! ```text
//! <store>/
//!   <name>.toml                 the installed manifest of package <name>, its
//!                               [component] rewritten to the stored layer
//!   index.json                  name -> digest, source, signer, version
//!   sha256/<manifest-hex>/      one directory per installed package digest:
//!     manifest.json config.json tool.toml component.wasm [README.md] [icon.*]
//!   .staging/  .lock            in-progress installs; the store's lock
//! ```
//!
//! Installing is atomic for a running host: the package is written and
//! validated in `.staging/`, renamed into `sha256/<hex>/`, and only then is
//! `<name>.toml` renamed into place, so a watcher sees either the old tool
//! or the new one, never half of one. One install or removal at a time
//! (an exclusive lock on `.lock`).
//!
//! This module owns the store's layout and the order of an install: trust
//! (`trust`), grants review (`grants`), upgrade comparison, then the files.

use crate::error::{Error, Result};
use crate::grants::{Grants, check_portable, new_grants, review};
use crate::oci::{Digest, Package, Role};
use crate::source::{Fetched, Source, fetch};
use crate::trust::{Signer, TrustPolicy};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use toolhost::HostConfig;

/// In each package directory: the package's manifest with `[component]`
/// pointing at `component.wasm` beside it, what the host's parser reads.
const CHECK_MANIFEST: &str = "check.toml";

/// A store rooted at a directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// What the index records about an installed package.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The package (OCI manifest) digest.
    pub digest: String,
    /// The package version, if any.
    #[serde(default)]
    pub version: Option<String>,
    /// Where it was installed from, as typed.
    pub source: String,
    /// The component layer's digest.
    pub component: String,
    /// Who signed it; `None` if installed with `--allow-unsigned`.
    pub signer: Option<Signer>,
    /// Seconds since the epoch.
    pub installed_at: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    version: u32,
    packages: BTreeMap<String, Entry>,
}

/// How to install.
#[derive(Debug, Clone, Default)]
pub struct InstallOptions {
    /// Install even if no trusted signature verifies (loudly, for remote
    /// sources).
    pub allow_unsigned: bool,
    /// Apply an upgrade that asks for more grants than the installed version.
    pub accept_new_grants: bool,
    /// Replace an installed package signed for one identity (repository)
    /// with one signed for another, or not signed.
    pub accept_new_signer: bool,
    /// Replace an installed package with an older version of it.
    pub allow_downgrade: bool,
}

/// A version's numbers and whether it is a pre-release (`v1.10.2-rc1`
/// is 1, 10, 2, and one), if it reads as a version: a `v` and a number, or
/// numbers with a dot (a tag of digits alone, `:42`, is a build number).
fn version_key(v: &str) -> Option<(Vec<u64>, bool)> {
    let core = v.strip_prefix('v');
    let named = core.is_some() || v.contains('.');
    let core = core.unwrap_or(v);
    let (numbers, pre) = match core.split_once('-') {
        Some((n, _)) => (n, true),
        None => (core, false),
    };
    let numbers = numbers.split('+').next()?;
    let numbers: Option<Vec<u64>> = numbers.split('.').map(|n| n.parse().ok()).collect();
    numbers.filter(|_| named).map(|n| (n, pre))
}

/// How a release's version orders against another's: as [`version_key`],
/// and a build number (`43`, not a version to a tag) as a version of one
/// number (`2` before `2.0.1`).
fn release_key(v: &str) -> Option<(Vec<u64>, bool)> {
    version_key(v).or_else(|| v.parse::<u64>().ok().map(|n| (vec![n], false)))
}

/// `a` before `b`, zeros added to the shorter (`1.0` is `1.0.0`), a
/// pre-release before its release.
fn older(a: &(Vec<u64>, bool), b: &(Vec<u64>, bool)) -> bool {
    let len = a.0.len().max(b.0.len());
    let pad = |v: &Vec<u64>| {
        let mut v = v.clone();
        v.resize(len, 0);
        v
    };
    (pad(&a.0), !a.1) < (pad(&b.0), !b.1)
}

/// Whether version `got` is what tag `named` names: the same numbers (a
/// tag of fewer numbers names a series: `1.4` holds 1.4.2), and no
/// pre-release unless the tag names one.
fn tag_holds(named: &(Vec<u64>, bool), got: Option<&(Vec<u64>, bool)>) -> bool {
    got.is_some_and(|(numbers, pre)| {
        let mut n = numbers.clone();
        n.resize(n.len().max(named.0.len()), 0);
        n.starts_with(&named.0) && (named.1 || !pre)
    })
}

/// The outcome of an install.
#[derive(Debug, Clone)]
pub struct Installed {
    /// The package name (its manifest is `<name>.toml`).
    pub name: String,
    /// What the index now records.
    pub entry: Entry,
    /// The grants review, as printed.
    pub review: String,
    /// Grants the upgrade added (accepted with `--accept-new-grants`).
    pub new_grants: Vec<String>,
    /// The digest this install replaced, if it was an upgrade.
    pub replaced: Option<String>,
    /// Whether the replaced version was newer, or had a version where
    /// this one has none (accepted with `--allow-downgrade`).
    pub downgrade: bool,
    /// Warnings to print (an unverified install).
    pub warnings: Vec<String>,
    /// The same digest was already installed under this name (its files
    /// checked, and restored where they differed).
    pub reinstalled: bool,
}

/// An installed package as listed.
#[derive(Debug, Clone)]
pub struct Listed {
    /// The package name.
    pub name: String,
    /// What the index records.
    pub entry: Entry,
    /// Its grants, or why they cannot be read.
    pub grants: Result<Grants, String>,
}

/// Refuse `dir` unless the user owns it and nobody else may write to it
/// (`files::Keep::Owned`; a symlink is judged by what it names: the
/// store's root may be one).
fn owned_and_unshared(dir: &Path) -> Result<()> {
    let meta = std::fs::metadata(dir).map_err(|e| Error::io(dir, e))?;
    toolhost::files::kept(dir, &meta, toolhost::files::Keep::Owned)
        .map_err(|e| Error::Format(format!("the package store: {e}")))
}

/// Whether directory `dir` and its files are the user's and writable by
/// nobody else (else whoever could write them could change them later).
fn private_files(dir: &Path) -> bool {
    owned_and_unshared(dir).is_ok()
        && std::fs::read_dir(dir).is_ok_and(|entries| {
            entries
                .map(|e| e.map(|e| e.path()))
                .all(|p| p.is_ok_and(|p| owned_and_unshared(&p).is_ok()))
        })
}

/// Whether directories `a` and `b` hold the same files, byte for byte.
fn same_files(a: &Path, b: &Path) -> bool {
    let names = |d: &Path| -> Option<Vec<std::ffi::OsString>> {
        let mut n: Vec<_> = std::fs::read_dir(d)
            .ok()?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()
            .ok()?;
        n.sort();
        Some(n)
    };
    match (names(a), names(b)) {
        (Some(na), Some(nb)) if na == nb => na.iter().all(|n| {
            matches!(
                (std::fs::read(a.join(n)), std::fs::read(b.join(n))),
                (Ok(x), Ok(y)) if x == y
            )
        }),
        _ => false,
    }
}

impl Store {
    /// Open (creating) the store at `root`.
    ///
    /// The store and its `sha256/` must be the user's own and writable by
    /// nobody else: whoever could write there could change what a host
    /// loads and what an upgrade is compared with (found by review).
    pub fn open(root: &Path) -> Result<Store> {
        use std::os::unix::fs::DirBuilderExt as _;
        // Made owner-only, whatever the umask.
        let mut private = std::fs::DirBuilder::new();
        private.recursive(true).mode(0o700);
        for dir in [root.join("sha256"), root.join(".staging")] {
            private.create(&dir).map_err(|e| Error::io(&dir, e))?;
        }
        for dir in [
            root.to_path_buf(),
            root.join("sha256"),
            root.join(".staging"),
        ] {
            owned_and_unshared(&dir)?;
        }
        Ok(Store {
            root: root.to_path_buf(),
        })
    }

    /// `$TOOLHOST_STORE`, else `$XDG_DATA_HOME/toolhost/store`, else
    /// `~/.local/share/toolhost/store`.
    pub fn default_root() -> Option<PathBuf> {
        if let Some(d) = std::env::var_os("TOOLHOST_STORE") {
            return Some(PathBuf::from(d));
        }
        let base = std::env::var_os("XDG_DATA_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))?;
        Some(base.join("toolhost/store"))
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn lock(&self) -> Result<std::fs::File> {
        let p = self.root.join(".lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(|e| Error::io(&p, e))?;
        f.lock().map_err(|e| Error::io(&p, e))?;
        Ok(f)
    }

    fn read_index(&self) -> Result<Index> {
        let p = self.root.join("index.json");
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| Error::format(format!("{}: corrupt store index: {e}", p.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Index {
                version: 1,
                packages: BTreeMap::new(),
            }),
            Err(e) => Err(Error::io(&p, e)),
        }
    }

    fn write_index(&self, idx: &Index) -> Result<()> {
        let data = serde_json::to_vec_pretty(idx).expect("index serializes");
        self.write_atomic(&self.root.join("index.json"), &data)
    }

    /// Write `data` to `path` via a temporary file in `.staging` + rename.
    fn write_atomic(&self, path: &Path, data: &[u8]) -> Result<()> {
        let staging = self.root.join(".staging");
        let tmp = tempfile::NamedTempFile::new_in(&staging).map_err(|e| Error::io(&staging, e))?;
        std::fs::write(tmp.path(), data).map_err(|e| Error::io(tmp.path(), e))?;
        tmp.as_file()
            .sync_all()
            .map_err(|e| Error::io(tmp.path(), e))?;
        tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
        Ok(())
    }

    fn package_dir(&self, digest: &Digest) -> PathBuf {
        self.root.join("sha256").join(digest.hex())
    }

    /// Fetch `src` and install it. See [`Store::install_fetched`].
    pub async fn install(
        &self,
        src: &Source,
        host: &HostConfig,
        trust: &TrustPolicy,
        opts: &InstallOptions,
    ) -> Result<Installed> {
        let fetched = fetch(src).await?;
        // A tag that names a version names what is installed: the
        // signature covers the repository and the manifest, not the tag,
        // so a registry could serve a signed old release under a new tag
        // (found by review).
        // A package that carries no version cannot be checked against
        // its tag: installed, with a warning.
        let mut unchecked = None;
        if let Source::Registry(r) = src
            && let Some(tag) = r.reference.tag()
            && let Some(named) = version_key(tag)
            && !opts.allow_downgrade
        {
            match fetched.package.version() {
                Some(got) if !tag_holds(&named, version_key(got).as_ref()) => {
                    return Err(Error::Downgrade(format!(
                        "refusing {src}: its tag names version {tag}, but the package is version {got}. Nothing was changed; if it is meant, run the install again with --allow-downgrade."
                    )));
                }
                Some(_) => {}
                None => {
                    unchecked = Some(format!(
                        "warning: {src}: the tag names version {tag}, but the package carries no version, so nothing checks that it is that release (pack it with --pkg-version)"
                    ))
                }
            }
        }
        let mut installed = self.install_fetched(fetched, &src.to_string(), host, trust, opts)?;
        installed.warnings.extend(unchecked);
        Ok(installed)
    }

    /// Judge and install a fetched package: trust, then the grants review
    /// against `host`, then (for an upgrade) the comparison with the
    /// installed version; only then the files. Refusals change nothing.
    pub fn install_fetched(
        &self,
        fetched: Fetched,
        what: &str,
        host: &HostConfig,
        trust: &TrustPolicy,
        opts: &InstallOptions,
    ) -> Result<Installed> {
        let Fetched {
            package,
            signatures,
            origin,
        } = fetched;
        let mut warnings = Vec::new();
        let signer = match trust.verify(what, &origin, &package.digest, &signatures.signatures) {
            Ok(s) => Some(s),
            Err(Error::Untrusted(msg)) if opts.allow_unsigned => {
                let first = msg
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .replace("refusing ", "");
                warnings.push(if origin.is_remote() {
                    format!(
                        "WARNING: installing {first} anyway, because of --allow-unsigned. It comes from a remote source and NO trusted signature vouches for it: anyone who could change it in transit or at the source chose what runs."
                    )
                } else {
                    format!("note: installing {first} unverified (--allow-unsigned, a local file)")
                });
                None
            }
            Err(e) => return Err(e),
        };

        let name = package.config.name.clone();
        let manifest_origin = format!("{what}: {name}.toml");
        check_portable(package.tool_manifest(), &manifest_origin)?;
        // Write the package's files into `.staging` first: the host's own
        // parser and capability units judge the manifest there, beside its
        // component, as they will once installed.
        let staged = self.stage(&package)?;
        let (manifest, grants) = Grants::load(
            &staged.path().join(CHECK_MANIFEST),
            &std::fs::read_to_string(staged.path().join(CHECK_MANIFEST))
                .map_err(|e| Error::io(staged.path(), e))?,
            &manifest_origin,
        )?;
        let rev = review(&manifest, host, std::slice::from_ref(&self.root));
        let review_text = format!(
            "grants requested by {name} ({}) and what this host does with them:\n{}",
            package.digest.short(),
            rev.render()
        );
        if !rev.refused().is_empty() {
            return Err(Error::GrantsRefused(format!(
                "refusing {what}: this host refuses {} of its grants.\n{review_text}Nothing was installed.",
                rev.refused().len()
            )));
        }

        let _lock = self.lock()?;
        let mut idx = self.read_index()?;
        let previous = idx.packages.get(&name).cloned();
        let mut added = Vec::new();
        let mut downgrade = false;
        if let Some(prev) = &previous
            && prev.digest != package.digest.as_str()
        {
            // A package's name is its author's to choose: a package of the
            // same name signed for another repository is another
            // publisher's, which must not silently take over the installed
            // one's grants.
            let was = prev.signer.as_ref().map(|s| s.identity.as_str());
            let now = signer.as_ref().map(|s| s.identity.as_str());
            if let Some(was) = was
                && now != Some(was)
                && !opts.accept_new_signer
            {
                return Err(Error::NewSigner(format!(
                    "refusing to replace {name} ({what}): the installed version is signed for `{was}`, this one {}. Nothing was changed; if the new publisher is meant, run the install again with --accept-new-signer.",
                    now.map_or("is not signed".to_string(), |n| format!("for `{n}`"))
                )));
            }
            // A release with no version in place of a versioned one
            // counts as older: else it would pass unchecked. So does one
            // that cannot be ordered against the installed version (`r7`
            // after `r8`, found by review: rollback protection was off for
            // any version that did not parse); build numbers (`43`) are
            // ordered as numbers.
            if let Some(was) = prev.version.as_deref() {
                let now = package.version();
                let (shown, older_now) = match (release_key(was), now.and_then(release_key)) {
                    (Some(a), Some(b)) => ("the older", older(&b, &a)),
                    _ => ("the unordered", now != Some(was)),
                };
                downgrade = older_now;
                if downgrade && !opts.allow_downgrade {
                    return Err(Error::Downgrade(format!(
                        "refusing to replace {name} {was} with {} ({what}): a source can serve any release its publisher ever signed. Nothing was changed; if it is meant, run the install again with --allow-downgrade.",
                        now.map_or("a release with no version".to_string(), |v| format!(
                            "{shown} {v}"
                        ))
                    )));
                }
            }
            let old = self.installed_grants(&Digest::parse(&prev.digest)?, &name)?;
            added = new_grants(&old, &grants);
            if !added.is_empty() && !opts.accept_new_grants {
                let mut m = format!(
                    "refusing to upgrade {name} from {} to {} ({what}): the new version asks for grants the installed one does not have:\n",
                    Digest::parse(&prev.digest)?.short(),
                    package.digest.short()
                );
                for g in &added {
                    let _ = writeln!(m, "  + {g}");
                }
                let _ = write!(
                    m,
                    "Nothing was changed; {name} {} stays installed. To accept these grants, run the install again with --accept-new-grants.",
                    Digest::parse(&prev.digest)?.short()
                );
                return Err(Error::NewGrants(m));
            }
        }

        self.commit(staged, &package.digest)?;
        let manifest = self.installed_manifest(&package, what)?;
        self.write_atomic(&self.root.join(format!("{name}.toml")), manifest.as_bytes())?;
        let entry = Entry {
            digest: package.digest.to_string(),
            version: package.version().map(str::to_string),
            source: what.to_string(),
            component: package.component_digest().to_string(),
            signer,
            installed_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        idx.version = 1;
        idx.packages.insert(name.clone(), entry.clone());
        self.write_index(&idx)?;
        let reinstalled = previous.as_ref().is_some_and(|p| p.digest == entry.digest);
        let replaced = previous
            .filter(|p| p.digest != entry.digest)
            .map(|p| p.digest);
        if let Some(old) = &replaced {
            self.collect(&idx, old);
        }
        Ok(Installed {
            name,
            entry,
            review: review_text,
            new_grants: added,
            replaced,
            downgrade,
            warnings,
            reinstalled,
        })
    }

    /// The grants of the installed package directory `digest`, read by the
    /// host's parser.
    fn installed_grants(&self, digest: &Digest, name: &str) -> Result<Grants> {
        let dir = self.package_dir(digest);
        let p = dir.join(CHECK_MANIFEST);
        let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
        Ok(Grants::load(&p, &text, &format!("installed {name}"))?.1)
    }

    /// Write the package's files into a new directory of `.staging`,
    /// with `check.toml`: its manifest pointing at the component beside it.
    fn stage(&self, pkg: &Package) -> Result<tempfile::TempDir> {
        let staging = self.root.join(".staging");
        let tmp = tempfile::tempdir_in(&staging).map_err(|e| Error::io(&staging, e))?;
        let w = |file: &str, data: &[u8]| {
            let p = tmp.path().join(file);
            std::fs::write(&p, data).map_err(|e| Error::io(&p, e))
        };
        w("manifest.json", &pkg.manifest_raw)?;
        let cd = Digest::parse(&pkg.manifest.config.digest)?;
        w("config.json", &pkg.blobs[&cd])?;
        w("tool.toml", pkg.tool_manifest().as_bytes())?;
        w("component.wasm", pkg.component())?;
        if let Some(r) = pkg.layer_data(Role::Readme) {
            w("README.md", r)?;
        }
        if let (Some(d), Some(data)) = (pkg.layer(Role::Icon), pkg.layer_data(Role::Icon)) {
            let ext = if d.media_type == "image/png" {
                "png"
            } else {
                "svg"
            };
            w(&format!("icon.{ext}"), data)?;
        }
        let check = rewrite_component(
            pkg.tool_manifest(),
            "component.wasm",
            &pkg.component_digest(),
            None,
        )?;
        w(CHECK_MANIFEST, check.as_bytes())?;
        Ok(tmp)
    }

    /// Move a staged package into `sha256/<hex>/`: kept if already there
    /// with the same files, else replaced (its files are derived from the
    /// package's verified bytes; different ones are not what this install
    /// verified, and later upgrades are compared with its `check.toml`).
    fn commit(&self, staged: tempfile::TempDir, digest: &Digest) -> Result<()> {
        let dest = self.package_dir(digest);
        if dest.join("component.wasm").is_file() {
            if same_files(staged.path(), &dest) && private_files(&dest) {
                return Ok(());
            }
            tracing::warn!(
                "{}: its files differ from the package's; replaced",
                dest.display()
            );
            let old = tempfile::tempdir_in(self.root.join(".staging"))
                .map_err(|e| Error::io(&self.root, e))?;
            let aside = old.path().join("replaced");
            std::fs::rename(&dest, &aside).map_err(|e| Error::io(&dest, e))?;
        }
        let keep = staged.keep();
        match std::fs::rename(&keep, &dest) {
            Ok(()) => Ok(()),
            Err(_) if dest.join("component.wasm").is_file() => {
                let _ = std::fs::remove_dir_all(&keep);
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&keep);
                Err(Error::io(&dest, e))
            }
        }
    }

    /// The manifest written as `<name>.toml`: the package's own, with
    /// `[component]` pointing at the stored layer.
    fn installed_manifest(&self, pkg: &Package, what: &str) -> Result<String> {
        let rel = format!("sha256/{}/component.wasm", pkg.digest.hex());
        let what = crate::error::printable(what);
        let header = format!(
            "# Installed by `toolhost install {what}` ({}). Do not edit: reinstall instead.\n",
            pkg.digest
        );
        rewrite_component(
            pkg.tool_manifest(),
            &rel,
            &pkg.component_digest(),
            Some(&header),
        )
    }

    /// Remove the package digest directory `digest` unless a name still
    /// uses it.
    fn collect(&self, idx: &Index, digest: &str) {
        if idx.packages.values().any(|e| e.digest == digest) {
            return;
        }
        if let Ok(d) = Digest::parse(digest) {
            let _ = std::fs::remove_dir_all(self.package_dir(&d));
        }
    }

    /// What is installed, with each package's grants.
    pub fn list(&self) -> Result<Vec<Listed>> {
        let idx = self.read_index()?;
        Ok(idx
            .packages
            .into_iter()
            .map(|(name, entry)| {
                let grants = Digest::parse(&entry.digest)
                    .and_then(|d| self.installed_grants(&d, &name))
                    .map_err(|e| e.to_string());
                Listed {
                    name,
                    entry,
                    grants,
                }
            })
            .collect())
    }

    /// Uninstall `name`: its manifest first (a running host unloads it),
    /// then the index entry, then its files.
    pub fn remove(&self, name: &str) -> Result<Entry> {
        let _lock = self.lock()?;
        let mut idx = self.read_index()?;
        let Some(entry) = idx.packages.remove(name) else {
            let names: Vec<&String> = idx.packages.keys().collect();
            return Err(Error::NotInstalled(format!(
                "`{name}` is not installed in {} (installed: {})",
                self.root.display(),
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            )));
        };
        let m = self.root.join(format!("{name}.toml"));
        match std::fs::remove_file(&m) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&m, e)),
        }
        self.write_index(&idx)?;
        self.collect(&idx, &entry.digest);
        Ok(entry)
    }
}

/// `text` with `[component] path` and `sha256` replaced (comments and the
/// rest kept as written), optionally behind a header comment.
fn rewrite_component(text: &str, path: &str, sha: &Digest, header: Option<&str>) -> Result<String> {
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e| Error::format(format!("the package's manifest is not TOML: {e}")))?;
    let comp = doc
        .get_mut("component")
        .and_then(|c| c.as_table_like_mut())
        .ok_or_else(|| Error::format("the package's manifest has no [component] table"))?;
    comp.insert("path", toml_edit::value(path));
    comp.insert("sha256", toml_edit::value(sha.hex()));
    Ok(format!("{}{doc}", header.unwrap_or("")))
}

/// One line per grant, for `toolhost tools`.
pub fn summarize(g: &Grants) -> Vec<String> {
    let mut out = Vec::new();
    for d in &g.dirs {
        out.push(format!("dir {d}"));
    }
    for (k, v) in &g.env_set {
        out.push(format!("env set {k}={v}"));
    }
    for k in &g.env_pass {
        out.push(format!("env pass {k}"));
    }
    for h in &g.hosts {
        out.push(format!("net {h}"));
    }
    for c in &g.client {
        out.push(format!("client {c}"));
    }
    let l = &g.limits;
    out.push(format!(
        "limits timeout {}, memory {}, fuel {}, max-output {}, max-concurrency {}",
        humantime::format_duration(l.timeout),
        crate::grants::size(l.memory),
        l.fuel.map_or("unmetered".into(), |f| f.to_string()),
        crate::grants::size(l.max_output),
        l.max_concurrency
    ));
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions_order_and_tags_name_them() {
        let k = |v: &str| version_key(v).unwrap();
        assert!(version_key("latest").is_none() && version_key("42").is_none());
        assert!(version_key("sha-1a2b").is_none() && version_key("v2").is_some());
        assert!(older(&k("1.0.0"), &k("2.0.0")) && !older(&k("2.0.0"), &k("1.9.9")));
        assert!(!older(&k("1.0"), &k("1.0.0")) && !older(&k("1.0.0"), &k("1.0")));
        assert!(older(&k("2.0.0-rc1"), &k("2.0.0")) && older(&k("1.10.0"), &k("v1.10.1")));
        assert!(tag_holds(&k("v2"), Some(&k("2.3.1"))) && tag_holds(&k("1.0.0"), Some(&k("1.0"))));
        assert!(
            !tag_holds(&k("2.0.0"), Some(&k("1.0.0"))) && !tag_holds(&k("1.0"), Some(&k("1.4.2")))
        );
        assert!(
            !tag_holds(&k("2.0.0"), Some(&k("2.0.0-rc1")))
                && tag_holds(&k("2.0.0-rc1"), Some(&k("2.0.0-rc1")))
        );
        assert!(!tag_holds(&k("2.0.0"), None));
    }

    use super::*;

    /// A store others may write to is refused: they could change what a
    /// host loads, and what an upgrade is compared with (found by review).
    #[test]
    fn a_store_others_may_write_to_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("store");
        Store::open(&root).unwrap();
        for dir in [root.clone(), root.join("sha256"), root.join(".staging")] {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
            let e = Store::open(&root).unwrap_err().to_string();
            assert!(
                e.contains("may be written by other users (mode 777)"),
                "{e}"
            );
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Store::open(&root).unwrap();
    }

    /// A package directory already there is kept only with the files this
    /// install would write; else it is replaced (found by review: a
    /// `check.toml` planted there became the baseline of later upgrades).
    #[test]
    fn a_package_directory_with_other_files_is_replaced() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(&t.path().join("store")).unwrap();
        let d = Digest::of(b"pkg");
        let stage = |check: &str| {
            let s = tempfile::tempdir_in(store.root.join(".staging")).unwrap();
            std::fs::write(s.path().join("component.wasm"), b"wasm").unwrap();
            std::fs::write(s.path().join(CHECK_MANIFEST), check).unwrap();
            s
        };
        store.commit(stage("[limits]\n"), &d).unwrap();
        let dest = store.package_dir(&d);
        std::fs::write(dest.join(CHECK_MANIFEST), "[network]\nallow = [\"*\"]\n").unwrap();
        store.commit(stage("[limits]\n"), &d).unwrap();
        assert_eq!(
            std::fs::read_to_string(dest.join(CHECK_MANIFEST)).unwrap(),
            "[limits]\n"
        );
        // The same files: the directory is kept as it is.
        use std::os::unix::fs::MetadataExt as _;
        let inode = std::fs::metadata(&dest).unwrap().ino();
        store.commit(stage("[limits]\n"), &d).unwrap();
        assert_eq!(std::fs::metadata(&dest).unwrap().ino(), inode);
        // The same files, one of them writable by others: replaced (its
        // writer could change it after the check).
        use std::os::unix::fs::PermissionsExt as _;
        let check = dest.join(CHECK_MANIFEST);
        std::fs::set_permissions(&check, std::fs::Permissions::from_mode(0o666)).unwrap();
        store.commit(stage("[limits]\n"), &d).unwrap();
        assert_ne!(std::fs::metadata(&dest).unwrap().ino(), inode);
        let mode = std::fs::metadata(&check).unwrap().permissions().mode();
        assert_eq!(mode & 0o022, 0, "{mode:o}");
    }

    #[test]
    fn the_component_is_rewritten_and_the_rest_kept() {
        let t = "# my tool\n[component]\npath = \"x.wasm\" # built by make\nsha256 = \"00\"\n\n[limits]\ntimeout = \"5s\"\n";
        let d = Digest::of(b"c");
        let out = rewrite_component(t, "sha256/ab/component.wasm", &d, Some("# hdr\n")).unwrap();
        assert!(out.starts_with("# hdr\n# my tool\n"), "{out}");
        assert!(out.contains("path = \"sha256/ab/component.wasm\""), "{out}");
        assert!(out.contains(&format!("sha256 = \"{}\"", d.hex())), "{out}");
        assert!(out.contains("[limits]\ntimeout = \"5s\""), "{out}");
    }
}
