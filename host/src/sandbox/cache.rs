//! On-disk cache of compiled components, keyed by the wasm's sha256 and the
//! engine's compatibility hash, so a second start does not recompile.
//!
//! Only artifacts this host wrote are ever deserialized: the directory is
//! created private (0700), files are written to a temp name and renamed
//! into place, and a file is only trusted under the exact key we computed.

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

pub struct Cache {
    dir: PathBuf,
    engine_key: String,
}

impl Cache {
    pub fn new(dir: &Path, engine: &Engine) -> std::io::Result<Cache> {
        std::fs::create_dir_all(dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
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
        })
    }

    fn path_for(&self, sha256: &[u8; 32]) -> PathBuf {
        self.dir
            .join(format!("{}-{}.cwasm", hex::encode(sha256), self.engine_key))
    }

    /// A previously compiled component, if this host cached one.
    pub fn get(&self, engine: &Engine, sha256: &[u8; 32]) -> Option<Component> {
        let path = self.path_for(sha256);
        if !path.is_file() {
            return None;
        }
        // SAFETY: the file was produced by `Component::serialize` of this
        // host for exactly this wasm digest and engine configuration (both
        // are in its name) in a directory only this user can write.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), "discarding unusable cached component: {e:#}");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Store a freshly compiled component; failures only cost a recompile.
    pub fn put(&self, sha256: &[u8; 32], component: &Component) {
        let path = self.path_for(sha256);
        let result = component
            .serialize()
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                let tmp = path.with_extension(format!("tmp{}", std::process::id()));
                std::fs::write(&tmp, bytes)?;
                std::fs::rename(&tmp, &path)
            });
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), "cannot cache compiled component: {e}");
        }
    }
}
