//! The host's own input files (manifests, components, the host config, a
//! JWKS file): opened once, without blocking and without becoming a
//! controlling terminal, read only if they are regular files, and only up
//! to a bound checked before anything is read; and those it takes
//! instructions or secrets from, only if no one but its user or root could
//! have chosen or changed them (`trusted_path`, `open_trusted`). Also the
//! one rule of owners and modes (`Keep`, `kept`) for every file and
//! directory the host trusts or keeps: its inputs, the state-key ring, the
//! package store and the compile cache (`trusted_path` adds one of its
//! own, for links: made by the host's user or root).
//!
//! Found by review: a manifest swapped for a FIFO hung a reload (and every
//! reload after it) in a blocking read, a 20 MB manifest took 1.9 GB to
//! check, a sparse 1.5 GB "component" was read whole before its digest
//! was checked, and a tools directory any user could write served their
//! manifests. Must not touch: what the files mean (their parsers).

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The longest manifest read.
pub(crate) const MAX_MANIFEST_BYTES: u64 = 1 << 20;
/// The longest host config or JWKS file read.
pub(crate) const MAX_CONFIG_BYTES: u64 = 16 << 20;
/// The largest component read (a Python component with its interpreter is
/// about 40 MB).
pub(crate) const MAX_COMPONENT_BYTES: u64 = 256 << 20;

/// `path` opened for reading if it is a regular file, with what it was
/// then; links followed unless `follow` is false (a link is then "not a
/// regular file (a symlink)"). Looked at first through a descriptor that
/// opens nothing (`O_PATH`): opening a device runs its driver and opening a
/// FIFO waits for a peer (found by review), so only a regular file is
/// opened for reading, through that descriptor (by its path again, and
/// checked to be the same file, where `/proc` is not mounted).
///
/// Also what `toolhost pack` reads a tool directory's files with.
pub fn open_probed(
    path: &Path,
    follow: bool,
) -> std::io::Result<(std::fs::File, std::fs::Metadata)> {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::io::AsRawFd;
    let nofollow = if follow { 0 } else { libc::O_NOFOLLOW };
    let probe = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | nofollow)
        .open(path)?;
    let meta = probe.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("not a regular file ({})", kind(&meta.file_type())),
        ));
    }
    // (`/proc/self/fd/N` is a link to the probed file itself: followed.)
    let mut reading = std::fs::OpenOptions::new();
    reading
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    let file = match reading.open(format!("/proc/self/fd/{}", probe.as_raw_fd())) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let f = reading
                .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | nofollow)
                .open(path)?;
            let again = f.metadata()?;
            if (again.dev(), again.ino()) != (meta.dev(), meta.ino()) {
                return Err(std::io::Error::other(
                    "the file changed while it was opened",
                ));
            }
            f
        }
        Err(e) => return Err(e),
    };
    Ok((file, meta))
}

/// `path` opened for reading if it is a regular file of at most `max`
/// bytes (links followed), with its length then.
pub(crate) fn open_regular(path: &Path, max: u64) -> std::io::Result<(std::fs::File, u64)> {
    let (file, meta) = open_probed(path, true)?;
    Ok((file, within(&meta, max)?))
}

/// The length of the file `meta` describes, if at most `max`.
fn within(meta: &std::fs::Metadata, max: u64) -> std::io::Result<u64> {
    if meta.len() > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "{} bytes, more than the {} MiB this host reads of such a file",
                meta.len(),
                max >> 20
            ),
        ));
    }
    Ok(meta.len())
}

/// The text of the regular file `path`, of at most `max` bytes.
pub(crate) fn read_text(path: &Path, max: u64) -> std::io::Result<String> {
    let (file, len) = open_regular(path, max)?;
    let mut text = String::with_capacity(len as usize);
    // What it held when opened: a file that grows meanwhile is cut there.
    file.take(len).read_to_string(&mut text)?;
    Ok(text)
}

/// Who besides the host's user may have a hand in a file or directory the
/// host trusts or keeps: one rule of owners and modes, in four strengths
/// ([`kept`]). Each refuses what would let another user change what the
/// host does, or read what it keeps secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// What the host takes instructions from and the operator sets up (a
    /// tools directory, a manifest, the host config, a JWKS or rule file, a
    /// trust anchor): owned by the host's user or root, and writable by
    /// every user only as a sticky directory (`/tmp`: no one renames
    /// another's files there). Its group may write it (sharing with a
    /// group is the operator's choice), and a read-only mount is exempt (a
    /// Kubernetes ConfigMap's directory is mode 0777; a read-only mount is
    /// taken as the operator's word that what is under it does not change).
    Trusted,
    /// A secret the operator sets up (the state-key ring): as [`Keep::Trusted`],
    /// and also readable by no one outside its group and writable by its
    /// owner alone, read-only mount or not (a Kubernetes secret is mounted
    /// `root:fsGroup`, `0440`).
    Secret,
    /// What the host makes and others may read (the package store): the
    /// host's user's, and writable by no one else.
    Owned,
    /// What the host makes and no one else may read (the compile cache and
    /// its MAC key): the host's user's, and open to no one else.
    Private,
}

/// Why a file or directory fails its [`Keep`] rule.
#[derive(Debug, thiserror::Error)]
pub enum NotKept {
    /// Owned by someone the rule does not trust.
    #[error(
        "{} belongs to another user (uid {owner}), who could change it; it must be toolhost's user's ({me}){}",
        shown(path, *dir),
        if *root { " or root's (`chown`, or mount it read-only)" } else { " (`chown`)" }
    )]
    Owner {
        /// The file or directory.
        path: std::path::PathBuf,
        /// Whether it is a directory.
        dir: bool,
        /// Its owner.
        owner: u32,
        /// The host's user.
        me: u32,
        /// Whether root may own it too.
        root: bool,
    },
    /// Open to others beyond the rule.
    #[error("{} {what} (mode {mode:o}): {why}; run `chmod {fix} {}`", shown(path, *dir), path.display())]
    Mode {
        /// The file or directory.
        path: std::path::PathBuf,
        /// Whether it is a directory.
        dir: bool,
        /// Its permission bits.
        mode: u32,
        /// Who may do what the rule refuses.
        what: &'static str,
        /// What they could do with it.
        why: &'static str,
        /// The mode change that mends it.
        fix: &'static str,
    },
}

fn shown(path: &Path, dir: bool) -> String {
    if dir {
        format!("the directory {}", path.display())
    } else {
        path.display().to_string()
    }
}

/// Whether `meta`, of the file or directory `path` (a link is judged by
/// what it names: pass what `symlink_metadata` says to refuse links), is
/// in the hands `keep` allows.
pub fn kept(path: &Path, meta: &std::fs::Metadata, keep: Keep) -> Result<(), NotKept> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let mode = meta.mode() & 0o7777;
    let dir = meta.is_dir();
    let root = matches!(keep, Keep::Trusted | Keep::Secret);
    let refused = |what, why, fix| NotKept::Mode {
        path: path.to_owned(),
        dir,
        mode,
        what,
        why,
        fix,
    };
    // No one writes a read-only mount: who owns it, and who may write it
    // by its mode, cannot change it (a secret's readers still matter).
    let exempt = root && read_only(path);
    if !exempt && meta.uid() != me && !(root && meta.uid() == 0) {
        return Err(NotKept::Owner {
            path: path.to_owned(),
            dir,
            owner: meta.uid(),
            me,
            root,
        });
    }
    match keep {
        Keep::Trusted | Keep::Secret
            if !exempt && mode & 0o002 != 0 && !(dir && mode & 0o1000 != 0) =>
        {
            Err(refused(
                "may be written by every user",
                "they could change what it says, or swap what it holds",
                "o-w",
            ))
        }
        Keep::Secret if mode & 0o026 != 0 => Err(refused(
            "may be read by every user, or written by others than its owner",
            "anyone who reads it can seal session ids and request state (`chmod 640` shares it with a group that runs toolhost)",
            "600",
        )),
        Keep::Owned if mode & 0o022 != 0 => Err(refused(
            "may be written by other users",
            "they could change what the host loads",
            "go-w",
        )),
        Keep::Private if mode & 0o077 != 0 => Err(refused(
            "is open to other users",
            "they could read or change what the host keeps there",
            "go-rwx",
        )),
        _ => Ok(()),
    }
}

/// `path` (a tools directory, a manifest, the host config, a JWKS or rule
/// file, a trust anchor, the state-key ring: what the host takes
/// instructions or secrets from) resolved one name at a time, every link
/// followed, to where it really is; or why it is not in the hands of the
/// host's user. As `sshd`'s StrictModes: every directory passed through
/// (the written path's, each link's, the real path's) must be kept as
/// [`Keep::Trusted`] says, and every link met be made by that user or
/// root; then whoever else could change what the path names cannot,
/// between this check and the read either. The file itself is checked
/// once opened ([`open_trusted`]).
///
/// Found by review: a tools directory of mode 0777 let any local user
/// drop in a manifest granting `/etc`, which `--watch` loaded; a link
/// another user planted in a sticky directory, or anywhere along a chain
/// of links, chose which file was read; and the owner of a directory on
/// the path swapped the file between the check and the read.
pub fn trusted_path(path: &Path) -> Result<std::path::PathBuf, String> {
    use std::os::unix::fs::MetadataExt;
    use std::path::Component;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let written = std::path::absolute(path).map_err(|e| e.to_string())?;
    let mut todo: std::collections::VecDeque<std::ffi::OsString> = Default::default();
    let push_front = |todo: &mut std::collections::VecDeque<std::ffi::OsString>, p: &Path| {
        for c in p.components().rev() {
            todo.push_front(c.as_os_str().to_owned());
        }
    };
    push_front(&mut todo, &written);
    let mut at = std::path::PathBuf::from("/");
    let mut links = 0;
    let dir_ok = |dir: &Path| -> Result<(), String> {
        let m = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        kept(dir, &m, Keep::Trusted).map_err(|e| e.to_string())
    };
    while let Some(name) = todo.pop_front() {
        match Path::new(&name).components().next() {
            Some(Component::RootDir) => at = "/".into(),
            Some(Component::ParentDir) => {
                at.pop();
            }
            Some(Component::Normal(n)) => {
                dir_ok(&at)?;
                let next = at.join(n);
                let m = std::fs::symlink_metadata(&next)
                    .map_err(|e| format!("{}: {e}", next.display()))?;
                if !m.file_type().is_symlink() {
                    at = next;
                    continue;
                }
                if m.uid() != me && m.uid() != 0 && !read_only(&at) {
                    return Err(format!(
                        "{} is a link another user (uid {}) made, who could point it elsewhere; name the file by its own path",
                        next.display(),
                        m.uid()
                    ));
                }
                links += 1;
                if links > 40 {
                    return Err(format!("{}: too many levels of links", path.display()));
                }
                let target =
                    std::fs::read_link(&next).map_err(|e| format!("{}: {e}", next.display()))?;
                push_front(&mut todo, &target);
            }
            _ => {}
        }
    }
    // A directory named (a tools directory) holds what is read.
    if std::fs::metadata(&at).is_ok_and(|m| m.is_dir()) {
        dir_ok(&at)?;
    }
    Ok(at)
}

/// `path` opened for reading as [`open_probed`] opens it, at the place
/// [`trusted_path`] resolved it to, if it is in the hands of the host's
/// user: the opened file itself too (owned by that user or root, and
/// writable by every user only on a read-only file system).
pub fn open_trusted(path: &Path) -> std::io::Result<(std::fs::File, std::fs::Metadata)> {
    let denied = |why: String| std::io::Error::new(std::io::ErrorKind::PermissionDenied, why);
    let real = trusted_path(path).map_err(denied)?;
    let (file, meta) = open_probed(&real, false)?;
    kept(&real, &meta, Keep::Trusted).map_err(|e| denied(e.to_string()))?;
    Ok((file, meta))
}

/// [`read_text`], of a file the host takes instructions or secrets from
/// ([`open_trusted`]).
pub(crate) fn read_trusted_text(path: &Path, max: u64) -> std::io::Result<String> {
    let bytes = read_trusted(path, max)?;
    String::from_utf8(bytes)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.utf8_error()))
}

/// [`open_trusted`]'s whole file, of at most `max` bytes.
pub fn read_trusted(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let (file, meta) = open_trusted(path)?;
    let len = within(&meta, max)?;
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(len).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Whether `p` is on a file system mounted read-only (a Kubernetes
/// ConfigMap's directory is mode 0777, read-only: no one writes it).
fn read_only(p: &Path) -> bool {
    rustix::fs::statvfs(p).is_ok_and(|s| s.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY))
}

fn kind(t: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_symlink() {
        "a symlink"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The four strengths of the one rule, by mode, for a file and a
    /// directory this user owns (the owner checks are the integration
    /// tests', which `chown` as root).
    #[test]
    fn each_keep_refuses_the_modes_it_says() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let file = t.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let dir = t.path().join("d");
        std::fs::create_dir(&dir).unwrap();
        let cases: &[(Keep, u32, bool, bool)] = &[
            // (rule, mode, file kept, directory kept)
            (Keep::Trusted, 0o644, true, true),
            (Keep::Trusted, 0o664, true, true),
            (Keep::Trusted, 0o666, false, false),
            (Keep::Trusted, 0o1777, false, true),
            (Keep::Secret, 0o600, true, true),
            (Keep::Secret, 0o440, true, true),
            (Keep::Secret, 0o644, false, false),
            (Keep::Secret, 0o620, false, false),
            (Keep::Secret, 0o1777, false, false),
            (Keep::Owned, 0o755, true, true),
            (Keep::Owned, 0o775, false, false),
            (Keep::Owned, 0o757, false, false),
            (Keep::Private, 0o700, true, true),
            (Keep::Private, 0o740, false, false),
            (Keep::Private, 0o704, false, false),
        ];
        for &(keep, mode, file_kept, dir_kept) in cases {
            for (path, want) in [(&file, file_kept), (&dir, dir_kept)] {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
                let meta = std::fs::metadata(path).unwrap();
                let got = kept(path, &meta, keep);
                assert_eq!(
                    got.is_ok(),
                    want,
                    "{keep:?} {mode:o} {}: {got:?}",
                    path.display()
                );
                if let Err(e) = got {
                    let e = e.to_string();
                    assert!(
                        e.contains(&format!("(mode {mode:o})")) && e.contains("run `chmod"),
                        "{e}"
                    );
                }
            }
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    }

    #[test]
    fn only_bounded_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("ok.toml");
        std::fs::write(&ok, "a = 1\n").unwrap();
        assert_eq!(read_text(&ok, 64).unwrap(), "a = 1\n");
        let big = dir.path().join("big.toml");
        std::fs::File::create(&big).unwrap().set_len(65).unwrap();
        let e = read_text(&big, 64).unwrap_err().to_string();
        assert!(e.contains("65 bytes"), "{e}");
        // A FIFO: refused at once, not read (a blocking read waits for a
        // writer for good).
        let fifo = dir.path().join("fifo.toml");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read_text(&fifo, 64).unwrap_err().to_string();
        assert!(e.contains("a FIFO"), "{e}");
        let e = read_text(Path::new("/dev/zero"), 64)
            .unwrap_err()
            .to_string();
        assert!(e.contains("a device"), "{e}");
    }
}
