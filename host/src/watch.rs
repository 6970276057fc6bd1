//! Hot reload: debounced changes to the tool sources and the host config
//! (a build writes a `.wasm` and its manifest in quick succession), for a
//! front end to answer with `Core::reload` or `Core::reconfigure`: calls
//! already running finish on the old catalog, and watchers of each scope
//! (the MCP front end) learn whether its tool list changed.

use notify::{EventKind, RecursiveMode, Watcher as _};
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
    /// Watch `paths` (directories, or files through their directories).
    pub fn new(paths: &[PathBuf], debounce: Duration) -> notify::Result<Changes> {
        let (tx, rx) = mpsc::unbounded_channel();
        let sender = tx.clone();
        let mut watcher =
            notify::recommended_watcher(move |ev: notify::Result<notify::Event>| match ev {
                Ok(ev) if is_change(&ev.kind) => {
                    let _ = tx.send(());
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("watching for changes: {e}"),
            })?;
        let mut dirs: Vec<PathBuf> = paths.iter().map(|p| watched_dir(p)).collect();
        dirs.sort();
        dirs.dedup();
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

fn watched_dir(p: &Path) -> PathBuf {
    if p.is_dir() {
        return p.to_path_buf();
    }
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
