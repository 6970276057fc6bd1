//! The host's own input files (manifests, components, the host config, a
//! JWKS file): opened once, without blocking and without becoming a
//! controlling terminal, read only if they are regular files, and only up
//! to a bound checked before anything is read.
//!
//! Found by review: a manifest swapped for a FIFO hung a reload (and every
//! reload after it) in a blocking read, a 20 MB manifest took 1.9 GB to
//! check, and a sparse 1.5 GB "component" was read whole before its digest
//! was checked. Must not touch: what the files mean (their parsers).

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
    Ok((file, meta.len()))
}

/// The text of the regular file `path`, of at most `max` bytes.
pub(crate) fn read_text(path: &Path, max: u64) -> std::io::Result<String> {
    let (file, len) = open_regular(path, max)?;
    let mut text = String::with_capacity(len as usize);
    // What it held when opened: a file that grows meanwhile is cut there.
    file.take(len).read_to_string(&mut text)?;
    Ok(text)
}

/// Why `path` (a tools directory, a manifest, the host config, a JWKS or
/// rule file, a trust anchor, the state-key ring: what the host takes
/// instructions or secrets from) is not in the hands of the host's user,
/// if it is not. The file it names (links followed) must be owned by that
/// user or root; no link on the way to it may be another user's; and
/// neither it nor a directory above it, where it is written or where it
/// is, may be writable by every user (a sticky directory such as `/tmp`
/// excepted: others cannot rename what is in it). A read-only file system
/// is exempt (a Kubernetes ConfigMap's directory is mode 0777, a bind
/// mount `:ro` keeps its files' owners). A group may write them: sharing
/// with a group is the operator's choice, but a file a group member made
/// is theirs, and refused. Found by review: a tools directory of mode 0777
/// let any local user drop in a manifest granting `/etc`, which `--watch`
/// loaded; a link another user planted in a sticky directory did the same.
pub fn untrusted(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let foreign = |uid: u32| uid != me && uid != 0;
    let written = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let real = std::fs::canonicalize(&written).ok()?;
    let meta = std::fs::metadata(&real).ok()?;
    if foreign(meta.uid()) && !read_only(&real) {
        return Some(format!(
            "{} belongs to another user (uid {}), who could change what it says; it must be toolhost's user's ({me}) or root's",
            real.display(),
            meta.uid()
        ));
    }
    // Every link on the written path, and every directory on both paths.
    for p in written.ancestors() {
        if let Ok(m) = std::fs::symlink_metadata(p)
            && m.file_type().is_symlink()
            && foreign(m.uid())
        {
            return Some(format!(
                "{} is a link another user (uid {}) made, who could point it elsewhere",
                p.display(),
                m.uid()
            ));
        }
    }
    for p in written.ancestors().chain(real.ancestors()) {
        if let Ok(m) = std::fs::metadata(p) {
            let sticky_dir = m.is_dir() && m.mode() & 0o1000 != 0;
            if m.mode() & 0o002 != 0 && !sticky_dir && !read_only(p) {
                return Some(format!(
                    "{} may be written by every user (mode {:o}), who could change what toolhost reads from {}; run `chmod o-w {}`",
                    p.display(),
                    m.mode() & 0o7777,
                    path.display(),
                    p.display()
                ));
            }
        }
    }
    None
}

/// [`read_text`], of a file the host takes instructions or secrets from:
/// refused if it is not in the hands of the host's user ([`untrusted`]).
pub(crate) fn read_trusted_text(path: &Path, max: u64) -> std::io::Result<String> {
    if let Some(why) = untrusted(path) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            why,
        ));
    }
    read_text(path, max)
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
