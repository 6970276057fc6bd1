//! On-disk cache of compiled components (native code), keyed by the wasm's
//! sha256 and the engine's compatibility hash, so a second start does not
//! recompile; and beside each, what the component's `describe` answered,
//! so a second start instantiates nothing.
//!
//! Deserializing an artifact runs its code, so only artifacts this host
//! wrote are ever loaded:
//! - the directory must be a real directory (not a symlink) owned by this
//!   user and closed to everyone else (0700); one that is not is refused,
//!   never silently `chmod`ed, and the cache is disabled with a warning;
//! - each artifact has a MAC of its bytes (keyed BLAKE3, in a `.tag` file
//!   beside it) under a key kept in the directory (0600, created on first
//!   use); an artifact that fails the MAC, or whose files are symlinks or
//!   have another owner, is never loaded;
//! - files are written to a temporary name of their own and renamed into
//!   place;
//! - a checked artifact is mapped through the descriptor that was checked;
//! - a `describe` answer carries its own MAC, under a key derived apart
//!   (one kind of file can never pass for the other), over this toolhost
//!   version too; the answer is checked and converted at every load as if
//!   the component had just given it.
//!
//! The fs unit refuses any grant that reaches this directory.

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

pub(crate) struct Cache {
    dir: PathBuf,
    engine_key: String,
    mac_key: [u8; 32],
    /// The key of `describe` answers' MACs, derived from `mac_key`.
    description_key: [u8; 32],
    /// [`description_form`].
    description_form: blake3::Hash,
}

/// The largest `describe` answer kept (serialized): a Rust tool's is a
/// few KiB; one past this is asked again at each start.
const MAX_DESCRIPTION: usize = 4 << 20;

/// The form of a recorded answer: raised when the host changes how it
/// lifts or serializes answers, so that records of the old form are asked
/// again (a development build keeps its crate version; a change to the
/// WIT the answer's types come from is seen by itself, see
/// [`description_form`]).
const DESCRIPTION_FORMAT: &[u8] = b"toolhost-describe-1";

/// What a record's form depends on: [`DESCRIPTION_FORMAT`], this toolhost
/// version, and the WIT of both worlds `describe` answers in. Hashed into
/// each record's name (hosts of two versions sharing a cache keep a
/// record each, rather than discard each other's) and into its MAC.
fn description_form() -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    for part in [
        DESCRIPTION_FORMAT,
        env!("CARGO_PKG_VERSION").as_bytes(),
        include_bytes!("../../wit/tool.wit"),
        include_bytes!("../../wit/0.1.0/tool.wit"),
    ] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.finalize()
}

/// Why the cache directory is not used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CacheError {
    #[error("{0} is a symbolic link")]
    Symlink(PathBuf),
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    #[error(transparent)]
    NotKept(#[from] crate::files::NotKept),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Whether `meta` (of a file or directory) belongs to this user and no one
/// else may read or write it.
fn private(path: &Path, meta: &std::fs::Metadata, dir: bool) -> Result<(), CacheError> {
    if meta.file_type().is_symlink() {
        return Err(CacheError::Symlink(path.to_owned()));
    }
    if dir && !meta.is_dir() {
        return Err(CacheError::NotADirectory(path.to_owned()));
    }
    Ok(crate::files::kept(path, meta, crate::files::Keep::Private)?)
}

impl Cache {
    pub(crate) fn new(dir: &Path, engine: &Engine) -> Result<Cache, CacheError> {
        match std::fs::symlink_metadata(dir) {
            Ok(meta) => private(dir, &meta, true)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Parents made are this user's alone too, whatever the
                // umask (they were made 0777 under `umask 0`, so anyone
                // could swap the cache beneath them: found by review).
                if let Some(parent) = dir.parent() {
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(parent)?;
                }
                std::fs::DirBuilder::new().mode(0o700).create(dir)?;
                private(dir, &std::fs::symlink_metadata(dir)?, true)?;
            }
            Err(e) => return Err(e.into()),
        }
        let mac_key = Self::mac_key(dir)?;
        sweep_leftovers(dir);
        // A stable digest of the engine's compatibility hash: wasmtime
        // version, target and every setting that affects compiled code.
        struct ShaHasher(Sha256);
        impl Hasher for ShaHasher {
            fn finish(&self) -> u64 {
                0
            }
            fn write(&mut self, bytes: &[u8]) {
                self.0.update(bytes);
            }
        }
        let mut h = ShaHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut h);
        let engine_key = hex::encode(&h.0.finalize()[..12]);
        Ok(Cache {
            dir: dir.to_owned(),
            engine_key,
            description_key: blake3::derive_key("toolhost cache: describe answers", &mac_key),
            description_form: description_form(),
            mac_key,
        })
    }

    /// The key that authenticates artifacts: created once, 0600.
    fn mac_key(dir: &Path) -> Result<[u8; 32], CacheError> {
        let path = dir.join("key");
        // Without waiting, and a regular file only (a FIFO planted as the
        // key held the start for good: found by the review of the fix).
        let open = || crate::files::open_probed(&path, false).map(|(f, _)| f);
        let mut file = match open() {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                getrandom(&mut key)?;
                // Named apart by a random suffix, not by the process id
                // alone: a key write a crash left behind, or another
                // host's with the same id (a container's process 1 on a
                // shared volume), would otherwise make this one fail.
                let mut unique = [0u8; 8];
                getrandom(&mut unique)?;
                let tmp = dir.join(format!(
                    "key.tmp{}-{}",
                    std::process::id(),
                    hex::encode(unique)
                ));
                let mut f = create_private(&tmp)?;
                f.write_all(&key)?;
                f.sync_all()?;
                // Another process may have won the race: keep theirs.
                if std::fs::hard_link(&tmp, &path).is_err() {
                    let _ = std::fs::remove_file(&tmp);
                    open()?
                } else {
                    let _ = std::fs::remove_file(&tmp);
                    return Ok(key);
                }
            }
            Err(e) => return Err(e.into()),
        };
        private(&path, &file.metadata()?, false)?;
        let mut key = [0u8; 32];
        file.read_exact(&mut key)?;
        Ok(key)
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The artifact: exactly what `Component::serialize` wrote, so that it
    /// is mapped, not copied, when loaded.
    fn path_for(&self, sha256: &[u8; 32]) -> PathBuf {
        self.dir.join(format!(
            "{}-{}.b3.cwasm",
            hex::encode(sha256),
            self.engine_key
        ))
    }

    /// The artifact's MAC, beside it.
    fn tag_path_for(&self, sha256: &[u8; 32]) -> PathBuf {
        self.path_for(sha256).with_extension("tag")
    }

    /// The artifact's tag: BLAKE3 keyed with the cache's private key (a
    /// MAC; several times faster than HMAC-SHA256 over the tens of MB of a
    /// Python or JavaScript tool's native code, which every start reads).
    fn mac(&self, sha256: &[u8; 32]) -> blake3::Hasher {
        self.keyed(&self.mac_key, sha256)
    }

    /// BLAKE3 keyed with `key`, over the component's digest and the
    /// engine's key: what every MAC of an entry starts with.
    fn keyed(&self, key: &[u8; 32], sha256: &[u8; 32]) -> blake3::Hasher {
        let mut mac = blake3::Hasher::new_keyed(key);
        mac.update(sha256);
        mac.update(self.engine_key.as_bytes());
        mac
    }

    /// A previously compiled component, if this host cached one and it is
    /// intact.
    ///
    /// The artifact is read once through the page cache to check its MAC,
    /// then mapped by wasmtime (`deserialize_file`): its pages are shared
    /// with the page cache and only those that run become resident, where
    /// copying it into memory cost a read, a copy and the whole size in
    /// RSS. wasmtime maps the very file that was checked (opened again
    /// through `/proc/self/fd`, not by its name, so no rename or symlink
    /// in between can swap it); its contents can change after the check
    /// only by someone running as this user (the file is 0600), who could
    /// as well read the key and forge the MAC: the MAC keeps out files
    /// written by anything else.
    pub(crate) fn get(&self, engine: &Engine, sha256: &[u8; 32]) -> Option<Component> {
        let path = self.path_for(sha256);
        let tag_path = self.tag_path_for(sha256);
        let check = || -> Result<Option<(bool, std::fs::File)>, CacheError> {
            let (Some(mut tag_file), Some(mut body)) = (open(&tag_path)?, open(&path)?) else {
                return Ok(None);
            };
            let mut tag = [0u8; 32];
            if tag_file.read_exact(&mut tag).is_err() {
                return Ok(Some((false, body)));
            }
            let mut mac = self.mac(sha256);
            mac.update_reader(&mut body)?;
            // `blake3::Hash` compares in constant time.
            Ok(Some((
                mac.finalize() == blake3::Hash::from_bytes(tag),
                body,
            )))
        };
        let discard = |why: &str| {
            tracing::warn!(path = %path.display(), "discarding cached component: {why}");
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_file(&tag_path);
            None
        };
        let body = match check() {
            Ok(Some((true, body))) => body,
            Ok(Some((false, _))) => {
                return discard("it was not written by this host (bad MAC)");
            }
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(path = %path.display(), "not loading a cached component: {e}");
                return None;
            }
        };
        use std::os::fd::AsRawFd;
        let checked = PathBuf::from(format!("/proc/self/fd/{}", body.as_raw_fd()));
        // SAFETY: the file was produced by `Component::serialize` of this
        // host for exactly this wasm digest and engine configuration: the
        // MAC under this cache's private key proves it, and `checked` is
        // that same open file (see above for who could change it after the
        // check).
        let loaded = unsafe { Component::deserialize_file(engine, &checked) };
        drop(body);
        match loaded {
            Ok(c) => Some(c),
            Err(e) => discard(&format!("{e:#}")),
        }
    }

    /// Store a freshly compiled component; failures only cost a recompile.
    /// The artifact goes into place before its tag: a reader that finds a
    /// tag finds the artifact it was made for (or, while another host
    /// rewrites the same entry, fails the MAC and recompiles).
    pub(crate) fn put(&self, sha256: &[u8; 32], component: &Component) {
        let path = self.path_for(sha256);
        let result = component
            .serialize()
            .map_err(std::io::Error::other)
            .and_then(|body| {
                let mut mac = self.mac(sha256);
                mac.update(&body);
                write_new(&path, &body)?;
                write_new(&self.tag_path_for(sha256), mac.finalize().as_bytes())
            });
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), "cannot cache compiled component: {e}");
        }
    }

    /// A `describe` answer (serialized by the caller), beside the artifact
    /// (`HASH-KEY-FORM.b3.describe`): its tag (32 bytes), then the answer.
    fn description_path_for(&self, sha256: &[u8; 32]) -> PathBuf {
        self.dir.join(format!(
            "{}-{}-{}.b3.describe",
            hex::encode(sha256),
            self.engine_key,
            &self.description_form.to_hex()[..16]
        ))
    }

    /// The MAC of a `describe` answer: keyed BLAKE3 under the derived key,
    /// over the component's digest, the engine's key, the record's form
    /// (the answer is converted by the host that reads it, but another
    /// version asks again rather than trust another's record), then the
    /// answer.
    fn description_mac(&self, sha256: &[u8; 32], answer: &[u8]) -> blake3::Hash {
        let mut mac = self.keyed(&self.description_key, sha256);
        mac.update(self.description_form.as_bytes());
        mac.update(answer);
        mac.finalize()
    }

    /// What the component with digest `sha256` answered to `describe`, as
    /// [`put_description`](Self::put_description) recorded it, if this
    /// host recorded it, it is intact and it parses (a record that fails
    /// its MAC or does not parse is removed; one whose file fails the
    /// checks every cache file gets is left alone, and not read).
    pub(crate) fn get_description<T: serde::de::DeserializeOwned>(
        &self,
        sha256: &[u8; 32],
    ) -> Option<T> {
        let record = self.get_record(sha256)?;
        match serde_json::from_slice(&record) {
            Ok(answer) => Some(answer),
            Err(e) => {
                let path = self.description_path_for(sha256);
                tracing::warn!(path = %path.display(), "discarding a cached description: {e}");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// The record behind [`get_description`](Self::get_description), its
    /// MAC checked.
    fn get_record(&self, sha256: &[u8; 32]) -> Option<Vec<u8>> {
        let path = self.description_path_for(sha256);
        let read = || -> Result<Option<Vec<u8>>, CacheError> {
            let Some(file) = open(&path)? else {
                return Ok(None);
            };
            let mut bytes = Vec::new();
            file.take((32 + MAX_DESCRIPTION + 1) as u64)
                .read_to_end(&mut bytes)?;
            Ok(Some(bytes))
        };
        let bytes = match read() {
            Ok(b) => b?,
            Err(e) => {
                tracing::warn!(path = %path.display(), "not reading a cached description: {e}");
                return None;
            }
        };
        let intact = bytes.len() > 32
            && bytes.len() <= 32 + MAX_DESCRIPTION
            // `blake3::Hash` compares in constant time.
            && blake3::Hash::from_slice(&bytes[..32])
                .is_ok_and(|tag| tag == self.description_mac(sha256, &bytes[32..]));
        if !intact {
            tracing::warn!(path = %path.display(), "discarding a cached description: not written by this host and version");
            let _ = std::fs::remove_file(&path);
            return None;
        }
        let mut bytes = bytes;
        bytes.drain(..32);
        Some(bytes)
    }

    /// Record `answer`, a `describe` answer serialized by
    /// [`description_record`]; failures (or an answer over
    /// `MAX_DESCRIPTION`) only cost asking again at the next start.
    pub(crate) fn put_description(&self, sha256: &[u8; 32], answer: &[u8]) {
        if answer.len() > MAX_DESCRIPTION {
            return;
        }
        let path = self.description_path_for(sha256);
        let mut file = Vec::with_capacity(32 + answer.len());
        file.extend_from_slice(self.description_mac(sha256, answer).as_bytes());
        file.extend_from_slice(answer);
        if let Err(e) = write_new(&path, &file) {
            tracing::warn!(path = %path.display(), "cannot cache a description: {e}");
        }
    }
}

/// `answer` serialized to be recorded, if it fits in `MAX_DESCRIPTION`:
/// serializing stops there, so a hostile answer (tens of MB of names that
/// escape six-fold in JSON) costs at most that much before the host has
/// checked it.
pub(crate) fn description_record(answer: &impl serde::Serialize) -> Option<Vec<u8>> {
    struct Capped(Vec<u8>);
    impl Write for Capped {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            if self.0.len() + bytes.len() > MAX_DESCRIPTION {
                return Err(std::io::Error::other("over MAX_DESCRIPTION"));
            }
            self.0.extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut out = Capped(Vec::new());
    serde_json::to_writer(&mut out, answer).ok()?;
    Some(out.0)
}

/// Open the cache's file at `p` to read, if it is there: never through a
/// symbolic link, never waiting (a FIFO planted in its place held the load
/// thread, and every later reload, for good: found by review), and only
/// if it is a regular file and this user's alone.
fn open(p: &Path) -> Result<Option<std::fs::File>, CacheError> {
    match crate::files::open_probed(p, false) {
        Ok((f, meta)) => {
            private(p, &meta, false)?;
            Ok(Some(f))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Create the cache's new file at `p`, this user's alone (0600), never
/// through a symbolic link, and never one that is already there.
fn create_private(p: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(p)
}

/// Write `bytes` to `dst` through a temporary name of its own per write
/// (several loads of one component may run at once, in this process or
/// another), renamed into place: a reader finds the old file or the
/// whole new one.
fn write_new(dst: &Path, bytes: &[u8]) -> std::io::Result<()> {
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut name = dst.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}-{n}.tmp", std::process::id()));
    let tmp = dst.with_file_name(name);
    let written = (|| {
        let mut f = create_private(&tmp)?;
        f.write_all(bytes)?;
        drop(f);
        std::fs::rename(&tmp, dst)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// A write's temporary this old never finished: its process was killed,
/// or exited while a load's thread wrote (a write takes seconds at most).
const STALE_WRITE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Remove artifacts of the layout before the tag moved beside them
/// (`HASH-KEY.cwasm` with the tag inside): never loaded again, tens of MB
/// each for a Python or JavaScript tool. And remove writes' temporaries
/// left behind (see [`STALE_WRITE`]), as large.
fn sweep_leftovers(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        // A write's own temporary (named as `put` names them), a plain
        // file (`DirEntry::metadata` does not follow links) of that age.
        let stale_write = || {
            is_write_temporary(&name)
                && e.metadata().is_ok_and(|m| {
                    m.is_file()
                        && m.modified()
                            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > STALE_WRITE))
                })
        };
        if (name.ends_with(".cwasm") && !name.ends_with(".b3.cwasm")) || stale_write() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Whether `name` is one [`write_new`] writes to before renaming it into
/// place: `HASH-KEY.b3.{cwasm,tag}.PID-N.tmp` or
/// `HASH-KEY-FORM.b3.describe.PID-N.tmp`, and nothing else a shared
/// directory may hold.
fn is_write_temporary(name: &str) -> bool {
    let Some((target, write)) = name.strip_suffix(".tmp").and_then(|n| n.rsplit_once('.')) else {
        return false;
    };
    let numbered = write.split_once('-').is_some_and(|(pid, n)| {
        [pid, n]
            .iter()
            .all(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
    });
    numbered
        && [".b3.cwasm", ".b3.tag", ".b3.describe"]
            .iter()
            .any(|kind| target.ends_with(kind))
}

/// Fill `buf` from the kernel's random source.
fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::open("/dev/urandom")?;
    f.read_exact(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn engine() -> Engine {
        Engine::default()
    }

    #[test]
    fn an_open_directory_is_refused_not_chmodded() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("c");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(
            Cache::new(&d, &engine()),
            Err(CacheError::NotKept(crate::files::NotKept::Mode { .. }))
        ));
        let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o777, "left as it was");
        let link = t.path().join("l");
        std::os::unix::fs::symlink(&d, &link).unwrap();
        assert!(matches!(
            Cache::new(&link, &engine()),
            Err(CacheError::Symlink(_))
        ));
    }

    #[test]
    fn a_write_left_unfinished_is_swept_at_open_and_one_in_progress_is_not() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("c");
        drop(Cache::new(&d, &engine()).unwrap());
        let left = d.join("a.b3.cwasm.4242-0.tmp");
        let left_tag = d.join("a.b3.tag.4242-1.tmp");
        let left_description = d.join("a.b3.describe.4242-3.tmp");
        let writing = d.join("b.b3.cwasm.4242-2.tmp");
        // Old, but not a write's: a cache directory may be shared.
        let other = d.join("notes.tmp");
        let renamed = d.join("a.b3.cwasm.x-1.tmp");
        for p in [
            &left,
            &left_tag,
            &left_description,
            &writing,
            &other,
            &renamed,
        ] {
            std::fs::write(p, b"partial").unwrap();
        }
        for p in [&left, &left_tag, &left_description, &other, &renamed] {
            std::fs::File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(std::time::SystemTime::now() - 2 * STALE_WRITE)
                .unwrap();
        }
        drop(Cache::new(&d, &engine()).unwrap());
        assert!(!left.exists(), "a write two hours old is removed");
        assert!(!left_tag.exists(), "its tag's too");
        assert!(!left_description.exists(), "and its description's");
        assert!(writing.exists(), "a write in progress is left alone");
        assert!(other.exists(), "a file put never writes is left alone");
        assert!(renamed.exists(), "so is one named almost like a write");
        assert!(d.join("key").exists(), "the key stays");
    }

    /// A recorded description comes back only for its own component, and
    /// only as this host wrote it: not for another digest, not with its
    /// tag moved to another record, not cut short; and an artifact's tag
    /// is no description's (the keys are derived apart).
    #[test]
    fn a_description_comes_back_only_as_written_for_its_own_component() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("c");
        let c = Cache::new(&d, &engine()).unwrap();
        let (a, b) = ([1u8; 32], [2u8; 32]);
        c.put_description(&a, b"answer of a");
        assert_eq!(c.get_record(&a).as_deref(), Some(&b"answer of a"[..]));
        assert_eq!(c.get_record(&b), None);
        // A's record under b's name.
        std::fs::copy(c.description_path_for(&a), c.description_path_for(&b)).unwrap();
        assert_eq!(c.get_record(&b), None);
        assert!(!c.description_path_for(&b).exists(), "discarded");
        // Cut short.
        let whole = std::fs::read(c.description_path_for(&a)).unwrap();
        std::fs::write(c.description_path_for(&a), &whole[..whole.len() - 1]).unwrap();
        assert_eq!(c.get_record(&a), None);
        // A tag made over exactly a record's message, but under the
        // artifacts' key: the keys are derived apart.
        let forged_mac = {
            let mut m = c.keyed(&c.mac_key, &a);
            m.update(c.description_form.as_bytes());
            m.update(b"answer of a");
            m.finalize()
        };
        let right = c.description_mac(&a, b"answer of a");
        assert_ne!(forged_mac, right);
        let forged = [forged_mac.as_bytes(), &b"answer of a"[..]].concat();
        create_private(&c.description_path_for(&a))
            .unwrap()
            .write_all(&forged)
            .unwrap();
        assert_eq!(c.get_record(&a), None);
        // Too large to record: not written, asked again next time.
        assert!(!c.description_path_for(&a).exists(), "discarded");
        c.put_description(&a, &vec![b' '; MAX_DESCRIPTION + 1]);
        assert!(!c.description_path_for(&a).exists());
        // Recorded and read back as what it was; one that does not parse
        // as what the reader expects is discarded.
        let record = description_record(&vec!["x".to_string(); 3]).unwrap();
        c.put_description(&a, &record);
        assert_eq!(
            c.get_description::<Vec<String>>(&a),
            Some(vec!["x".to_string(); 3])
        );
        assert_eq!(c.get_description::<Vec<u32>>(&a), None);
        assert!(!c.description_path_for(&a).exists(), "discarded");
        // Serializing stops at the bound: a name escaping six-fold.
        assert!(description_record(&"\u{1}".repeat(MAX_DESCRIPTION / 6 + 1)).is_none());
        assert!(description_record(&"\u{1}".repeat(MAX_DESCRIPTION / 7)).is_some());
    }

    /// The review of the fix's case: a FIFO planted as the cache's key
    /// held the start for good. It is refused at once.
    #[test]
    fn a_fifo_planted_as_the_key_is_refused_at_once() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("c");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        fifo(&d.join("key"));
        assert!(at_once(move || Cache::new(&d, &engine()).is_err()));
    }

    /// Make a FIFO at `p`.
    fn fifo(p: &Path) {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo on a path of the test's own.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    /// What `f` gives, within ten seconds (on a thread of its own, left
    /// behind if it waits: what the test is there to catch).
    fn at_once<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(f()).unwrap());
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("done at once, not waiting on a FIFO")
    }

    #[test]
    fn a_key_write_left_by_a_crash_does_not_stop_the_next_from_making_its_key() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("c");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        // What this process would have named its key write by its id alone.
        std::fs::write(d.join(format!("key.tmp{}", std::process::id())), b"").unwrap();
        Cache::new(&d, &engine()).unwrap();
        assert_eq!(std::fs::read(d.join("key")).unwrap().len(), 32);
    }

    /// A review's cases: the parents the cache makes were made with the
    /// umask's mode (0777 under `umask 0`), and a FIFO planted in place of
    /// an artifact held its reader for good.
    #[test]
    fn made_parents_are_private_and_a_planted_fifo_is_refused_at_once() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("a/b/c");
        // Made with the process's umask (022 when tests run: 0755 before).
        let cache = Cache::new(&d, &engine()).unwrap();
        for p in [t.path().join("a"), t.path().join("a/b")] {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", p.display());
        }
        let sha = [9u8; 32];
        fifo(&cache.path_for(&sha));
        let e = engine();
        assert!(at_once(move || cache.get(&e, &sha).is_none()));
    }

    #[test]
    fn a_planted_artifact_is_never_loaded() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("c");
        let e = engine();
        let cache = Cache::new(&d, &e).unwrap();
        // The smallest component: the header alone.
        let c = Component::from_binary(&e, b"\0asm\x0d\x00\x01\x00").unwrap();
        let sha = [7u8; 32];
        cache.put(&sha, &c);
        assert!(cache.get(&e, &sha).is_some(), "our own artifact loads");
        // Someone writes other bytes under that name, without the key (here
        // ours with one byte more: anything but what we wrote).
        let mut other = c.serialize().unwrap();
        other.push(0);
        std::fs::write(cache.path_for(&sha), other).unwrap();
        std::fs::set_permissions(cache.path_for(&sha), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        assert!(cache.get(&e, &sha).is_none(), "a bad MAC is refused");
        assert!(!cache.path_for(&sha).exists(), "and removed");
        assert!(!cache.tag_path_for(&sha).exists(), "with its tag");
        // An artifact without a tag is not loaded either (and is simply
        // recompiled: nothing to warn about).
        std::fs::write(cache.path_for(&sha), c.serialize().unwrap()).unwrap();
        std::fs::set_permissions(cache.path_for(&sha), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        assert!(cache.get(&e, &sha).is_none(), "no tag, no load");
        // A tag that is a symlink to a real tag is refused.
        cache.put(&sha, &c);
        let real = t.path().join("tag");
        std::fs::rename(cache.tag_path_for(&sha), &real).unwrap();
        std::os::unix::fs::symlink(&real, cache.tag_path_for(&sha)).unwrap();
        assert!(cache.get(&e, &sha).is_none(), "a symlinked tag is refused");
        // The key survives a restart.
        let again = Cache::new(&d, &e).unwrap();
        assert_eq!(again.mac_key, cache.mac_key);
    }
}
