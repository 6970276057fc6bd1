//! `pack`: turn a tool directory (a manifest, its component, optionally a
//! README.md and an icon) into a package.
//!
//! Packing checks what an installer would refuse anyway, early, on the
//! author's machine: the component is a component and matches the sha256 its
//! manifest pins, the grants parse, directories are absolute. It reads only
//! the files it packs.

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
    let manifest = find_manifest(path)?;
    let origin = manifest.display().to_string();
    let dir = manifest.parent().unwrap_or(Path::new("."));
    let text = read_bounded(&manifest, limits::TOOL_MANIFEST)?;
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
    let comp_path = dir.join(&head.component.path);
    let component = read_bounded(&comp_path, limits::COMPONENT)?;
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
    let readme = dir.join("README.md");
    if readme.is_file() {
        layers.push(NewLayer {
            media_type: README_MEDIA_TYPE.into(),
            title: "README.md".into(),
            data: Bytes::from(read_bounded(&readme, limits::EXTRA)?),
        });
    }
    for (file, mt) in [("icon.png", "image/png"), ("icon.svg", "image/svg+xml")] {
        let p = dir.join(file);
        if p.is_file() {
            layers.push(NewLayer {
                media_type: mt.into(),
                title: file.into(),
                data: Bytes::from(read_bounded(&p, limits::EXTRA)?),
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

fn find_manifest(path: &Path) -> Result<PathBuf> {
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    let entries = std::fs::read_dir(path).map_err(|e| Error::io(path, e))?;
    let mut tomls: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    tomls.sort();
    match tomls.len() {
        1 => Ok(tomls.remove(0)),
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

fn read_bounded(p: &Path, limit: u64) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(p).map_err(|e| Error::io(p, e))?;
    if meta.len() > limit {
        return Err(Error::TooLarge {
            what: p.display().to_string(),
            limit,
        });
    }
    std::fs::read(p).map_err(|e| Error::io(p, e))
}
