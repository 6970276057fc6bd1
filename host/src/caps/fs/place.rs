//! Where a host directory is, for the load-time checks that keep grants
//! apart from each other and from the host's own state: its canonical path,
//! its place in its file system, and the symlinks its path passed through.
//!
//! Canonical paths alone miss two aliases:
//! - a bind mount shows one directory under two paths; the place in the
//!   file system (the device, and the path from the file system's root, read
//!   from `/proc/self/mountinfo`) is the same under both;
//! - a grant whose path passes through a symlink is resolved at each load:
//!   if the symlink lies inside another tool's read-write grant, that tool
//!   can point it elsewhere before the next reload.
//!
//! Must not touch: opening or granting anything (see `prepare_one`); this
//! only describes paths.

use std::path::{Component, Path, PathBuf};

/// Where a directory is (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Place {
    /// The canonical path (as resolved; as written when it does not exist).
    pub(crate) path: PathBuf,
    /// Its file system's device (`major:minor`) and its path from that
    /// file system's root; `None` when `/proc/self/mountinfo` cannot be
    /// read.
    fs: Option<(String, PathBuf)>,
    /// The directories holding the symlinks its path passed through (when
    /// written, before it was resolved), each with its place in its file
    /// system.
    via: Vec<(PathBuf, Option<(String, PathBuf)>)>,
}

impl Place {
    /// The place of `written` (absolute), resolved to `canonical`.
    pub(crate) fn of(written: &Path, canonical: &Path) -> Place {
        let mounts = mountinfo();
        let fs = |p: &Path| {
            mounts
                .as_deref()
                .and_then(|m| in_file_system(m, p, mount_id(p)))
        };
        Place {
            path: canonical.to_path_buf(),
            fs: fs(canonical),
            via: symlinks_on_the_way(written)
                .into_iter()
                .map(|v| {
                    let at = fs(&v);
                    (v, at)
                })
                .collect(),
        }
    }

    /// Whether this is `other` or inside it, by path or by place in the
    /// file system (a bind mount of it or of a directory inside it).
    pub(crate) fn is_within(&self, other: &Place) -> bool {
        within(&self.path, self.fs.as_ref(), other)
    }

    /// A symlink this path passed through that lies inside `other` (by
    /// path or by place: a bind mount of it), if any: whoever may write
    /// `other` may point it elsewhere.
    pub(crate) fn passes_through(&self, other: &Place) -> Option<&Path> {
        self.via
            .iter()
            .find(|(v, fs)| within(v, fs.as_ref(), other))
            .map(|(v, _)| v.as_path())
    }
}

/// Every directory granted read-write since the process started: a grant
/// passing through a symlink inside one is refused even when that grant is
/// not loaded now (its tenant removed, its load failed), since a symlink
/// its tool planted while it was stays there. Process-wide, so shared by
/// every `Core` in the process: a directory one of them granted
/// read-write is one a tool could write, whichever core ran it.
static EVER_WRITABLE: std::sync::Mutex<Vec<Place>> = std::sync::Mutex::new(Vec::new());

/// Note a directory granted read-write (see [`EVER_WRITABLE`]).
pub(crate) fn remember_writable(p: &Place) {
    let mut w = EVER_WRITABLE.lock().unwrap_or_else(|e| e.into_inner());
    if !w.iter().any(|o| o.path == p.path) {
        w.push(p.clone());
    }
}

/// A symlink `p`'s path passed through inside a directory granted
/// read-write at some time in this process, and that directory.
pub(crate) fn through_writable(p: &Place) -> Option<(PathBuf, PathBuf)> {
    let w = EVER_WRITABLE.lock().unwrap_or_else(|e| e.into_inner());
    w.iter().find_map(|rw| {
        p.passes_through(rw)
            .map(|l| (l.to_path_buf(), rw.path.clone()))
    })
}

/// A directory granted read-write at some time in this process that holds
/// `file` (as written or resolved, or a symlink on its way), or lies inside
/// the directory `file` resolves into: a program the host runs from there
/// is one a tool could have rewritten.
#[cfg(feature = "agent")]
pub(crate) fn writable_around(file: &Path) -> Option<PathBuf> {
    let written = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
    // Resolved as far as it exists: a file not made yet under a symlinked
    // ancestor (`/home -> /var/home`) is where its resolved directory is
    // (found by the second review of the fix).
    let canonical = resolved_as_far_as_it_exists(&written);
    let at = Place::of(&written, &canonical);
    let home = canonical
        .parent()
        .map(|d| Place::of(d, d))
        .unwrap_or_else(|| at.clone());
    let w = EVER_WRITABLE.lock().unwrap_or_else(|e| e.into_inner());
    w.iter()
        .find(|rw| at.is_within(rw) || at.passes_through(rw).is_some() || rw.is_within(&home))
        .map(|rw| rw.path.clone())
}

/// Whether `path` (at `fs` in its file system) is `other` or inside it.
fn within(path: &Path, fs: Option<&(String, PathBuf)>, other: &Place) -> bool {
    path.starts_with(&other.path)
        || matches!(
            (fs, &other.fs),
            (Some((d, p)), Some((od, op))) if d == od && p.starts_with(op)
        )
}

/// The text of `/proc/self/mountinfo`, read at most once a second: a load
/// places every grant and protected path, and a host with many mounts
/// should not parse the table for each.
fn mountinfo() -> Option<std::sync::Arc<str>> {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};
    static CACHE: Mutex<Option<(Instant, Arc<str>)>> = Mutex::new(None);
    let mut c = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((at, text)) = c.as_ref()
        && at.elapsed() < Duration::from_secs(1)
    {
        return Some(text.clone());
    }
    let text: Arc<str> = std::fs::read_to_string("/proc/self/mountinfo").ok()?.into();
    *c = Some((Instant::now(), text.clone()));
    Some(text)
}

/// `path` (absolute) with its longest existing ancestor resolved and the
/// rest kept as written: a protected path that does not exist yet (an
/// agent's `.claude/` before its first session) is where it will be
/// created, even under a symlinked parent.
pub(crate) fn resolved_as_far_as_it_exists(path: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut at = path;
    loop {
        if let Ok(real) = at.canonicalize() {
            return rest.iter().rev().fold(real, |p, c| p.join(c));
        }
        match (at.parent(), at.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                at = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// The mount `path` is on, as the kernel says (`statx` with
/// `STATX_MNT_ID`, Linux 5.8 and later); `None` if it cannot say (the path
/// does not exist, an older kernel).
fn mount_id(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: an all-zero `statx` is a valid value of that plain C struct.
    let mut buf: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a buffer of the type `statx` fills,
    // both live for the call.
    let r = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
            libc::STATX_MNT_ID,
            &mut buf,
        )
    };
    (r == 0 && buf.stx_mask & libc::STATX_MNT_ID != 0).then_some(buf.stx_mnt_id)
}

/// The device and the path from its file system's root of `path`
/// (canonical), from the text of `/proc/self/mountinfo`: the mount whose ID
/// is `id` when the kernel gave one, else the mount with the longest mount
/// point `path` is under, the last listed of those (a later mount hides an
/// earlier one at the same point; one on a parent directory that hides a
/// deeper mount only the ID tells).
fn in_file_system(mountinfo: &str, path: &Path, id: Option<u64>) -> Option<(String, PathBuf)> {
    if let Some(id) = id {
        let id = id.to_string();
        let by_id = mounts(mountinfo).find_map(|m| {
            let rest = path.strip_prefix(&m.point).ok().filter(|_| m.id == id)?;
            Some((m.dev.to_string(), m.root.join(rest)))
        });
        if by_id.is_some() {
            return by_id;
        }
    }
    let mut best: Option<(usize, Mount<'_>, PathBuf)> = None;
    for m in mounts(mountinfo) {
        let Ok(rest) = path.strip_prefix(&m.point) else {
            continue;
        };
        let depth = m.point.components().count();
        if best.as_ref().is_none_or(|b| depth >= b.0) {
            let rest = rest.to_path_buf();
            best = Some((depth, m, rest));
        }
    }
    best.map(|(_, m, rest)| (m.dev.to_string(), m.root.join(rest)))
}

/// One line of `/proc/self/mountinfo`: ID, parent ID, major:minor, root,
/// mount point, options, optional fields, `-`, file system type, ...
struct Mount<'a> {
    id: &'a str,
    dev: &'a str,
    root: PathBuf,
    point: PathBuf,
    fs: &'a str,
}

/// The mounts `mountinfo` lists (lines it cannot read are left out).
fn mounts(mountinfo: &str) -> impl Iterator<Item = Mount<'_>> {
    mountinfo.lines().filter_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        let f: Vec<&str> = mount.split(' ').collect();
        Some(Mount {
            id: f.first()?,
            dev: f.get(2)?,
            root: PathBuf::from(unescape(f.get(3)?)),
            point: PathBuf::from(unescape(f.get(4)?)),
            fs: fs.split(' ').next()?,
        })
    })
}

/// The first kernel interface file system
/// ([`KERNEL_FILE_SYSTEMS`](super::enforce::KERNEL_FILE_SYSTEMS)) mounted
/// strictly beneath `dir` (canonical): its mount point and type. A grant
/// of a directory with one inside is refused at load (`prepare_one`):
/// `open-at` refuses what is opened on one, but creating a directory,
/// renaming, `readlink` and `stat` go to wasmtime-wasi, which walks into
/// nested mounts as into any directory (`mkdir` in a cgroup mount makes a
/// cgroup; found by review).
pub(super) fn kernel_mount_beneath(dir: &Path) -> Option<(PathBuf, String)> {
    kernel_mount_in(&mountinfo()?, dir)
}

fn kernel_mount_in(mountinfo: &str, dir: &Path) -> Option<(PathBuf, String)> {
    mounts(mountinfo).find_map(|m| {
        let kernel = super::enforce::KERNEL_FILE_SYSTEMS
            .iter()
            .any(|(_, name)| *name == m.fs);
        (kernel && m.point != dir && m.point.starts_with(dir)).then(|| (m.point, m.fs.to_string()))
    })
}

/// A mountinfo field with its octal escapes (`\040` for a space) undone.
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let code = b.get(i + 1..i + 4).and_then(|o| {
            std::str::from_utf8(o)
                .ok()
                .and_then(|o| u8::from_str_radix(o, 8).ok())
        });
        match (b[i], code) {
            (b'\\', Some(c)) => {
                out.push(c);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The directories (canonical) holding each symlink met while resolving
/// `written` component by component, as the kernel does; at most 40
/// symlinks are followed (the kernel's limit), after which the rest is
/// not looked at (the path then fails to resolve anyway).
fn symlinks_on_the_way(written: &Path) -> Vec<PathBuf> {
    let mut via = Vec::new();
    let mut at = PathBuf::from("/");
    let mut todo: std::collections::VecDeque<PathBuf> = written
        .components()
        .map(|c| PathBuf::from(c.as_os_str()))
        .collect();
    let mut hops = 0;
    while let Some(c) = todo.pop_front() {
        match c.components().next() {
            Some(Component::RootDir) => at = PathBuf::from("/"),
            Some(Component::ParentDir) => {
                at.pop();
            }
            Some(Component::Normal(name)) => {
                let next = at.join(name);
                match std::fs::read_link(&next) {
                    Ok(target) if hops < 40 => {
                        hops += 1;
                        via.push(at.clone());
                        for t in target.components().rev() {
                            todo.push_front(PathBuf::from(t.as_os_str()));
                        }
                    }
                    _ => at = next,
                }
            }
            _ => {}
        }
    }
    via
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bind_mount_is_the_same_place_in_its_file_system() {
        // /srv/data is bound at /mnt/alias; /var is another file system.
        let info = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 8:1 /srv/data /mnt/alias rw,relatime shared:1 - ext4 /dev/sda1 rw
31 22 8:2 / /var rw,relatime shared:2 - ext4 /dev/sda2 rw
32 22 8:1 /srv/with\\040space /mnt/sp rw - ext4 /dev/sda1 rw
";
        let at = |p: &str| in_file_system(info, Path::new(p), None).unwrap();
        assert_eq!(at("/srv/data/x"), ("8:1".into(), "/srv/data/x".into()));
        assert_eq!(at("/mnt/alias/x"), ("8:1".into(), "/srv/data/x".into()));
        assert_eq!(at("/var/lib"), ("8:2".into(), "/lib".into()));
        assert_eq!(at("/mnt/sp"), ("8:1".into(), "/srv/with space".into()));
        let place = |p: &str| Place {
            path: p.into(),
            fs: Some(at(p)),
            via: Vec::new(),
        };
        // A symlink in a bind mount of a directory lies in that directory.
        let through = Place {
            path: "/elsewhere/x".into(),
            fs: None,
            via: vec![("/mnt/alias".into(), Some(at("/mnt/alias")))],
        };
        assert!(through.passes_through(&place("/srv/data")).is_some());
        assert!(through.passes_through(&place("/var")).is_none());
        assert!(place("/mnt/alias/x").is_within(&place("/srv/data")));
        assert!(place("/srv/data/x").is_within(&place("/mnt/alias")));
        assert!(!place("/var/lib").is_within(&place("/srv")));
        assert!(!place("/srv").is_within(&place("/mnt/alias")));
    }

    /// Found by review: a protected path that did not exist yet under a
    /// symlinked parent (`~/.claude` with `/home` a symlink) was compared
    /// as written, so a grant of the resolved home did not contain it.
    #[test]
    fn a_path_not_made_yet_is_placed_where_it_will_be() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("real")).unwrap();
        std::os::unix::fs::symlink(root.join("real"), root.join("home")).unwrap();
        assert_eq!(
            resolved_as_far_as_it_exists(&root.join("home/.claude/settings.json")),
            root.join("real/.claude/settings.json")
        );
    }

    /// Found by review: a mount on a parent directory that hides a deeper
    /// mount fools the longest prefix; the kernel's mount ID does not.
    #[test]
    fn the_mount_the_kernel_names_wins_over_the_longest_prefix() {
        let info = "\
22 1 8:1 / / rw - ext4 /dev/sda1 rw
31 22 8:1 /srv/data /mnt/alias rw - ext4 /dev/sda1 rw
32 22 8:3 / /mnt rw - ext4 /dev/sdc1 rw
";
        let p = Path::new("/mnt/alias/x");
        assert_eq!(
            in_file_system(info, p, Some(32)),
            Some(("8:3".into(), "/alias/x".into()))
        );
        // Without the ID, the hidden bind mount is taken.
        assert_eq!(
            in_file_system(info, p, None),
            Some(("8:1".into(), "/srv/data/x".into()))
        );
        // A real path: the mount the kernel names (Linux 5.8 and later) is
        // in mountinfo.
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        if let Some(id) = mount_id(Path::new("/")) {
            assert!(in_file_system(&text, Path::new("/"), Some(id)).is_some());
        }
    }

    #[test]
    fn the_symlinks_a_path_passes_through_are_found_where_they_lie() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().canonicalize().unwrap();
        let (rw, real) = (root.join("rw"), root.join("real"));
        std::fs::create_dir_all(real.join("data")).unwrap();
        std::fs::create_dir(&rw).unwrap();
        std::os::unix::fs::symlink(&real, rw.join("link")).unwrap();
        std::os::unix::fs::symlink("link/data", rw.join("rel")).unwrap();
        assert_eq!(symlinks_on_the_way(&rw.join("link/data")), vec![rw.clone()]);
        // A relative link to another link: both are in `rw`.
        assert_eq!(
            symlinks_on_the_way(&rw.join("rel")),
            vec![rw.clone(), rw.clone()]
        );
        assert!(symlinks_on_the_way(&real.join("data")).is_empty());
        let p = Place::of(&rw.join("link/data"), &real.join("data"));
        let granted = Place::of(&rw, &rw);
        assert_eq!(p.passes_through(&granted), Some(rw.as_path()));
        assert!(!p.is_within(&granted), "resolved, it is elsewhere");
        // A loop ends.
        std::os::unix::fs::symlink("loop", rw.join("loop")).unwrap();
        assert_eq!(symlinks_on_the_way(&rw.join("loop")).len(), 40);
    }
    #[test]
    fn a_kernel_mount_beneath_a_directory_is_found_by_its_mountinfo() {
        let info = "22 27 0:21 / /proc rw,relatime - proc proc rw
24 27 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw
25 24 0:23 / /dev/pts rw - devpts devpts rw
30 27 0:30 / /srv/my\\040data/cg rw - cgroup2 cgroup2 rw
31 27 0:31 / /srv/plain rw - ext4 /dev/sda1 rw
";
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(
            kernel_mount_in(info, &p("/dev")),
            Some((p("/dev/pts"), "devpts".into()))
        );
        assert_eq!(
            kernel_mount_in(info, &p("/srv/my data")),
            Some((p("/srv/my data/cg"), "cgroup2".into()))
        );
        // Not beneath: the mount itself (checked by `kernel_fs`), a sibling
        // sharing a prefix, an ordinary file system.
        assert_eq!(kernel_mount_in(info, &p("/proc")), None);
        assert_eq!(kernel_mount_in(info, &p("/de")), None);
        assert_eq!(
            kernel_mount_in(info, &p("/srv")).map(|m| m.1),
            Some("cgroup2".into())
        );
        assert_eq!(kernel_mount_in(info, &p("/srv/plain")), None);
    }
}
