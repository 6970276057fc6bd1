//! Hot reload: watch the tool sources (and, for a front end that asks,
//! its host config) and reload the core when they change.
//!
//! File events are debounced (a build writes a `.wasm` and its manifest in
//! quick succession), then `Core::reload` swaps in a new catalog: calls
//! already running finish on the old one, and `Core::subscribe`rs (the MCP
//! front end) learn whether the tool list changed.

use crate::core::Core;
use notify::{EventKind, RecursiveMode, Watcher as _};
use std::path::{Path, PathBuf};

use std::time::Duration;
use tokio::sync::mpsc;

/// Reloads the core while it lives; dropping it stops watching.
pub struct Watcher {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Watch `paths` (tool directories, manifests or `.wasm` files; a file is
/// watched through its directory) and reload `core` once no change has
/// arrived for `debounce`. Must be called inside a tokio runtime.
pub fn watch(core: Core, paths: &[PathBuf], debounce: Duration) -> notify::Result<Watcher> {
    let mut changes = Changes::new(paths, debounce)?;
    let task = tokio::spawn(async move {
        while changes.next().await.is_some() {
            let errors = core.reload().await;
            tracing::info!(
                "tools reloaded ({} tools in scope default, {} load errors)",
                core.tools(&crate::Scope::default()).len(),
                errors.len()
            );
        }
    });
    Ok(Watcher { task })
}

/// Debounced changes under some paths: for a front end that does more on
/// a change than [`watch`] (re-reads its host config, say, and
/// [`Core::reconfigure`]s). Dropping it stops watching.
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
