//! The package format: an OCI image manifest in the ORAS artifact style
//! (`artifactType`, a config blob, one layer per file with its own media
//! type), content-addressed by sha256; and the OCI image layout (a directory
//! or a tar) that holds one package and its signatures as a file.
//!
//! This module owns media types, digests, size bounds and the layout's
//! on-disk shape. It verifies what it reads (every blob against its digest
//! and declared size) but decides nothing about trust or grants, and never
//! touches the network.

use crate::error::{Error, Result};
use bytes::Bytes;
use oci_client::manifest::{ImageIndexEntry, OciDescriptor, OciImageIndex, OciImageManifest};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Read;
use std::path::Path;

/// `artifactType` of a toolhost tool package.
pub const ARTIFACT_TYPE: &str = "application/vnd.toolhost.tool.v1";
/// The package's config blob: [`PackageConfig`] as JSON.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.toolhost.tool.config.v1+json";
/// The tool's manifest (TOML), as written by its author.
pub const TOOL_MANIFEST_MEDIA_TYPE: &str = "application/vnd.toolhost.tool.manifest.v1+toml";
/// The component: the CNCF wasm OCI layer type (also used by wkg and wash).
pub const COMPONENT_MEDIA_TYPE: &str = oci_client::manifest::WASM_LAYER_MEDIA_TYPE;
/// An optional README.
pub const README_MEDIA_TYPE: &str = "text/markdown";
/// Optional icons.
pub const ICON_MEDIA_TYPES: &[&str] = &["image/png", "image/svg+xml"];
/// An OCI image manifest.
pub const MANIFEST_MEDIA_TYPE: &str = oci_client::manifest::OCI_IMAGE_MEDIA_TYPE;
/// An OCI image index (the layout's `index.json`).
pub const INDEX_MEDIA_TYPE: &str = oci_client::manifest::OCI_IMAGE_INDEX_MEDIA_TYPE;
/// ORAS/OCI annotation naming a layer's file.
pub const TITLE_ANNOTATION: &str = "org.opencontainers.image.title";
/// OCI layout annotation naming a manifest (a tag).
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// OCI annotation for the package's version.
pub const VERSION_ANNOTATION: &str = "org.opencontainers.image.version";

/// Upper bounds on what a package may make us read. A hostile source can
/// declare any size; nothing larger than these is ever buffered.
pub mod limits {
    /// An OCI manifest (package or signature).
    pub const MANIFEST: u64 = 1 << 20;
    /// The package config blob.
    pub const CONFIG: u64 = 64 << 10;
    /// The tool's TOML manifest.
    pub const TOOL_MANIFEST: u64 = 1 << 20;
    /// The component.
    pub const COMPONENT: u64 = 256 << 20;
    /// README and icon, each.
    pub const EXTRA: u64 = 1 << 20;
    /// One signature payload.
    pub const SIGNATURE_PAYLOAD: u64 = 64 << 10;
    /// Signatures considered per package.
    pub const SIGNATURES: usize = 32;
    /// A whole layout file (tar) read from disk or an `https://` URL.
    pub const LAYOUT: u64 = COMPONENT + 16 * MANIFEST;
}

/// A content digest, always `sha256:<64 lower-case hex>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Digest {
        Digest(format!("sha256:{}", hex::encode(Sha256::digest(data))))
    }

    /// Parse `sha256:<hex>`; anything else (another algorithm, upper case,
    /// a short or non-hex value) is refused, so a digest can be used as a
    /// file name safely.
    pub fn parse(s: &str) -> Result<Digest> {
        let hex = s.strip_prefix("sha256:").ok_or_else(|| {
            Error::format(format!(
                "digest `{s}` is not `sha256:<64 hex digits>` (only sha256 is accepted)"
            ))
        })?;
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(Error::format(format!(
                "digest `{s}` is not `sha256:<64 lower-case hex digits>`"
            )));
        }
        Ok(Digest(s.to_string()))
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    /// The digest as `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `sha256:0123456789ab`: for humans.
    pub fn short(&self) -> &str {
        &self.0[..("sha256:".len() + 12)]
    }

    /// The cosign signature tag for an artifact with this digest.
    pub fn signature_tag(&self) -> String {
        format!("sha256-{}.sig", self.hex())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Check `data` against `desc` (size and digest); `what` names it in errors.
pub fn verify_blob(desc: &OciDescriptor, data: &[u8], what: &str) -> Result<()> {
    let expected = Digest::parse(&desc.digest)?;
    if desc.size < 0 || data.len() as u64 != desc.size as u64 {
        return Err(Error::Tampered {
            what: what.to_string(),
            expected: expected.to_string(),
            actual: format!("{} bytes where {} were declared", data.len(), desc.size),
        });
    }
    let actual = Digest::of(data);
    if actual != expected {
        return Err(Error::Tampered {
            what: what.to_string(),
            expected: expected.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(())
}

/// What a package's config blob says about it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageConfig {
    /// The package's name: the file name its manifest is installed as.
    pub name: String,
    /// The package version, if its author gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// Package names become file names in the store: keep them boring.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(Error::format(format!(
            "package name `{name}` must be 1-64 characters of a-z, 0-9, `-` and `_`, starting with a letter or digit"
        )))
    }
}

/// A package: its OCI manifest (the exact bytes its digest covers) and
/// every blob it references, all verified against their digests.
#[derive(Debug, Clone)]
pub struct Package {
    /// The digest of `manifest_raw`: the package's identity.
    pub digest: Digest,
    /// The OCI manifest's exact bytes.
    pub manifest_raw: Bytes,
    /// The OCI manifest, parsed and checked.
    pub manifest: OciImageManifest,
    /// The config blob, parsed.
    pub config: PackageConfig,
    /// Every blob (config and layers) by digest.
    pub blobs: BTreeMap<Digest, Bytes>,
}

/// The roles of a package's layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The tool's TOML manifest.
    ToolManifest,
    /// The WebAssembly component.
    Component,
    /// An optional README.
    Readme,
    /// An optional icon (PNG or SVG).
    Icon,
}

impl Role {
    fn of(media_type: &str) -> Option<Role> {
        match media_type {
            TOOL_MANIFEST_MEDIA_TYPE => Some(Role::ToolManifest),
            COMPONENT_MEDIA_TYPE => Some(Role::Component),
            README_MEDIA_TYPE => Some(Role::Readme),
            m if ICON_MEDIA_TYPES.contains(&m) => Some(Role::Icon),
            _ => None,
        }
    }

    fn limit(self) -> u64 {
        match self {
            Role::ToolManifest => limits::TOOL_MANIFEST,
            Role::Component => limits::COMPONENT,
            Role::Readme | Role::Icon => limits::EXTRA,
        }
    }
}

/// A blob to include in a new package.
pub struct NewLayer {
    /// The layer's media type (one of this module's constants).
    pub media_type: String,
    /// Its file name (the `org.opencontainers.image.title` annotation).
    pub title: String,
    /// Its bytes.
    pub data: Bytes,
}

impl Package {
    /// Build a package from its parts (what `pack` does). The manifest is
    /// serialized once; its digest covers exactly those bytes.
    pub fn build(config: PackageConfig, layers: Vec<NewLayer>) -> Result<Package> {
        check_name(&config.name)?;
        let config_raw = Bytes::from(serde_json::to_vec(&config).expect("config serializes"));
        let mut blobs = BTreeMap::new();
        let config_desc = descriptor(CONFIG_MEDIA_TYPE, &config_raw, None);
        blobs.insert(Digest::of(&config_raw), config_raw);
        let mut descs = Vec::new();
        for l in layers {
            let mut ann = BTreeMap::new();
            ann.insert(TITLE_ANNOTATION.to_string(), l.title);
            descs.push(descriptor(&l.media_type, &l.data, Some(ann)));
            blobs.insert(Digest::of(&l.data), l.data);
        }
        let mut annotations = BTreeMap::new();
        if let Some(v) = &config.version {
            annotations.insert(VERSION_ANNOTATION.to_string(), v.clone());
        }
        let manifest = OciImageManifest {
            schema_version: 2,
            media_type: Some(MANIFEST_MEDIA_TYPE.to_string()),
            config: config_desc,
            layers: descs,
            subject: None,
            artifact_type: Some(ARTIFACT_TYPE.to_string()),
            annotations: (!annotations.is_empty()).then_some(annotations),
        };
        let manifest_raw = Bytes::from(serde_json::to_vec(&manifest).expect("manifest serializes"));
        Package::verify(
            manifest_raw,
            None,
            &|d| blobs.get(d).cloned(),
            "the new package",
        )
    }

    /// Parse and check a package manifest's bytes (at most
    /// [`limits::MANIFEST`]), against `expected` when the caller asked for a
    /// digest, then fetch each blob through `blob` and verify it. `origin`
    /// names the source in errors.
    pub fn verify(
        manifest_raw: Bytes,
        expected: Option<&Digest>,
        blob: &dyn Fn(&Digest) -> Option<Bytes>,
        origin: &str,
    ) -> Result<Package> {
        let manifest = parse_manifest(&manifest_raw, expected, origin)?;
        let digest = Digest::of(&manifest_raw);
        let mut blobs = BTreeMap::new();
        let mut get = |desc: &OciDescriptor, what: &str| -> Result<Bytes> {
            let d = Digest::parse(&desc.digest)?;
            let data = blob(&d)
                .ok_or_else(|| Error::format(format!("{origin}: {what} blob {d} is missing")))?;
            verify_blob(desc, &data, &format!("{what} {} of {origin}", d.short()))?;
            blobs.insert(d, data.clone());
            Ok(data)
        };
        let config_raw = get(&manifest.config, "config")?;
        let config: PackageConfig = serde_json::from_slice(&config_raw)
            .map_err(|e| Error::format(format!("{origin}: the package config is invalid: {e}")))?;
        check_name(&config.name)?;
        for l in &manifest.layers {
            let role = Role::of(&l.media_type).expect("checked by parse_manifest");
            let data = get(l, &format!("{role:?} layer"))?;
            // `tool_manifest` hands it out as text: a signed package whose
            // manifest is not UTF-8 is refused here, not by a panic later.
            if role == Role::ToolManifest && std::str::from_utf8(&data).is_err() {
                return Err(Error::format(format!(
                    "{origin}: the tool manifest layer is not UTF-8 text"
                )));
            }
        }
        Ok(Package {
            digest,
            manifest_raw,
            manifest,
            config,
            blobs,
        })
    }

    /// The descriptor of the layer with `role` (the first, for `Icon`).
    pub fn layer(&self, role: Role) -> Option<&OciDescriptor> {
        self.manifest
            .layers
            .iter()
            .find(|l| Role::of(&l.media_type) == Some(role))
    }

    /// The bytes of the layer with `role`.
    pub fn layer_data(&self, role: Role) -> Option<&Bytes> {
        let d = Digest::parse(&self.layer(role)?.digest).ok()?;
        self.blobs.get(&d)
    }

    /// The tool manifest's text (checked UTF-8 at parse time).
    pub fn tool_manifest(&self) -> &str {
        std::str::from_utf8(self.layer_data(Role::ToolManifest).expect("verified"))
            .expect("checked")
    }

    /// The component's bytes.
    pub fn component(&self) -> &Bytes {
        self.layer_data(Role::Component).expect("verified")
    }

    /// The component layer's digest.
    pub fn component_digest(&self) -> Digest {
        Digest::parse(&self.layer(Role::Component).expect("verified").digest).expect("verified")
    }

    /// The version from the config, if any.
    pub fn version(&self) -> Option<&str> {
        self.config.version.as_deref()
    }
}

fn descriptor(
    media_type: &str,
    data: &[u8],
    ann: Option<BTreeMap<String, String>>,
) -> OciDescriptor {
    OciDescriptor {
        media_type: media_type.to_string(),
        digest: Digest::of(data).to_string(),
        size: data.len() as i64,
        urls: None,
        annotations: ann,
        artifact_type: None,
    }
}

/// Parse a package manifest, refusing anything that is not exactly a
/// toolhost package: wrong media or artifact type, a missing or repeated
/// layer, a layer of an unknown type, external URLs, sizes over the limits.
pub fn parse_manifest(
    raw: &[u8],
    expected: Option<&Digest>,
    origin: &str,
) -> Result<OciImageManifest> {
    if raw.len() as u64 > limits::MANIFEST {
        return Err(Error::TooLarge {
            what: format!("the manifest of {origin}"),
            limit: limits::MANIFEST,
        });
    }
    let actual = Digest::of(raw);
    if let Some(e) = expected
        && *e != actual
    {
        return Err(Error::Tampered {
            what: format!("the manifest of {origin}"),
            expected: e.to_string(),
            actual: actual.to_string(),
        });
    }
    let bad = |m: String| Error::format(format!("{origin} is not a toolhost package: {m}"));
    let m: OciImageManifest = serde_json::from_slice(raw)
        .map_err(|e| bad(format!("its manifest is not an OCI image manifest ({e})")))?;
    if m.schema_version != 2 {
        return Err(bad(format!(
            "schemaVersion {} (expected 2)",
            m.schema_version
        )));
    }
    if m.media_type.as_deref() != Some(MANIFEST_MEDIA_TYPE) {
        return Err(bad(format!(
            "manifest mediaType {:?} (expected {MANIFEST_MEDIA_TYPE})",
            m.media_type
        )));
    }
    if m.artifact_type.as_deref() != Some(ARTIFACT_TYPE) {
        return Err(bad(format!(
            "artifactType {:?} (expected {ARTIFACT_TYPE})",
            m.artifact_type
        )));
    }
    if m.config.media_type != CONFIG_MEDIA_TYPE {
        return Err(bad(format!("config mediaType `{}`", m.config.media_type)));
    }
    check_desc(&m.config, limits::CONFIG, "config").map_err(bad)?;
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for l in &m.layers {
        let role = Role::of(&l.media_type).ok_or_else(|| {
            bad(format!(
                "layer of unknown mediaType `{}` (a package holds {TOOL_MANIFEST_MEDIA_TYPE}, {COMPONENT_MEDIA_TYPE}, and optionally {README_MEDIA_TYPE} and one icon)",
                l.media_type
            ))
        })?;
        check_desc(l, role.limit(), &l.media_type).map_err(bad)?;
        let kind = if role == Role::Icon {
            "icon"
        } else {
            l.media_type.as_str()
        };
        *seen.entry(kind).or_default() += 1;
    }
    for (kind, n) in &seen {
        if *n > 1 {
            return Err(bad(format!("{n} layers of `{kind}` (one expected)")));
        }
    }
    for need in [TOOL_MANIFEST_MEDIA_TYPE, COMPONENT_MEDIA_TYPE] {
        if !seen.contains_key(need) {
            return Err(bad(format!("no `{need}` layer")));
        }
    }
    Ok(m)
}

pub(crate) fn check_desc(
    d: &OciDescriptor,
    limit: u64,
    what: &str,
) -> std::result::Result<(), String> {
    Digest::parse(&d.digest).map_err(|e| format!("{what}: {e}"))?;
    if d.size < 0 || d.size as u64 > limit {
        return Err(format!(
            "{what} declares {} bytes (at most {limit} accepted)",
            d.size
        ));
    }
    if d.urls.as_ref().is_some_and(|u| !u.is_empty()) {
        return Err(format!(
            "{what} names external URLs; every blob must be in the package or its registry"
        ));
    }
    Ok(())
}

/// An OCI image layout held in memory: `index.json` plus blobs. Holds one
/// package and the cosign signature manifests that sign it.
#[derive(Debug, Default, Clone)]
pub struct Layout {
    /// `index.json`'s entries: the package and its signature manifests.
    pub index: Vec<ImageIndexEntry>,
    /// Every blob, by digest (manifests included).
    pub blobs: HashMap<Digest, Bytes>,
}

impl Layout {
    /// A layout holding `pkg`, tagged with its name (and version).
    pub fn with_package(pkg: &Package) -> Layout {
        let mut l = Layout::default();
        for (d, b) in &pkg.blobs {
            l.blobs.insert(d.clone(), b.clone());
        }
        let tag = pkg.version().unwrap_or("latest");
        l.add_manifest(
            pkg.manifest_raw.clone(),
            Some(ARTIFACT_TYPE),
            &format!("{}:{tag}", pkg.config.name),
        );
        l
    }

    /// Add (or replace, by ref name) a manifest in the index.
    pub fn add_manifest(&mut self, raw: Bytes, artifact_type: Option<&str>, ref_name: &str) {
        let d = Digest::of(&raw);
        self.index.retain(|e| {
            e.annotations
                .as_ref()
                .and_then(|a| a.get(REF_NAME_ANNOTATION))
                .is_none_or(|n| n != ref_name)
        });
        let mut ann = BTreeMap::new();
        ann.insert(REF_NAME_ANNOTATION.to_string(), ref_name.to_string());
        self.index.push(ImageIndexEntry {
            media_type: MANIFEST_MEDIA_TYPE.to_string(),
            digest: d.to_string(),
            size: raw.len() as i64,
            platform: None,
            annotations: Some(ann),
            artifact_type: artifact_type.map(str::to_string),
        });
        self.blobs.insert(d, raw);
    }

    /// The one package in this layout: its manifest bytes and digest.
    pub fn package_entry(&self, origin: &str) -> Result<(Digest, Bytes)> {
        let pkgs: Vec<&ImageIndexEntry> = self
            .index
            .iter()
            .filter(|e| !ref_name(e).is_some_and(|n| n.ends_with(".sig")))
            .collect();
        let [e] = pkgs.as_slice() else {
            return Err(Error::format(format!(
                "{origin}: the layout's index.json lists {} packages (exactly one expected)",
                pkgs.len()
            )));
        };
        let d = Digest::parse(&e.digest)?;
        let raw = self.blob(
            &d,
            e.size,
            limits::MANIFEST,
            &format!("the manifest of {origin}"),
        )?;
        Ok((d, raw))
    }

    /// The signature manifest for `digest`, if the layout holds one.
    pub fn signature_manifest(&self, digest: &Digest) -> Result<Option<Bytes>> {
        let tag = digest.signature_tag();
        match self
            .index
            .iter()
            .find(|e| ref_name(e) == Some(tag.as_str()))
        {
            None => Ok(None),
            Some(e) => {
                let d = Digest::parse(&e.digest)?;
                Ok(Some(self.blob(
                    &d,
                    e.size,
                    limits::MANIFEST,
                    "a signature manifest",
                )?))
            }
        }
    }

    /// Blob `d`, verified against its digest and the declared size.
    pub fn blob(&self, d: &Digest, size: i64, limit: u64, what: &str) -> Result<Bytes> {
        let data = self
            .blobs
            .get(d)
            .ok_or_else(|| Error::format(format!("{what}: blob {d} is not in the layout")))?;
        if size < 0 || size as u64 > limit {
            return Err(Error::TooLarge {
                what: what.to_string(),
                limit,
            });
        }
        let desc = OciDescriptor {
            digest: d.to_string(),
            size,
            ..Default::default()
        };
        verify_blob(&desc, data, what)?;
        Ok(data.clone())
    }

    /// Write the layout as a directory (`oci-layout`, `index.json`,
    /// `blobs/sha256/…`), or as an uncompressed tar of the same when `path`
    /// ends in `.tar`. Written to a temporary name, then renamed.
    pub fn write(&self, path: &Path) -> Result<()> {
        let index = self.index_json();
        let is_tar = path.extension().is_some_and(|e| e == "tar");
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let io = |e: std::io::Error| Error::io(path, e);
        if is_tar {
            let tmp = tempfile::NamedTempFile::new_in(parent).map_err(io)?;
            {
                let mut b = tar::Builder::new(tmp.as_file());
                let mut add = |name: &str, data: &[u8]| -> std::io::Result<()> {
                    let mut h = tar::Header::new_gnu();
                    h.set_size(data.len() as u64);
                    h.set_mode(0o644);
                    h.set_mtime(0);
                    h.set_entry_type(tar::EntryType::Regular);
                    b.append_data(&mut h, name, data)
                };
                add("oci-layout", OCI_LAYOUT.as_bytes()).map_err(io)?;
                add("index.json", &index).map_err(io)?;
                let mut blobs: Vec<_> = self.blobs.iter().collect();
                blobs.sort_by(|a, b| a.0.cmp(b.0));
                for (d, data) in blobs {
                    add(&format!("blobs/sha256/{}", d.hex()), data).map_err(io)?;
                }
                b.finish().map_err(io)?;
            }
            tmp.persist(path).map_err(|e| io(e.error))?;
        } else {
            let tmp = tempfile::tempdir_in(parent).map_err(io)?;
            let blobs = tmp.path().join("blobs/sha256");
            std::fs::create_dir_all(&blobs).map_err(io)?;
            std::fs::write(tmp.path().join("oci-layout"), OCI_LAYOUT).map_err(io)?;
            std::fs::write(tmp.path().join("index.json"), &index).map_err(io)?;
            for (d, data) in &self.blobs {
                std::fs::write(blobs.join(d.hex()), data).map_err(io)?;
            }
            if path.exists() {
                std::fs::remove_dir_all(path).map_err(io)?;
            }
            std::fs::rename(tmp.keep(), path).map_err(io)?;
        }
        Ok(())
    }

    fn index_json(&self) -> Vec<u8> {
        let idx = OciImageIndex {
            schema_version: 2,
            media_type: Some(INDEX_MEDIA_TYPE.to_string()),
            manifests: self.index.clone(),
            artifact_type: None,
            annotations: None,
        };
        serde_json::to_vec_pretty(&idx).expect("index serializes")
    }

    /// Read a layout from a directory, a tar, or a gzip-compressed tar.
    pub fn read(path: &Path) -> Result<Layout> {
        if path.is_dir() {
            return Self::read_dir(path);
        }
        // Without blocking: a FIFO named here held the command for good.
        let f = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
                .open(path)
                .map_err(|e| Error::io(path, e))?
        };
        let meta = f.metadata().map_err(|e| Error::io(path, e))?;
        if !meta.is_file() {
            return Err(Error::format(format!(
                "{}: not a regular file, a layout directory or a tar",
                path.display()
            )));
        }
        let len = meta.len();
        if len > limits::LAYOUT {
            return Err(Error::TooLarge {
                what: path.display().to_string(),
                limit: limits::LAYOUT,
            });
        }
        let mut data = Vec::with_capacity(len as usize);
        f.take(limits::LAYOUT + 1)
            .read_to_end(&mut data)
            .map_err(|e| Error::io(path, e))?;
        Self::from_tar_bytes(&data, &path.display().to_string())
    }

    fn read_dir(dir: &Path) -> Result<Layout> {
        let origin = dir.display().to_string();
        let read = |p: &Path, limit: u64| -> Result<Vec<u8>> {
            let meta = std::fs::symlink_metadata(p).map_err(|e| Error::io(p, e))?;
            if !meta.is_file() {
                return Err(Error::format(format!(
                    "{}: not a regular file",
                    p.display()
                )));
            }
            if meta.len() > limit {
                return Err(Error::TooLarge {
                    what: p.display().to_string(),
                    limit,
                });
            }
            std::fs::read(p).map_err(|e| Error::io(p, e))
        };
        let mut l = Layout::default();
        let index = read(&dir.join("index.json"), limits::MANIFEST)?;
        l.index = parse_index(&index, &origin)?;
        let mut total = 0u64;
        for e in &l.index.clone() {
            let d = Digest::parse(&e.digest)?;
            l.load_blob_tree(&d, &mut |d, limit| {
                let data = read(&dir.join("blobs/sha256").join(d.hex()), limit)?;
                total += data.len() as u64;
                if total > limits::LAYOUT {
                    return Err(Error::TooLarge {
                        what: origin.clone(),
                        limit: limits::LAYOUT,
                    });
                }
                Ok(Bytes::from(data))
            })?;
        }
        Ok(l)
    }

    /// Load manifest `d` and every blob it names via `read`.
    fn load_blob_tree(
        &mut self,
        d: &Digest,
        read: &mut dyn FnMut(&Digest, u64) -> Result<Bytes>,
    ) -> Result<()> {
        let raw = read(d, limits::MANIFEST)?;
        let m: OciImageManifest = serde_json::from_slice(&raw)
            .map_err(|e| Error::format(format!("manifest {d} in the layout: {e}")))?;
        self.blobs.insert(d.clone(), raw);
        for desc in std::iter::once(&m.config).chain(&m.layers) {
            let bd = Digest::parse(&desc.digest)?;
            if let std::collections::hash_map::Entry::Vacant(v) = self.blobs.entry(bd) {
                let data = read(v.key(), limits::COMPONENT)?;
                v.insert(data);
            }
        }
        Ok(())
    }

    /// Read a layout from tar bytes (gzip-compressed or not). Only regular
    /// files named `oci-layout`, `index.json` and `blobs/sha256/<hex>` are
    /// read, into memory; nothing is ever extracted to disk, so links and
    /// `..` paths cannot escape anywhere.
    pub fn from_tar_bytes(data: &[u8], origin: &str) -> Result<Layout> {
        let bad = |m: String| Error::format(format!("{origin}: {m}"));
        let decompressed;
        let data = if data.starts_with(&[0x1f, 0x8b]) {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(data)
                .take(limits::LAYOUT + 1)
                .read_to_end(&mut out)
                .map_err(|e| bad(format!("not a gzip-compressed tar: {e}")))?;
            if out.len() as u64 > limits::LAYOUT {
                return Err(Error::TooLarge {
                    what: origin.to_string(),
                    limit: limits::LAYOUT,
                });
            }
            decompressed = out;
            &decompressed[..]
        } else {
            data
        };
        let mut ar = tar::Archive::new(data);
        let mut index = None;
        let mut files: HashMap<Digest, Bytes> = HashMap::new();
        for entry in ar.entries().map_err(|e| bad(format!("not a tar: {e}")))? {
            let mut entry = entry.map_err(|e| bad(format!("not a tar: {e}")))?;
            let path = entry
                .path()
                .map_err(|e| bad(format!("bad tar entry: {e}")))?;
            let name = path.to_string_lossy().trim_start_matches("./").to_string();
            let kind = entry.header().entry_type();
            if kind.is_dir() {
                continue;
            }
            if !kind.is_file() {
                return Err(bad(format!("tar entry `{name}` is not a regular file")));
            }
            let size = entry.size();
            if size > limits::COMPONENT {
                return Err(Error::TooLarge {
                    what: format!("{origin}: {name}"),
                    limit: limits::COMPONENT,
                });
            }
            let mut buf = Vec::with_capacity(size as usize);
            entry
                .read_to_end(&mut buf)
                .map_err(|e| bad(format!("reading `{name}`: {e}")))?;
            match name.as_str() {
                "oci-layout" => {}
                "index.json" => index = Some(buf),
                n => {
                    let hex = n.strip_prefix("blobs/sha256/").ok_or_else(|| {
                        bad(format!("unexpected tar entry `{n}` (an OCI layout holds oci-layout, index.json and blobs/sha256/)"))
                    })?;
                    files.insert(Digest::parse(&format!("sha256:{hex}"))?, Bytes::from(buf));
                }
            }
        }
        let index = index.ok_or_else(|| bad("no index.json: not an OCI image layout".into()))?;
        let mut l = Layout {
            index: parse_index(&index, origin)?,
            blobs: HashMap::new(),
        };
        for e in &l.index.clone() {
            let d = Digest::parse(&e.digest)?;
            l.load_blob_tree(&d, &mut |d, _| {
                files
                    .get(d)
                    .cloned()
                    .ok_or_else(|| bad(format!("blob {d} is not in the layout")))
            })?;
        }
        Ok(l)
    }
}

const OCI_LAYOUT: &str = "{\"imageLayoutVersion\":\"1.0.0\"}";

fn ref_name(e: &ImageIndexEntry) -> Option<&str> {
    e.annotations
        .as_ref()?
        .get(REF_NAME_ANNOTATION)
        .map(String::as_str)
}

fn parse_index(raw: &[u8], origin: &str) -> Result<Vec<ImageIndexEntry>> {
    let idx: OciImageIndex = serde_json::from_slice(raw).map_err(|e| {
        Error::format(format!(
            "{origin}: index.json is not an OCI image index: {e}"
        ))
    })?;
    if idx.manifests.len() > limits::SIGNATURES + 1 {
        return Err(Error::format(format!(
            "{origin}: index.json lists {} manifests",
            idx.manifests.len()
        )));
    }
    for e in &idx.manifests {
        if e.media_type != MANIFEST_MEDIA_TYPE {
            return Err(Error::format(format!(
                "{origin}: index.json lists a `{}` (only OCI image manifests are expected)",
                e.media_type
            )));
        }
    }
    Ok(idx.manifests)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Package {
        Package::build(
            PackageConfig {
                name: "echo".into(),
                version: Some("1.0.0".into()),
            },
            vec![
                NewLayer {
                    media_type: TOOL_MANIFEST_MEDIA_TYPE.into(),
                    title: "echo.toml".into(),
                    data: Bytes::from_static(
                        b"[component]\npath = \"echo.wasm\"\nsha256 = \"x\"\n",
                    ),
                },
                NewLayer {
                    media_type: COMPONENT_MEDIA_TYPE.into(),
                    title: "echo.wasm".into(),
                    data: Bytes::from_static(b"\0asm\x0d\0\x01\0"),
                },
            ],
        )
        .unwrap()
    }

    #[test]
    fn a_package_is_an_oras_style_artifact_addressed_by_its_bytes() {
        let p = sample();
        let v: serde_json::Value = serde_json::from_slice(&p.manifest_raw).unwrap();
        assert_eq!(v["artifactType"], ARTIFACT_TYPE);
        assert_eq!(v["mediaType"], MANIFEST_MEDIA_TYPE);
        assert_eq!(v["config"]["mediaType"], CONFIG_MEDIA_TYPE);
        assert_eq!(v["layers"][0]["mediaType"], TOOL_MANIFEST_MEDIA_TYPE);
        assert_eq!(v["layers"][0]["annotations"][TITLE_ANNOTATION], "echo.toml");
        assert_eq!(v["layers"][1]["mediaType"], COMPONENT_MEDIA_TYPE);
        assert_eq!(
            v["layers"][1]["digest"],
            format!(
                "sha256:{}",
                hex::encode(Sha256::digest(b"\0asm\x0d\0\x01\0"))
            )
        );
        assert_eq!(v["layers"][1]["size"], 8);
        assert_eq!(p.digest, Digest::of(&p.manifest_raw));
        assert_eq!(v["annotations"][VERSION_ANNOTATION], "1.0.0");
    }

    #[test]
    fn a_tool_manifest_that_is_not_utf8_is_refused() {
        let e = Package::build(
            PackageConfig {
                name: "echo".into(),
                version: None,
            },
            vec![
                NewLayer {
                    media_type: TOOL_MANIFEST_MEDIA_TYPE.into(),
                    title: "echo.toml".into(),
                    data: Bytes::from_static(b"[component]\npath = \"\xff\"\n"),
                },
                NewLayer {
                    media_type: COMPONENT_MEDIA_TYPE.into(),
                    title: "echo.wasm".into(),
                    data: Bytes::from_static(b"\0asm\x0d\0\x01\0"),
                },
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("not UTF-8"), "{e}");
    }

    #[test]
    fn digests_are_strict() {
        assert!(Digest::parse(&format!("sha256:{}", "a".repeat(64))).is_ok());
        for bad in [
            "sha256:abc".to_string(),
            format!("sha512:{}", "a".repeat(64)),
            format!("sha256:{}", "A".repeat(64)),
            format!("sha256:../{}", "a".repeat(61)),
            "a".repeat(64),
        ] {
            assert!(Digest::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn layouts_round_trip_as_directory_and_tar() {
        let p = sample();
        let dir = tempfile::tempdir().unwrap();
        for name in ["pkg", "pkg.tar"] {
            let path = dir.path().join(name);
            Layout::with_package(&p).write(&path).unwrap();
            let l = Layout::read(&path).unwrap();
            let (d, raw) = l.package_entry("test").unwrap();
            assert_eq!(d, p.digest);
            let q = Package::verify(raw, Some(&d), &|d| l.blobs.get(d).cloned(), "test").unwrap();
            assert_eq!(q.component(), p.component());
            assert_eq!(q.config, p.config);
        }
        let idx: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("pkg/index.json")).unwrap())
                .unwrap();
        assert_eq!(
            idx["manifests"][0]["annotations"][REF_NAME_ANNOTATION],
            "echo:1.0.0"
        );
        assert_eq!(idx["manifests"][0]["artifactType"], ARTIFACT_TYPE);
    }

    #[test]
    fn a_tampered_layer_is_refused_naming_it() {
        let p = sample();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pkg");
        Layout::with_package(&p).write(&path).unwrap();
        let blob = path.join("blobs/sha256").join(p.component_digest().hex());
        std::fs::write(&blob, b"\0asm\x0d\0\x01\x01").unwrap();
        let l = Layout::read(&path).unwrap();
        let (d, raw) = l.package_entry("test").unwrap();
        let e = Package::verify(raw, Some(&d), &|d| l.blobs.get(d).cloned(), "pkg").unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::Tampered { .. }), "{msg}");
        assert!(
            msg.contains("Component layer") && msg.contains(p.component_digest().short()),
            "{msg}"
        );
    }

    #[test]
    fn a_manifest_that_is_not_a_package_is_refused() {
        let p = sample();
        let mut v: serde_json::Value = serde_json::from_slice(&p.manifest_raw).unwrap();
        v["layers"][1]["mediaType"] = "application/vnd.oci.image.layer.v1.tar".into();
        let raw = serde_json::to_vec(&v).unwrap();
        let e = parse_manifest(&raw, None, "x").unwrap_err().to_string();
        assert!(e.contains("unknown mediaType"), "{e}");
        v["layers"][1]["mediaType"] = COMPONENT_MEDIA_TYPE.into();
        v["layers"][1]["size"] = (limits::COMPONENT + 1).into();
        let e = parse_manifest(&serde_json::to_vec(&v).unwrap(), None, "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("at most"), "{e}");
        let e = parse_manifest(&p.manifest_raw, Some(&Digest::of(b"other")), "x").unwrap_err();
        assert!(matches!(e, Error::Tampered { .. }));
    }

    #[test]
    fn tar_entries_outside_the_layout_shape_are_refused() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, "blobs/../../etc/passwd", &b"x"[..])
            .ok();
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_entry_type(tar::EntryType::Symlink);
        b.append_link(&mut h, "index.json", "/etc/passwd").unwrap();
        let data = b.into_inner().unwrap();
        let e = Layout::from_tar_bytes(&data, "evil.tar")
            .unwrap_err()
            .to_string();
        assert!(e.contains("evil.tar"), "{e}");
    }
}
