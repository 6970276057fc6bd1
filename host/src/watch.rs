//! Hot reload: debounced changes to the tool sources and the host config
//! (a build writes a `.wasm` and its manifest in quick succession), for a
//! front end to answer with `Core::reload` or `Core::reconfigure`: calls
//! already running finish on the old catalog, and watchers of each scope
//! (the MCP front end) learn whether its tool list changed.
//!
//! Only changes to what is watched count: a watched file itself, or a
//! manifest or component (`*.toml`, `*.wasm`) in a watched directory or
//! beside a watched file; any other event in those directories counts
//! only if what is watched now resolves to other files than it did (a
//! Kubernetes ConfigMap or Secret mount changes by swapping a `..data`
//! symlink, and names no watched file). Found by review: every change in
//! those directories counted, so a tenant made the host reload at will,
//! through an audit log kept beside the config (each call's record a
//! change) or a tool touching its own grant's directory there.
//!
//! Owns: what counts as a change, and the debounce. Must not touch: what
//! a reload does (`Core::reload`, `Core::reconfigure`).

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
        let dirs: Vec<PathBuf> = watched.dirs.keys().cloned().collect();
        let mut watcher =
            notify::recommended_watcher(move |ev: notify::Result<notify::Event>| match ev {
                Ok(ev) if is_change(&ev.kind) => {
                    // Both looked at for each path (so that what a direct
                    // change resolves to is remembered, and not reported
                    // again at the next event).
                    let direct = ev.paths.iter().any(|p| watched.counts(p));
                    let mut moved = false;
                    for p in &ev.paths {
                        moved |= watched.resolves_elsewhere(p);
                    }
                    if direct || moved {
                        let _ = tx.send(());
                    }
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
    /// writes a `.wasm` and its manifest in quick succession), but no
    /// longer than four debounces from the first change: a writer of a
    /// watched directory changing a file every 150 ms held off a narrowed
    /// config for as long as it went on (found by review).
    pub async fn next(&mut self) -> Option<()> {
        self.rx.recv().await?;
        let until = tokio::time::Instant::now() + self.debounce * MAX_DEBOUNCES;
        loop {
            let quiet = (tokio::time::Instant::now() + self.debounce).min(until);
            match tokio::time::timeout_at(quiet, self.rx.recv()).await {
                Ok(Some(())) if tokio::time::Instant::now() < until => continue,
                Ok(Some(())) => return Some(()),
                Ok(None) => return None,
                Err(_) => return Some(()),
            }
        }
    }
}

/// The longest [`Changes::next`] waits after a change, in debounces.
const MAX_DEBOUNCES: u32 = 4;

fn is_change(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
    )
}

/// The directories watched, each with the names of the files watched in
/// it (besides its manifests and components), and what the watched paths
/// resolved to when last looked at.
struct Watched {
    dirs: HashMap<PathBuf, HashSet<OsString>>,
    /// Each watched path, the directory it is watched through, and what
    /// it resolved to when last looked at.
    paths: std::sync::Mutex<Vec<(PathBuf, PathBuf, Resolved)>>,
}

/// What a watched path resolves to: a file's identity and version, or a
/// directory's manifests and components, each so (symlinks followed).
type Resolved = Vec<(
    OsString,
    Option<(u64, u64, u64, Option<std::time::SystemTime>)>,
)>;

fn resolved(p: &Path) -> Resolved {
    use std::os::unix::fs::MetadataExt;
    let id = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.dev(), m.ino(), m.len(), m.modified().ok()))
    };
    if !p.is_dir() {
        return vec![(OsString::new(), id(p))];
    }
    let mut out: Resolved = std::fs::read_dir(p)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|e| manifest_or_component(e))
        .map(|e| (e.file_name().unwrap_or_default().to_owned(), id(&e)))
        .collect();
    out.sort();
    out
}

impl Watched {
    fn of(paths: &[PathBuf]) -> Watched {
        // Absolute, as the watcher reports events (it joins a relative
        // path to the working directory): a relative path never matched,
        // so with `--tools srv` no change was ever reported, and a
        // narrowed config was never applied (found by review).
        let paths: Vec<PathBuf> = paths
            .iter()
            .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
            .collect();
        let paths = &paths[..];
        let mut dirs: HashMap<PathBuf, HashSet<OsString>> = HashMap::new();
        for p in paths {
            let names = dirs.entry(watched_dir(p)).or_default();
            if !p.is_dir()
                && let Some(name) = p.file_name()
            {
                names.insert(name.to_owned());
            }
        }
        Watched {
            dirs,
            paths: std::sync::Mutex::new(
                paths
                    .iter()
                    .map(|p| (p.clone(), watched_dir(p), resolved(p)))
                    .collect(),
            ),
        }
    }

    /// Whether a watched path in the directory of a change at `event`
    /// resolves to other files than when last looked at (then remembered
    /// as it is now). Only that directory's: a change beside the config
    /// (an audit line) looks at the config alone, not every tools
    /// directory.
    fn resolves_elsewhere(&self, event: &Path) -> bool {
        let dir = parent_dir(event);
        // In a watched directory, only what a kubelet-style swap renames
        // (`..data`, `..2026_12_07…`) can make its manifests other files
        // without an event naming one (which `counts`). Looking again at
        // every event listed the whole directory each time: a writer
        // appending to a log there made the host list 52,000 entries per
        // append (found by review).
        let swapped = event
            .file_name()
            .is_some_and(|n| n.as_encoded_bytes().starts_with(b".."));
        let mut paths = self.paths.lock().unwrap_or_else(|e| e.into_inner());
        let mut moved = false;
        for (p, _, was) in paths
            .iter_mut()
            .filter(|(p, d, _)| d == dir && (swapped || p != d))
        {
            let now = resolved(p);
            if *was != now {
                *was = now;
                moved = true;
            }
        }
        moved
    }

    /// Whether a change at `path` (as the watcher reports it: a watched
    /// directory joined with a name) counts.
    fn counts(&self, path: &Path) -> bool {
        let Some(name) = path.file_name() else {
            return false;
        };
        self.dirs
            .get(parent_dir(path))
            .is_some_and(|names| names.contains(name) || manifest_or_component(path))
    }
}

/// Whether `p` names a manifest or a component (`*.toml`, `*.wasm`).
fn manifest_or_component(p: &Path) -> bool {
    p.extension().is_some_and(|x| x == "toml" || x == "wasm")
}

/// The directory `p` is in (`.` for a bare name).
fn parent_dir(p: &Path) -> &Path {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// The directory a watched path is watched through: itself, or a file's.
fn watched_dir(p: &Path) -> PathBuf {
    if p.is_dir() {
        p.to_path_buf()
    } else {
        parent_dir(p).to_path_buf()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ConfigMap mount in `d` as the kubelet makes it: `file` in a new
    /// `..{version}` directory, which `..data` then names (the first time
    /// a link, later a new link renamed over it, as its atomic writer
    /// does), and `file` a link through `..data`.
    fn configmap_version(d: &Path, version: &str, file: &str, text: &str) {
        use std::os::unix::fs::symlink;
        let dir = format!("..{version}");
        std::fs::create_dir(d.join(&dir)).unwrap();
        std::fs::write(d.join(&dir).join(file), text).unwrap();
        if d.join("..data").exists() {
            symlink(&dir, d.join("..data_tmp")).unwrap();
            std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
        } else {
            symlink(&dir, d.join("..data")).unwrap();
            symlink(format!("..data/{file}"), d.join(file)).unwrap();
        }
    }

    /// Whether `changes` reports a change within half a second.
    async fn reported(changes: &mut Changes) -> bool {
        tokio::time::timeout(Duration::from_millis(500), changes.next())
            .await
            .is_ok()
    }

    /// The fix review's case: a Kubernetes ConfigMap mount changes by
    /// swapping its `..data` symlink, and no event names the watched file
    /// (a symlink through it). What the config resolves to changed: that
    /// counts; an unrelated file beside it still does not.
    #[tokio::test]
    async fn a_configmap_swap_counts() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        configmap_version(d, "v1", "toolhost.toml", "# one\n");
        let mut changes =
            Changes::new(&[d.join("toolhost.toml")], Duration::from_millis(20)).unwrap();
        std::fs::write(d.join("audit.jsonl"), "{}\n").unwrap();
        assert!(!reported(&mut changes).await, "an unwatched file counted");
        // The kubelet's atomic writer: a new directory, a new link, renamed
        // over `..data`.
        configmap_version(d, "v2", "toolhost.toml", "# two, longer\n");
        assert!(reported(&mut changes).await, "the swap did not count");
    }

    /// A tools directory mounted from a ConfigMap: its manifests are links
    /// through `..data`, which the kubelet swaps. The swap counts (only
    /// such names make a watched directory be looked at again).
    #[tokio::test]
    async fn a_configmap_swap_of_a_tools_directory_counts() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        configmap_version(d, "v1", "echo.toml", "# one\n");
        let mut changes = Changes::new(&[d.to_path_buf()], Duration::from_millis(20)).unwrap();
        std::fs::write(d.join("notes.log"), "x\n").unwrap();
        assert!(!reported(&mut changes).await, "an unwatched file counted");
        configmap_version(d, "v2", "echo.toml", "# two, longer\n");
        assert!(reported(&mut changes).await, "the swap did not count");
    }

    /// The review's case: the watcher reports a relative path's events
    /// under absolute paths, so with `--tools srv` (relative) no change was
    /// ever reported. Watched as given, relative paths count too.
    #[tokio::test]
    async fn changes_under_a_relative_path_count() {
        let dir = tempfile::tempdir_in(".").unwrap();
        let cwd = std::env::current_dir().unwrap();
        let relative = dir.path().strip_prefix(&cwd).unwrap().to_path_buf();
        assert!(relative.is_relative());
        let config = relative.join("toolhost.toml");
        std::fs::write(&config, "").unwrap();
        let mut changes = Changes::new(
            &[relative.clone(), config.clone()],
            Duration::from_millis(20),
        )
        .unwrap();
        std::fs::write(relative.join("echo.toml"), "x").unwrap();
        assert!(reported(&mut changes).await, "a manifest did not count");
        std::fs::write(&config, "# narrowed\n").unwrap();
        assert!(reported(&mut changes).await, "the config did not count");
    }

    /// The review's case: a writer of a watched directory changing a file
    /// every 150 ms held off every reload (the quiet period restarted at
    /// each change) for as long as it went on. A change is reported at
    /// most four debounces after the first.
    #[tokio::test]
    async fn changes_that_never_stop_are_reported_still() {
        let tools = tempfile::tempdir().unwrap();
        let mut changes =
            Changes::new(&[tools.path().to_path_buf()], Duration::from_millis(100)).unwrap();
        let path = tools.path().join("junk.toml");
        let writer = std::thread::spawn(move || {
            for i in 0..60 {
                std::fs::write(&path, format!("# {i}\n")).unwrap();
                std::thread::sleep(Duration::from_millis(40));
            }
        });
        let t = std::time::Instant::now();
        let got = tokio::time::timeout(Duration::from_millis(1500), changes.next()).await;
        assert!(got.is_ok(), "not reported while the writes went on");
        assert!(
            t.elapsed() < Duration::from_millis(1500),
            "{:?}",
            t.elapsed()
        );
        writer.join().unwrap();
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
