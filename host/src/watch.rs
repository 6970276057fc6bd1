//! Hot reload: watch the tool sources and reload the core when they change.
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
    _watcher: notify::RecommendedWatcher,
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
    let (tx, rx) = mpsc::unbounded_channel();
    let mut watcher =
        notify::recommended_watcher(move |ev: notify::Result<notify::Event>| match ev {
            Ok(ev) if is_change(&ev.kind) => {
                let _ = tx.send(());
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("watching tools: {e}"),
        })?;
    for p in paths {
        let dir = watched_dir(p);
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
        tracing::info!("watching {} for tool changes", dir.display());
    }
    let task = tokio::spawn(reload_on_change(core, rx, debounce));
    Ok(Watcher {
        _watcher: watcher,
        task,
    })
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

async fn reload_on_change(core: Core, mut rx: mpsc::UnboundedReceiver<()>, debounce: Duration) {
    while rx.recv().await.is_some() {
        // Quiet period: keep absorbing events until none arrives for `debounce`.
        loop {
            match tokio::time::timeout(debounce, rx.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) => return,
                Err(_) => break,
            }
        }
        let errors = core.reload().await;
        tracing::info!(
            "tools reloaded ({} tools in scope default, {} load errors)",
            core.tools(&crate::Scope::default()).len(),
            errors.len()
        );
    }
}
