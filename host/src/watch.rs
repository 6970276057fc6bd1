//! Hot reload: debounced changes to the tool sources and the host config
//! (a build writes a `.wasm` and its manifest in quick succession), for a
//! front end to answer with `Core::reload` or `Core::reconfigure`: calls
//! already running finish on the old catalog, and watchers of each scope
//! (the MCP front end) learn whether its tool list changed.
//!
//! Only changes to what is watched count: a watched file itself, or a
//! manifest or component (`*.toml`, `*.wasm`) in a watched directory or
//! beside a watched file. Found by review: every change in those
//! directories counted, so a tenant made the host reload at will, through
//! an audit log kept beside the config (each call's record a change) or a
//! tool touching its own grant's directory there; and each reload gave
//! every scope a fresh share of the pool beside the one its running calls
//! held.

use notify::{EventKind, RecursiveMode, Watcher as _};
use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use std::time::Duration;
use tokio::sync::mpsc;

/// Debounced changes under some paths. Dropping it stops watching.
///
/// ```no_run
/// # async fn demo(core: toolhost::Core) -> Result<(), Box<dyn std::error::Error>> {
/// let paths = ["build/tools".into()];
/// let mut changes = toolhost::Changes::new(&paths, std::time::Duration::from_millis(250))?;
/// while changes.next().await.is_some() {
///     // Or re-read the host config and `core.reconfigure(...)` it.
///     core.reload().await;
/// }
/// # Ok(()) }
/// ```
pub struct Changes {
    _watcher: notify::RecommendedWatcher,
    tx: mpsc::UnboundedSender<()>,
    rx: mpsc::UnboundedReceiver<()>,
    debounce: Duration,
}

impl Changes {
    /// Watch `paths` (directories, or files through their directories):
    /// a change to a watched file, or to a `*.toml` or `*.wasm` in a
    /// watched directory or beside a watched file, is reported; any other
    /// change in those directories is not.
    pub fn new(paths: &[PathBuf], debounce: Duration) -> notify::Result<Changes> {
        let (tx, rx) = mpsc::unbounded_channel();
        let sender = tx.clone();
        let watched = Watched::of(paths);
        let dirs: Vec<PathBuf> = watched.0.keys().cloned().collect();
        let mut watcher =
            notify::recommended_watcher(move |ev: notify::Result<notify::Event>| match ev {
                Ok(ev) if is_change(&ev.kind) && ev.paths.iter().any(|p| watched.counts(p)) => {
                    let _ = tx.send(());
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("watching for changes: {e}"),
            })?;
        for dir in dirs {
            watcher.watch(&dir, RecursiveMode::NonRecursive)?;
            tracing::info!("watching {} for changes", dir.display());
        }
        Ok(Changes {
            _watcher: watcher,
            tx: sender,
            rx,
            debounce,
        })
    }

    /// Whether a change has arrived that [`Changes::next`] has not yet
    /// reported (taking it): for a front end that replaces its `Changes`
    /// (new paths) and must not lose what the old one saw meanwhile.
    pub fn pending(&mut self) -> bool {
        let mut any = false;
        while self.rx.try_recv().is_ok() {
            any = true;
        }
        any
    }

    /// Report a change at the next [`Changes::next`], as if a file had
    /// changed.
    pub fn touch(&self) {
        let _ = self.tx.send(());
    }

    /// Wait for a change, then for a quiet period of the debounce (a build
    /// writes a `.wasm` and its manifest in quick succession).
    pub async fn next(&mut self) -> Option<()> {
        self.rx.recv().await?;
        loop {
            match tokio::time::timeout(self.debounce, self.rx.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) => return None,
                Err(_) => return Some(()),
            }
        }
    }
}

fn is_change(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
    )
}

/// The directories watched, each with the names of the files watched in
/// it (besides its manifests and components).
struct Watched(HashMap<PathBuf, HashSet<OsString>>);

impl Watched {
    fn of(paths: &[PathBuf]) -> Watched {
        let mut dirs: HashMap<PathBuf, HashSet<OsString>> = HashMap::new();
        for p in paths {
            let names = dirs.entry(watched_dir(p)).or_default();
            if !p.is_dir()
                && let Some(name) = p.file_name()
            {
                names.insert(name.to_owned());
            }
        }
        Watched(dirs)
    }

    /// Whether a change at `path` (as the watcher reports it: a watched
    /// directory joined with a name) counts.
    fn counts(&self, path: &Path) -> bool {
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return false;
        };
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        self.0.get(dir).is_some_and(|names| {
            names.contains(name) || path.extension().is_some_and(|x| x == "toml" || x == "wasm")
        })
    }
}

fn watched_dir(p: &Path) -> PathBuf {
    if p.is_dir() {
        return p.to_path_buf();
    }
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `changes` reports a change within half a second.
    async fn reported(changes: &mut Changes) -> bool {
        tokio::time::timeout(Duration::from_millis(500), changes.next())
            .await
            .is_ok()
    }

    /// The review's case: any change in a watched directory counted, so an
    /// audit log kept beside the config, or a tool touching its grant's
    /// directory there, made the host reload at will. Only the watched
    /// files and the manifests and components beside them count.
    #[tokio::test]
    async fn only_changes_to_what_is_watched_count() {
        let dir = tempfile::tempdir().unwrap();
        let tools = tempfile::tempdir().unwrap();
        let config = dir.path().join("toolhost.toml");
        std::fs::write(&config, "").unwrap();
        std::fs::create_dir(dir.path().join("work")).unwrap();
        let mut changes = Changes::new(
            &[config.clone(), tools.path().to_path_buf()],
            Duration::from_millis(20),
        )
        .unwrap();
        // Beside the config: a log, a grant's directory, a file in it.
        std::fs::write(dir.path().join("audit.jsonl"), "{}\n").unwrap();
        std::fs::write(dir.path().join("audit.jsonl.1"), "{}\n").unwrap();
        std::fs::File::open(dir.path().join("work"))
            .unwrap()
            .set_modified(std::time::SystemTime::UNIX_EPOCH)
            .unwrap();
        std::fs::write(dir.path().join("work/x.toml"), "").unwrap();
        std::fs::write(tools.path().join("notes.txt"), "").unwrap();
        assert!(!reported(&mut changes).await, "an unwatched file counted");
        // What is watched counts.
        for (what, path) in [
            ("the config", config.clone()),
            (
                "a manifest beside the config",
                dir.path().join("other.toml"),
            ),
            ("a manifest", tools.path().join("echo.toml")),
            ("a component", tools.path().join("echo.wasm")),
        ] {
            std::fs::write(&path, "x").unwrap();
            assert!(reported(&mut changes).await, "{what} did not count");
        }
    }
}
