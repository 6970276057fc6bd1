//! The `fs` unit: host directories a tool may see.
//!
//! - parse: `[[fs]]` of the manifest (guest path, host path relative to the
//!   manifest, `ro`/`rw`, an optional byte `quota` for `rw`);
//! - narrow: the operator's caps (`[fs]` in the host config, a tenant's
//!   roots): allowed host roots, whether `rw` is allowed at all, the default
//!   and largest quota. A grant outside them fails to load, naming the
//!   setting;
//! - prepare, once at load: resolve the host path, refuse symlinks and
//!   non-directories, refuse grants that cover the host's own state (tool
//!   sources, the compile cache, the config, the audit log, the agent's
//!   settings) and grants that overlap another grant unless both are
//!   read-only, then **open the directory**; every call gets that open
//!   directory, never the path, so nothing done to the path later (a rename,
//!   a planted symlink) redirects a grant;
//! - apply, per call: hand the open directories to the new WASI context;
//! - enforce: wasmtime-wasi confines every path to its directory and
//!   enforces read-only.
//!
//! Must not touch: anything but the directories granted here.

pub(crate) mod enforce;
mod place;
#[cfg(feature = "agent")]
pub(crate) use place::writable_around;

use place::Place;

pub use enforce::DEFAULT_MAX_OPEN;
pub(crate) use enforce::{
    CallDescriptors, DescriptorShare, DescriptorShares, DescriptorsExhausted, Slot,
    descriptors_quarter_free,
};

use super::AllowList;
use crate::diagnostic::Collector;
use crate::manifest::schema;
use std::fmt;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Read-only or read-write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FsMode {
    /// Read, list and stat only.
    #[serde(rename = "ro")]
    ReadOnly,
    /// Also create, write, rename and delete.
    #[serde(rename = "rw")]
    ReadWrite,
}

impl fmt::Display for FsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FsMode::ReadOnly => "ro",
            FsMode::ReadWrite => "rw",
        })
    }
}

/// A directory a manifest asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FsRequest {
    /// Where the guest sees it: absolute, normalized, not `/`.
    pub guest: String,
    /// The host directory, resolved against the manifest's directory (not
    /// yet checked: that happens at load).
    pub host: PathBuf,
    /// Read-only or read-write.
    pub mode: FsMode,
    /// Bytes the tool may add to a read-write directory; `None`: the
    /// operator's default.
    pub quota: Option<u64>,
    pub(crate) span: Option<Range<usize>>,
}

/// The quota of an `rw` grant when neither its manifest nor the host
/// config (`[fs] default-quota` / `max-quota`) names one.
pub const DEFAULT_QUOTA: u64 = 1 << 30;

/// The operator's caps on directory grants (`[fs]` in the host config).
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct FsCaps {
    /// Host directories under which grants may lie; unrestricted: anywhere
    /// (the host's own state is refused regardless).
    pub roots: AllowList<PathBuf>,
    /// Whether `rw` grants are allowed at all.
    pub deny_rw: bool,
    /// The quota of an `rw` grant that names none.
    pub default_quota: Option<u64>,
    /// The largest quota an `rw` grant may have.
    pub max_quota: Option<u64>,
    /// Files and directories one call may hold open at once (by a
    /// descriptor, or by a stream over one whose descriptor is dropped),
    /// its outbound connections' sockets counted with them;
    /// `None`: 256.
    pub max_open: Option<usize>,
}

impl FsCaps {
    /// The largest quota these caps allow: `max_quota`, else the larger of
    /// the built-in [`DEFAULT_QUOTA`] and `default_quota`.
    fn quota_ceiling(&self) -> u64 {
        self.max_quota
            .unwrap_or_else(|| DEFAULT_QUOTA.max(self.default_quota.unwrap_or(0)))
    }

    /// Both caps at once. The largest quota is the smaller of the two
    /// ceilings, each side's implied one too: a side with no `max-quota`
    /// allows the built-in 1 GiB or its own `default-quota`, and the other
    /// side's larger default never raises that (found by review: a
    /// tenant's `default-quota` of 50 GiB let manifests ask 40 GiB on a
    /// host that set none, where 1 GiB was the bound).
    pub fn intersect(&self, other: &FsCaps) -> FsCaps {
        let roots = self.roots.intersect(&other.roots);
        let min = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let unset = |c: &FsCaps| c.max_quota.is_none() && c.default_quota.is_none();
        let max_quota = if unset(self) && unset(other) {
            None
        } else {
            Some(self.quota_ceiling().min(other.quota_ceiling()))
        };
        FsCaps {
            roots,
            deny_rw: self.deny_rw || other.deny_rw,
            // Never above the largest allowed.
            default_quota: min(self.default_quota, other.default_quota)
                .map(|d| max_quota.map_or(d, |m| d.min(m))),
            max_quota,
            // Unset is the default, not unbounded: a tenant's 3,000 over a
            // host that named none took 3,000 where the host's own calls
            // have 256 (found by review).
            max_open: match (self.max_open, other.max_open) {
                (None, None) => None,
                (a, b) => Some(
                    a.unwrap_or(DEFAULT_MAX_OPEN)
                        .min(b.unwrap_or(DEFAULT_MAX_OPEN)),
                ),
            },
        }
    }
}

/// A path of the host's own that no grant may cover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Protected {
    /// Where it is (its path, and its place in its file system: a bind
    /// mount of it is it too).
    place: Place,
    /// What it is, for the error message.
    pub(crate) what: &'static str,
    /// Whether grants *inside* it are refused too (the compile cache: its
    /// files are native code; a tools directory) or only grants that
    /// contain it (a file: the host config, a key).
    pub(crate) tree: bool,
    /// Whether only read-write grants that contain it are refused (the
    /// host's executable: anyone may read it, a tool must not replace it).
    writes_only: bool,
}

/// The host's own state, which no grant may reach.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct HostState {
    pub(crate) protected: Vec<Protected>,
}

impl HostState {
    /// Protect `path` (resolved now; a path that does not exist yet is
    /// protected where it will be: its longest existing ancestor resolved,
    /// the rest as written).
    pub(crate) fn protect(&mut self, path: &Path, what: &'static str, tree: bool) {
        self.push(path, what, tree, false);
    }

    /// Protect `path` from read-write grants that contain it (a grant
    /// that may only read it, or its directory, is fine).
    pub(crate) fn protect_from_writes(&mut self, path: &Path, what: &'static str) {
        self.push(path, what, false, true);
    }

    fn push(&mut self, path: &Path, what: &'static str, tree: bool, writes_only: bool) {
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        let path = place::resolved_as_far_as_it_exists(&abs);
        let place = Place::of(&abs, &path);
        self.protected.push(Protected {
            place,
            what,
            tree,
            writes_only,
        });
    }
}

/// An `[fs] roots` entry resolved: its canonical path, or why it cannot
/// be a root. A root whose path passes through a symlink inside a
/// directory granted read-write (at any time in this process) is refused:
/// roots are resolved at each config read, so that tool could point the
/// symlink at `/` before a reload and widen the root for every manifest
/// (a residual of the tenth session's review, as L2 was for grants).
pub(crate) fn resolve_root(path: &Path) -> Result<PathBuf, String> {
    let canonical = path.canonicalize().map_err(|e| e.to_string())?;
    let written = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    match place::through_writable(&Place::of(&written, &canonical)) {
        None => Ok(canonical),
        Some((link, rw)) => Err(format!(
            "its path passes through a symlink in {}, inside {}, which a tool was granted read-write: that tool could point it elsewhere; name the root by a path without that symlink",
            link.display(),
            rw.display()
        )),
    }
}

/// Why a grant cannot be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FsRefusal {
    pub(crate) guest: String,
    pub(crate) message: String,
    pub(crate) hint: Option<String>,
}

/// A granted, opened directory.
#[derive(Debug)]
pub(crate) struct PreparedDir {
    pub(crate) guest: String,
    /// The resolved host path, for messages and overlap checks only: calls
    /// never open it again.
    pub(crate) host: PathBuf,
    /// Where it is, for overlap checks (see [`Place`]).
    place: Place,
    pub(crate) mode: FsMode,
    /// What the grant holds against its quota, shared by every call.
    pub(crate) usage: Option<Arc<enforce::Quota>>,
    /// Opened once at load, without following symlinks.
    dir: std::fs::File,
    /// `/proc/self/fd/N` of `dir`: opening it reopens exactly this
    /// directory, whatever has happened to its path since.
    fd_path: PathBuf,
}

/// Every directory of one component, opened.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) dirs: Vec<Arc<PreparedDir>>,
    /// Files one call may hold open.
    pub(crate) max_open: usize,
}

impl Prepared {
    /// Whether any granted directory is read-write.
    pub(crate) fn writes(&self) -> bool {
        self.dirs.iter().any(|d| d.mode == FsMode::ReadWrite)
    }
}

impl Default for Prepared {
    fn default() -> Self {
        Prepared {
            dirs: Vec::new(),
            max_open: DEFAULT_MAX_OPEN,
        }
    }
}

/// The most `[[fs]]` grants one manifest may make: each is a descriptor
/// per sandbox (see `enforce::FsCall::new`) and a pairwise overlap check.
pub(crate) const MAX_GRANTS: usize = 32;

/// Read the `[[fs]]` entries; every problem is recorded.
pub(crate) fn parse(
    raw: &[schema::Spanned<schema::Fs>],
    dir: &Path,
    cx: &mut Collector<'_>,
) -> Vec<FsRequest> {
    let mut out: Vec<FsRequest> = Vec::new();
    if let Some(extra) = raw.get(MAX_GRANTS) {
        cx.error(
            Some(extra.span()),
            format!(
                "a component may be granted at most {MAX_GRANTS} directories ({} here)",
                raw.len()
            ),
            Some("grant a common parent directory instead".into()),
        );
    }
    for g in raw.iter().take(MAX_GRANTS) {
        let span = g.span();
        let g = g.get_ref();
        if let Err(m) = check_guest_path(g.guest.get_ref()) {
            cx.error(Some(g.guest.span()), m, None);
            continue;
        }
        let mode = match g.mode.get_ref().as_str() {
            "ro" => FsMode::ReadOnly,
            "rw" => FsMode::ReadWrite,
            other => {
                cx.error(
                    Some(g.mode.span()),
                    format!("mode `{other}` must be `ro` or `rw`"),
                    None,
                );
                continue;
            }
        };
        let quota = match &g.quota {
            None => None,
            Some(q) if mode == FsMode::ReadOnly => {
                cx.error(
                    Some(q.span()),
                    "a quota only applies to `rw` grants",
                    Some("remove `quota` or make the grant `rw`".into()),
                );
                None
            }
            Some(q) => match crate::caps::limits::parse_size(q.get_ref()) {
                Ok(n) => Some(n),
                Err(e) => {
                    cx.error(Some(q.span()), e, None);
                    None
                }
            },
        };
        if g.host.get_ref().is_empty() {
            cx.error(Some(g.host.span()), "host path is empty", None);
            continue;
        }
        if let Some(other) = out.iter().find(|o| {
            is_prefix_dir(&o.guest, g.guest.get_ref()) || is_prefix_dir(g.guest.get_ref(), &o.guest)
        }) {
            cx.error(
                Some(span.clone()),
                format!(
                    "guest path `{}` overlaps the grant at `{}`",
                    g.guest.get_ref(),
                    other.guest
                ),
                Some("give each grant its own directory".into()),
            );
            continue;
        }
        out.push(FsRequest {
            guest: g.guest.get_ref().clone(),
            host: dir.join(g.host.get_ref()),
            mode,
            quota,
            span: Some(g.host.span()),
        });
    }
    out
}

/// Narrow and open every directory a manifest asks for. Each refusal names
/// the grant and, where the operator decides, the setting.
pub(crate) fn prepare(
    requests: &[FsRequest],
    caps: &FsCaps,
    host: &HostState,
) -> Result<Prepared, Vec<FsRefusal>> {
    let mut dirs = Vec::new();
    let mut refused = Vec::new();
    for r in requests {
        match prepare_one(r, caps, host) {
            Ok(d) => dirs.push(Arc::new(d)),
            Err((message, hint)) => refused.push(FsRefusal {
                guest: r.guest.clone(),
                message,
                hint,
            }),
        }
    }
    // Within one component, the same rule as across components.
    for (i, a) in dirs.iter().enumerate() {
        for b in &dirs[i + 1..] {
            if let Some(m) = overlap(a, b) {
                refused.push(FsRefusal {
                    guest: b.guest.clone(),
                    message: m,
                    hint: Some("grant each host directory once, or make both grants `ro`".into()),
                });
            }
        }
    }
    if refused.is_empty() {
        Ok(Prepared {
            dirs,
            max_open: enforce::max_open(caps),
        })
    } else {
        Err(refused)
    }
}

fn prepare_one(
    r: &FsRequest,
    caps: &FsCaps,
    host: &HostState,
) -> Result<PreparedDir, (String, Option<String>)> {
    let shown = r.host.display();
    if r.mode == FsMode::ReadWrite && caps.deny_rw {
        return Err((
            format!("`rw` grant of {shown}: this host allows read-only grants only"),
            Some("set `[fs] deny-rw = false` in the host config, or make the grant `ro`".into()),
        ));
    }
    // Resolve every symlink on the way once, here; the directory itself
    // must not be one.
    let meta = std::fs::symlink_metadata(&r.host).map_err(|e| {
        (
            format!("host directory {shown} cannot be granted: {e}"),
            None,
        )
    })?;
    if meta.file_type().is_symlink() {
        return Err((
            format!("host path {shown} is a symbolic link"),
            Some("grant the directory it points to".into()),
        ));
    }
    if !meta.is_dir() {
        return Err((format!("host path {shown} is not a directory"), None));
    }
    let path = r.host.canonicalize().map_err(|e| {
        (
            format!("host directory {shown} cannot be granted: {e}"),
            None,
        )
    })?;
    if !caps.roots.allows(|root| path.starts_with(root)) {
        return Err((
            format!(
                "host directory {} is outside the allowed roots",
                path.display()
            ),
            Some(format!(
                "the host config's `[fs] roots` allows {}",
                caps.roots.describe(|p| p.display().to_string())
            )),
        ));
    }
    let written = std::path::absolute(&r.host).unwrap_or_else(|_| r.host.clone());
    let place = Place::of(&written, &path);
    if let Some((link, rw)) = place::through_writable(&place) {
        return Err((
            format!(
                "the path of host directory {} passes through a symlink in {}, inside {}, which a tool was granted read-write: that tool could have pointed it elsewhere",
                r.host.display(),
                link.display(),
                rw.display()
            ),
            Some("grant the directory by a path without that symlink".into()),
        ));
    }

    for p in &host.protected {
        if p.writes_only && r.mode != FsMode::ReadWrite {
            continue;
        }
        // A protected path reached through a symlink inside this directory:
        // a tool writing here could point it at files of its own (a config,
        // manifests, keys), read at the next load (found by review).
        if r.mode == FsMode::ReadWrite
            && let Some(link) = p.place.passes_through(&place)
        {
            return Err((
                format!(
                    "host directory {} holds a symlink ({}) on the path of the host's {} ({}): a tool writing there could point it elsewhere",
                    path.display(),
                    link.display(),
                    p.what,
                    p.place.path.display()
                ),
                Some(
                    "give the host that path without the symlink, or grant a directory of its own"
                        .into(),
                ),
            ));
        }
        let covers = p.place.is_within(&place);
        let inside = p.tree && place.is_within(&p.place);
        if covers || inside {
            return Err((
                format!(
                    "host directory {} {} the host's {} ({})",
                    path.display(),
                    if covers { "contains" } else { "is inside" },
                    p.what,
                    p.place.path.display()
                ),
                Some(
                    "a tool may never reach toolhost's own files; grant a directory of its own"
                        .into(),
                ),
            ));
        }
    }
    let quota = match (r.mode, r.quota) {
        (FsMode::ReadOnly, _) => None,
        (FsMode::ReadWrite, q) => {
            let q = q.or(caps.default_quota);
            // With no `max-quota`, a manifest may ask up to the built-in
            // default or the operator's `default-quota`, not more: a
            // manifest alone is never an unbounded way to fill the host's
            // disk (found by review: up to 1 PiB was taken as asked).
            let (max, set) = (caps.quota_ceiling(), caps.max_quota.is_some());
            match q {
                Some(q) if q > max => {
                    return Err((
                        format!(
                            "quota of {q} bytes for {} is over the largest allowed",
                            path.display()
                        ),
                        Some(if set {
                            format!(
                                "the host config's `[fs] max-quota` (or a tenant's, or what its `default-quota` implies) is {max} bytes"
                            )
                        } else {
                            format!(
                                "the host config sets no `[fs] max-quota`, so quotas up to {max} bytes are allowed; set it to allow more"
                            )
                        }),
                    ));
                }
                Some(q) => Some(q),
                None if set => Some(max),
                // No quota anywhere: a built-in bound.
                None => Some(DEFAULT_QUOTA),
            }
        }
    };
    let dir = open_dir_nofollow(&path).map_err(|e| {
        (
            format!("cannot open host directory {}: {e}", path.display()),
            None,
        )
    })?;
    let fd_path = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    // The directory opened must be the one resolved: a symlink swapped in
    // between the two is caught here.
    match std::fs::read_link(&fd_path) {
        Ok(actual) if actual == path => {}
        Ok(actual) => {
            return Err((
                format!(
                    "host directory {} changed while it was opened (now {})",
                    path.display(),
                    actual.display()
                ),
                None,
            ));
        }
        Err(e) => {
            return Err((
                format!(
                    "cannot verify host directory {}: {e} (is /proc mounted?)",
                    path.display()
                ),
                None,
            ));
        }
    }
    if let Some(fs) = enforce::kernel_fs(&dir) {
        return Err((
            format!(
                "host directory {} is on the kernel's {fs} file system: its files are the state of the host and its processes, not data",
                path.display()
            ),
            Some("grant a directory of ordinary files".into()),
        ));
    }
    if let Some((point, fs)) = place::kernel_mount_beneath(&path) {
        return Err((
            format!(
                "host directory {} has the kernel's {fs} file system mounted inside it, at {}: its files are the state of the host and its processes, not data",
                path.display(),
                point.display()
            ),
            Some("grant a directory with no such mount beneath it".into()),
        ));
    }
    if r.mode == FsMode::ReadWrite {
        place::remember_writable(&place);
    }
    Ok(PreparedDir {
        guest: r.guest.clone(),
        host: path,
        place,
        mode: r.mode,
        usage: enforce::usage(r.mode, quota, &fd_path, &r.guest),
        dir,
        fd_path,
    })
}

/// Open a directory without following a symlink at its last component.
fn open_dir_nofollow(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Whether two prepared grants may coexist: host paths that overlap are
/// refused unless both are read-only (a read-write grant containing another
/// grant could rewrite what the other tool sees).
///
/// Overlap is by path and by place in the file system (a bind mount of a
/// directory overlaps it). A grant whose path passed through a symlink
/// inside a read-write grant is refused too: that tool could point the
/// symlink elsewhere, and the next load would follow it.
pub(crate) fn overlap(a: &PreparedDir, b: &PreparedDir) -> Option<String> {
    let rw = |d: &PreparedDir| d.mode == FsMode::ReadWrite;
    for (x, y) in [(a, b), (b, a)] {
        if rw(x)
            && let Some(link) = y.place.passes_through(&x.place)
        {
            return Some(format!(
                "the path of host directory {} passes through a symlink in {}, inside the read-write grant of {}: a tool that may write there could point it elsewhere",
                y.host.display(),
                link.display(),
                x.host.display()
            ));
        }
    }
    let over = a.place.is_within(&b.place) || b.place.is_within(&a.place);
    (over && (rw(a) || rw(b))).then(|| {
        format!(
            "host directory {} ({}) overlaps {} ({}), and one of them is read-write",
            b.host.display(),
            b.mode,
            a.host.display(),
            a.mode
        )
    })
}

impl Prepared {
    /// Give a new call's WASI context the prepared directories.
    pub(crate) fn apply(&self, b: &mut wasmtime_wasi::WasiCtxBuilder) -> anyhow::Result<()> {
        for d in &self.dirs {
            let perms = match d.mode {
                FsMode::ReadOnly => wasmtime_wasi::FsPerms::ReadOnly,
                FsMode::ReadWrite => wasmtime_wasi::FsPerms::ReadWrite,
            };
            // Reopens the already-open directory through procfs: the same
            // directory object, never a lookup of the original path.
            b.preopened_dir(&d.fd_path, &d.guest, perms)?;
            debug_assert!(d.dir.as_raw_fd() >= 0);
        }
        Ok(())
    }
}

/// A guest path: absolute, normalized, no `.`/`..`, not `/` itself.
fn check_guest_path(p: &str) -> Result<(), String> {
    // Shown in the operator's log and review: a newline forged a log line
    // (found by review).
    if p.chars().any(crate::audit::forges) {
        return Err(format!(
            "guest path `{}` holds control characters",
            crate::audit::escape_controls(p)
        ));
    }
    if !p.starts_with('/') {
        return Err(format!("guest path `{p}` must be absolute, e.g. `/data`"));
    }
    if p == "/" {
        return Err(
            "guest path `/` would shadow every other grant; mount at a named directory like `/data`"
                .into(),
        );
    }
    if p.split('/')
        .skip(1)
        .any(|c| c.is_empty() || c == "." || c == "..")
        || p.ends_with('/')
    {
        return Err(format!(
            "guest path `{p}` must be normalized (no `.`, `..`, empty or trailing components)"
        ));
    }
    Ok(())
}

fn is_prefix_dir(a: &str, b: &str) -> bool {
    b == a || b.strip_prefix(a).is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(host: &Path, mode: FsMode) -> FsRequest {
        FsRequest {
            guest: "/data".into(),
            host: host.to_owned(),
            mode,
            quota: None,
            span: None,
        }
    }

    /// A review's case: a tenant's `max-open` above the default, over a
    /// host config that named none, won (unset counted as unbounded).
    #[test]
    fn an_unset_max_open_is_the_default_in_an_intersection() {
        let with = |n: Option<usize>| FsCaps {
            max_open: n,
            ..FsCaps::default()
        };
        let max = |a, b| with(a).intersect(&with(b)).max_open;
        assert_eq!(max(None, Some(3000)), Some(DEFAULT_MAX_OPEN));
        assert_eq!(max(Some(3000), None), Some(DEFAULT_MAX_OPEN));
        assert_eq!(max(None, Some(10)), Some(10));
        assert_eq!(max(Some(20), Some(10)), Some(10));
        assert_eq!(max(None, None), None);
    }

    #[test]
    fn a_grant_is_opened_once_and_renaming_its_path_changes_nothing() {
        let t = tempfile::tempdir().unwrap();
        let granted = t.path().join("granted");
        std::fs::create_dir(&granted).unwrap();
        std::fs::write(granted.join("inside.txt"), "inside").unwrap();
        let p = prepare(
            &[req(&granted, FsMode::ReadOnly)],
            &FsCaps::default(),
            &HostState::default(),
        )
        .unwrap();
        // An attacker moves the directory away and plants a symlink to `/`.
        std::fs::rename(&granted, t.path().join("moved")).unwrap();
        std::os::unix::fs::symlink("/", &granted).unwrap();
        let reopened = std::fs::read_dir(&p.dirs[0].fd_path)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect::<Vec<_>>();
        assert_eq!(reopened, vec![std::ffi::OsString::from("inside.txt")]);
    }

    #[test]
    fn symlinks_files_and_missing_paths_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let link = t.path().join("link");
        std::os::unix::fs::symlink("/etc", &link).unwrap();
        let file = t.path().join("f");
        std::fs::write(&file, "").unwrap();
        for (p, needle) in [
            (link, "symbolic link"),
            (file, "not a directory"),
            (t.path().join("missing"), "cannot be granted"),
        ] {
            let e = prepare(
                &[req(&p, FsMode::ReadOnly)],
                &FsCaps::default(),
                &HostState::default(),
            )
            .unwrap_err();
            assert!(e[0].message.contains(needle), "{:?}", e);
        }
    }

    /// A review's case: a side with no `max-quota` allows 1 GiB or its
    /// own `default-quota`; the other side's larger default raised that
    /// (a tenant's 50 GiB default let a manifest ask 40 GiB on a host
    /// that set nothing). Each side's ceiling holds, and a default above
    /// the result is lowered to it.
    #[test]
    fn a_narrower_sides_default_quota_never_raises_the_others_ceiling() {
        let host = FsCaps::default();
        let tenant = FsCaps {
            default_quota: Some(50 << 30),
            ..FsCaps::default()
        };
        for both in [host.intersect(&tenant), tenant.intersect(&host)] {
            assert_eq!(both.max_quota, Some(DEFAULT_QUOTA));
            assert_eq!(both.default_quota, Some(DEFAULT_QUOTA));
        }
        // Set nowhere: nothing set, the built-in applies at load.
        assert_eq!(host.intersect(&host), host);
        // A host's explicit ceiling holds against a tenant's default.
        let big_host = FsCaps {
            max_quota: Some(10 << 30),
            ..FsCaps::default()
        };
        let both = big_host.intersect(&tenant);
        assert_eq!(
            (both.max_quota, both.default_quota),
            (Some(10 << 30), Some(10 << 30))
        );
        // And the same caps twice are the same caps.
        assert_eq!(big_host.intersect(&big_host), big_host);
    }

    #[test]
    fn roots_rw_and_quota_caps_narrow_with_the_setting_named() {
        let t = tempfile::tempdir().unwrap();
        let inside = t.path().join("allowed/tool");
        let outside = t.path().join("elsewhere");
        std::fs::create_dir_all(&inside).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        let caps = FsCaps {
            roots: AllowList::only([t.path().canonicalize().unwrap().join("allowed")]),
            deny_rw: false,
            default_quota: Some(10),
            max_quota: Some(100),
            ..FsCaps::default()
        };
        let hs = HostState::default();
        assert!(prepare(&[req(&inside, FsMode::ReadOnly)], &caps, &hs).is_ok());
        let e = prepare(&[req(&outside, FsMode::ReadOnly)], &caps, &hs).unwrap_err();
        assert!(
            e[0].hint.as_deref().unwrap().contains("[fs] roots"),
            "{e:?}"
        );
        let p = prepare(&[req(&inside, FsMode::ReadWrite)], &caps, &hs).unwrap();
        assert_eq!(
            p.dirs[0].usage.as_ref().map(|q| q.limit()),
            Some(10),
            "the default quota"
        );
        let mut big = req(&inside, FsMode::ReadWrite);
        big.quota = Some(1000);
        let e = prepare(&[big], &caps, &hs).unwrap_err();
        assert!(e[0].hint.as_deref().unwrap().contains("max-quota"), "{e:?}");
        // With no quota anywhere, an rw grant still has one.
        let p = prepare(&[req(&inside, FsMode::ReadWrite)], &FsCaps::default(), &hs).unwrap();
        assert_eq!(
            p.dirs[0].usage.as_ref().map(|q| q.limit()),
            Some(DEFAULT_QUOTA)
        );
        // With no `max-quota`, a manifest's quota is capped by the default
        // (or the operator's larger `default-quota`), never taken as asked.
        let mut huge = req(&inside, FsMode::ReadWrite);
        huge.quota = Some(1 << 50);
        let e = prepare(&[huge.clone()], &FsCaps::default(), &hs).unwrap_err();
        assert!(
            e[0].hint
                .as_deref()
                .unwrap()
                .contains("sets no `[fs] max-quota`"),
            "{e:?}"
        );
        huge.quota = Some(DEFAULT_QUOTA);
        assert!(prepare(&[huge.clone()], &FsCaps::default(), &hs).is_ok());
        huge.quota = Some(4 << 30);
        let roomy = FsCaps {
            default_quota: Some(8 << 30),
            ..FsCaps::default()
        };
        assert!(prepare(&[huge], &roomy, &hs).is_ok());
        let ro_only = FsCaps {
            deny_rw: true,
            ..FsCaps::default()
        };
        let e = prepare(&[req(&inside, FsMode::ReadWrite)], &ro_only, &hs).unwrap_err();
        assert!(e[0].hint.as_deref().unwrap().contains("deny-rw"), "{e:?}");
    }

    #[test]
    fn the_hosts_own_state_is_never_granted() {
        let t = tempfile::tempdir().unwrap();
        let tools = t.path().join("tools");
        let cache = t.path().join("cache");
        std::fs::create_dir_all(tools.join("data")).unwrap();
        std::fs::create_dir_all(cache.join("x")).unwrap();
        let mut hs = HostState::default();
        hs.protect(&tools, "tools directory", true);
        hs.protect(&cache, "compile cache", true);
        let caps = FsCaps::default();
        // Containing the tools directory: refused, ro or rw.
        let e = prepare(&[req(t.path(), FsMode::ReadOnly)], &caps, &hs).unwrap_err();
        assert!(
            e[0].message.contains("contains the host's tools directory"),
            "{e:?}"
        );
        // Nor anything inside it (components, a store's records).
        let e = prepare(&[req(&tools.join("data"), FsMode::ReadOnly)], &caps, &hs).unwrap_err();
        assert!(
            e[0].message
                .contains("is inside the host's tools directory"),
            "{e:?}"
        );
        // Anything inside the cache: refused.
        let e = prepare(&[req(&cache.join("x"), FsMode::ReadOnly)], &caps, &hs).unwrap_err();
        assert!(
            e[0].message.contains("is inside the host's compile cache"),
            "{e:?}"
        );
    }

    #[test]
    fn overlapping_grants_need_both_read_only() {
        let t = tempfile::tempdir().unwrap();
        let outer = t.path().join("outer");
        let inner = outer.join("inner");
        std::fs::create_dir_all(&inner).unwrap();
        let mut a = req(&outer, FsMode::ReadOnly);
        let mut b = req(&inner, FsMode::ReadOnly);
        b.guest = "/b".into();
        let hs = HostState::default();
        assert!(prepare(&[a.clone(), b.clone()], &FsCaps::default(), &hs).is_ok());
        a.mode = FsMode::ReadWrite;
        let e = prepare(&[a, b], &FsCaps::default(), &hs).unwrap_err();
        assert!(e[0].message.contains("overlaps"), "{e:?}");
    }

    #[test]
    fn root_caps_intersect() {
        let a = FsCaps {
            roots: AllowList::only([PathBuf::from("/srv")]),
            ..FsCaps::default()
        };
        let b = FsCaps {
            roots: AllowList::only([PathBuf::from("/srv/tenant-a"), PathBuf::from("/home")]),
            ..FsCaps::default()
        };
        let both = a.intersect(&b).roots;
        let ok = |p: &str| both.allows(|r| Path::new(p).starts_with(r));
        assert!(ok("/srv/tenant-a/x"));
        assert!(!ok("/srv/tenant-b"));
        assert!(!ok("/home/x"));
        assert_eq!(a.intersect(&FsCaps::default()).roots, a.roots);
    }
}
