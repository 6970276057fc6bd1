//! The host's own input files (manifests, components, the host config, a
//! JWKS file): opened once, without blocking and without becoming a
//! controlling terminal, read only if they are regular files, and only up
//! to a bound checked before anything is read; and those it takes
//! instructions or secrets from, only if no one but its user or root could
//! have chosen or changed them (`trusted_path`, `open_trusted`).
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

/// `path` (a tools directory, a manifest, the host config, a JWKS or rule
/// file, a trust anchor, the state-key ring: what the host takes
/// instructions or secrets from) resolved one name at a time, every link
/// followed, to where it really is; or why it is not in the hands of the
/// host's user. As `sshd`'s StrictModes: every directory passed through
/// (the written path's, each link's, the real path's) and every link met
/// must be owned by that user or root, and no such directory may be
/// writable by every user unless sticky (`/tmp`: others cannot rename
/// what is in it); then whoever else could change what the path names
/// cannot, between this check and the read either. The file itself is
/// checked once opened ([`open_trusted`]). A read-only file system is
/// exempt: a Kubernetes ConfigMap's directory is mode 0777, a bind mount
/// `:ro` keeps its files' owners (a read-only mount is taken as the
/// operator's word that what is under it does not change). A group may
/// write them: sharing with a group is the operator's choice.
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
        if read_only(dir) {
            return Ok(());
        }
        if m.uid() != me && m.uid() != 0 {
            return Err(format!(
                "the directory {} belongs to another user (uid {}), who could swap what it holds; it must be toolhost's user's ({me}) or root's (`chown`, or mount it read-only)",
                dir.display(),
                m.uid()
            ));
        }
        if m.mode() & 0o002 != 0 && m.mode() & 0o1000 == 0 {
            return Err(format!(
                "the directory {} may be written by every user (mode {:o}), who could swap what it holds; run `chmod o-w {}`",
                dir.display(),
                m.mode() & 0o7777,
                dir.display()
            ));
        }
        Ok(())
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
    use std::os::unix::fs::MetadataExt;
    let denied = |why: String| std::io::Error::new(std::io::ErrorKind::PermissionDenied, why);
    let real = trusted_path(path).map_err(denied)?;
    let (file, meta) = open_probed(&real, false)?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if !read_only(&real) {
        if meta.uid() != me && meta.uid() != 0 {
            return Err(denied(format!(
                "{} belongs to another user (uid {}), who could change what it says; it must be toolhost's user's ({me}) or root's (`chown`, or mount it read-only)",
                real.display(),
                meta.uid()
            )));
        }
        if meta.mode() & 0o002 != 0 {
            return Err(denied(format!(
                "{} may be written by every user (mode {:o}); run `chmod o-w {}`",
                real.display(),
                meta.mode() & 0o7777,
                real.display()
            )));
        }
    }
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
