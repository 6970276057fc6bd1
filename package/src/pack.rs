//! `pack`: turn a tool directory (a manifest, its component, optionally a
//! README.md and an icon) into a package.
//!
//! Packing checks what an installer would refuse anyway, early, on the
//! author's machine: the component is a component and matches the sha256 its
//! manifest pins, the grants parse, directories are absolute. It reads only
//! the files it packs, and only files of the tool directory's own: a
//! README.md, icon or component that is a symlink, a hard link, or a file
//! of `/proc` or `/sys` is refused (a cloned directory's `README.md ->
//! ~/.ssh/id_rsa` was packed and pushed, found by review), and so is a
//! component path outside the directory.

use crate::error::{Error, Result};
use crate::grants::{Grants, check_portable};
use crate::oci::{
    COMPONENT_MEDIA_TYPE, Digest, NewLayer, Package, PackageConfig, README_MEDIA_TYPE,
    TOOL_MANIFEST_MEDIA_TYPE, check_name, limits,
};
use bytes::Bytes;
use std::path::{Path, PathBuf};

/// What to pack and how to name it.
#[derive(Debug, Clone, Default)]
pub struct PackOptions {
    /// The package name (default: the manifest's file stem).
    pub name: Option<String>,
    /// The package version (config and `org.opencontainers.image.version`).
    pub version: Option<String>,
}

/// The first 8 bytes of a WebAssembly component (a core module has 01 00 00 00).
const COMPONENT_MAGIC: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

/// Pack `path`: a tool directory holding exactly one `*.toml` manifest, or
/// a manifest file.
pub fn pack(path: &Path, opts: &PackOptions) -> Result<Package> {
    let (manifest, found) = find_manifest(path)?;
    let origin = manifest.display().to_string();
    let dir = manifest.parent().unwrap_or(Path::new("."));
    // A manifest named on the command line is the packer's choice; one
    // found in the directory is the directory's, like the rest.
    let text = read_bounded(
        &manifest,
        limits::TOOL_MANIFEST,
        if found { Kind::Own } else { Kind::Named },
    )?;
    let text = String::from_utf8(text)
        .map_err(|_| Error::format(format!("{origin}: the manifest is not UTF-8")))?;
    // The host's own parser: what does not load here would not load on the
    // installing host either.
    Grants::load(&manifest, &text, &origin)?;
    check_portable(&text, &origin)?;

    #[derive(serde::Deserialize)]
    struct Head {
        component: Comp,
    }
    #[derive(serde::Deserialize)]
    struct Comp {
        path: String,
        sha256: String,
    }
    let head: Head = toml::from_str(&text)
        .map_err(|e| Error::format(format!("{origin}: [component]: {}", e.message().trim())))?;
    let inside = Path::new(&head.component.path);
    if inside.is_absolute()
        || inside
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(Error::format(format!(
            "{origin}: [component] path `{}` is outside the tool directory; a package holds its own component (put it beside the manifest)",
            head.component.path
        )));
    }
    let comp_path = dir.join(inside);
    let component = read_bounded(&comp_path, limits::COMPONENT, Kind::Pinned)?;
    if !component.starts_with(&COMPONENT_MAGIC) {
        return Err(Error::format(format!(
            "{}: not a WebAssembly component (a core module or another file); build it for wasm32-wasip2",
            comp_path.display()
        )));
    }
    let actual = Digest::of(&component);
    let pinned = head.component.sha256.trim().to_ascii_lowercase();
    let pinned = pinned.strip_prefix("sha256:").unwrap_or(&pinned);
    if pinned != actual.hex() {
        return Err(Error::format(format!(
            "{origin}: [component] sha256 is `{}` but {} has {}; update the manifest (sha256sum {})",
            head.component.sha256,
            comp_path.display(),
            actual.hex(),
            head.component.path
        )));
    }

    let name = match &opts.name {
        Some(n) => n.clone(),
        None => manifest
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default(),
    };
    check_name(&name)?;
    let mut layers = vec![
        NewLayer {
            media_type: TOOL_MANIFEST_MEDIA_TYPE.into(),
            title: format!("{name}.toml"),
            data: Bytes::from(text),
        },
        NewLayer {
            media_type: COMPONENT_MEDIA_TYPE.into(),
            title: format!("{name}.wasm"),
            data: Bytes::from(component),
        },
    ];
    // Present if there is anything of that name (a link too: refused
    // below, not skipped without a word).
    let present = |p: &Path| p.symlink_metadata().is_ok();
    let readme = dir.join("README.md");
    if present(&readme) {
        layers.push(NewLayer {
            media_type: README_MEDIA_TYPE.into(),
            title: "README.md".into(),
            data: Bytes::from(read_bounded(&readme, limits::EXTRA, Kind::Own)?),
        });
    }
    for (file, mt) in [("icon.png", "image/png"), ("icon.svg", "image/svg+xml")] {
        let p = dir.join(file);
        if present(&p) {
            layers.push(NewLayer {
                media_type: mt.into(),
                title: file.into(),
                data: Bytes::from(read_bounded(&p, limits::EXTRA, Kind::Own)?),
            });
            break;
        }
    }
    Package::build(
        PackageConfig {
            name,
            version: opts.version.clone(),
        },
        layers,
    )
}

/// The manifest to pack, and whether it was found in a directory (not
/// named).
fn find_manifest(path: &Path) -> Result<(PathBuf, bool)> {
    if path.is_file() {
        return Ok((path.to_path_buf(), false));
    }
    let entries = std::fs::read_dir(path).map_err(|e| Error::io(path, e))?;
    let mut tomls: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    tomls.sort();
    match tomls.len() {
        1 => Ok((tomls.remove(0), true)),
        0 => Err(Error::format(format!(
            "{}: no tool manifest (*.toml) in this directory",
            path.display()
        ))),
        _ => Err(Error::format(format!(
            "{}: {} manifests ({}); pack one at a time by naming its manifest",
            path.display(),
            tomls.len(),
            tomls
                .iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Whose file [`read_bounded`] reads.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// Named by the packer: as named, links followed.
    Named,
    /// The component: not a symlink (its bytes are checked against the
    /// digest its manifest pins, so a hard link shows nothing unpinned).
    Pinned,
    /// The directory's own (README.md, an icon, a manifest found there):
    /// not a symlink, not a file with other names (a hard link to one
    /// outside it).
    Own,
}

/// The bytes of `p`, at most `limit` of them: a regular file, opened
/// without blocking, not a file of `/proc` or `/sys` (whose sizes say
/// nothing: `/proc/self/pagemap` is 256 GiB of reads), and as `kind` says.
fn read_bounded(p: &Path, limit: u64, kind: Kind) -> Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::io::AsRawFd;
    let refuse = |why: &str| {
        Error::format(format!(
            "{}: {why}; a package holds the tool directory's own files (copy it in)",
            p.display()
        ))
    };
    // Opened only if a regular file, looked at first through a descriptor
    // that opens nothing (a device is never opened, a FIFO never waited on);
    // the link itself unless named.
    let (file, meta) =
        toolhost::files::open_probed(p, kind == Kind::Named).map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidInput => refuse(&e.to_string()),
            _ => Error::io(p, e),
        })?;
    if kind == Kind::Own && meta.nlink() > 1 {
        return Err(refuse("a file with other names too (a hard link)"));
    }
    // SAFETY: fstatfs writes only the struct it is given.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut fs) } == 0 {
        const PROC: i64 = 0x9fa0;
        const SYSFS: i64 = 0x6265_6572;
        #[allow(clippy::unnecessary_cast, reason = "f_type's width differs by target")]
        let fs_type = fs.f_type as i64;
        if fs_type == PROC || fs_type == SYSFS {
            return Err(refuse("a file of /proc or /sys"));
        }
    }
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(p, e))?;
    if bytes.len() as u64 > limit {
        return Err(Error::TooLarge {
            what: p.display().to_string(),
            limit,
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory whose `tool/` holds the built echo tool, and
    /// `elsewhere/` a copy of its component; `None` before `make tools`.
    fn echo_dir() -> Option<tempfile::TempDir> {
        let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../build/tools");
        let d = tempfile::tempdir().unwrap();
        for sub in ["tool", "elsewhere"] {
            std::fs::create_dir(d.path().join(sub)).unwrap();
            for f in ["echo.toml", "echo.wasm"] {
                std::fs::copy(built.join(f), d.path().join(sub).join(f)).ok()?;
            }
        }
        Some(d)
    }

    /// A review's case: a cloned tool directory's `README.md ->
    /// ~/.ssh/id_rsa` (or `icon.svg -> /proc/self/environ`, or a hard link
    /// to a secret) was packed, and pushed. Only the directory's own files
    /// are: each of these is refused, naming the file.
    #[test]
    fn only_the_directorys_own_files_are_packed() {
        let Some(scratch) = echo_dir() else {
            panic!("run `make tools` first");
        };
        let d = scratch.path().join("tool");
        let d = &d;
        assert!(pack(d, &PackOptions::default()).is_ok());
        let secret = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(secret.path(), "-----BEGIN PRIVATE KEY-----").unwrap();
        let refused = |why: &str| {
            let e = pack(d, &PackOptions::default()).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
            assert!(!e.contains("PRIVATE KEY"), "{e}");
        };
        let readme = d.join("README.md");
        std::os::unix::fs::symlink(secret.path(), &readme).unwrap();
        refused("README.md: not a regular file (a symlink)");
        std::fs::remove_file(&readme).unwrap();
        std::fs::hard_link(secret.path(), &readme).unwrap();
        refused("README.md: a file with other names too");
        std::fs::remove_file(&readme).unwrap();
        std::os::unix::fs::symlink("/proc/self/environ", d.join("icon.svg")).unwrap();
        refused("icon.svg: not a regular file (a symlink)");
        std::fs::remove_file(d.join("icon.svg")).unwrap();
        // A component outside the directory.
        let manifest = d.join("echo.toml");
        let text = std::fs::read_to_string(&manifest).unwrap();
        std::fs::write(
            &manifest,
            text.replace("path = \"echo.wasm\"", "path = \"../elsewhere/echo.wasm\""),
        )
        .unwrap();
        refused("is outside the tool directory");
    }

    #[test]
    fn a_proc_file_is_not_read() {
        let e = read_bounded(Path::new("/proc/self/pagemap"), 1 << 20, Kind::Named)
            .unwrap_err()
            .to_string();
        assert!(e.contains("a file of /proc or /sys"), "{e}");
    }
}
