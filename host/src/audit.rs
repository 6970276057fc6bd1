//! The audit log: one JSON line per call and per decision (allowed, denied,
//! unknown tool, and how it ended). Written off the call path by a dedicated
//! thread so a slow disk never slows a call.
//!
//! Audit records what happened; it decides nothing.

use serde::Serialize;
use std::io::Write;
use std::path::Path;
use std::sync::mpsc;

/// One call, as the audit log records it.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct AuditRecord {
    /// Unix time in milliseconds.
    pub ts_ms: u128,
    /// Whose tools.
    pub scope: String,
    /// Which front end, session or agent called.
    pub caller: String,
    /// The tool named.
    pub tool: String,
    /// `ok`, or the `CallError::kind` that ended the call.
    pub outcome: &'static str,
    /// The error, if the call failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// How long the call took, queueing included.
    pub duration_us: u64,
    /// Size of the arguments as JSON.
    pub args_bytes: usize,
}

/// Where audit records go.
#[derive(Clone, Default)]
pub struct Audit {
    tx: Option<mpsc::Sender<AuditRecord>>,
    path: Option<std::path::PathBuf>,
}

impl Audit {
    /// No audit log.
    pub fn disabled() -> Audit {
        Audit::default()
    }

    /// The file records go to, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Append JSON lines to `path` (created if missing).
    pub fn to_file(path: &Path) -> std::io::Result<Audit> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        let (tx, rx) = mpsc::channel::<AuditRecord>();
        std::thread::Builder::new()
            .name("toolhost-audit".into())
            .spawn(move || {
                let mut w = std::io::BufWriter::new(file);
                while let Ok(rec) = rx.recv() {
                    let _ = serde_json::to_writer(&mut w, &rec);
                    let _ = w.write_all(b"\n");
                    // Flush whenever the queue drains, so the file is current
                    // while batching bursts.
                    while let Ok(rec) = rx.try_recv() {
                        let _ = serde_json::to_writer(&mut w, &rec);
                        let _ = w.write_all(b"\n");
                    }
                    let _ = w.flush();
                }
            })?;
        Ok(Audit {
            tx: Some(tx),
            path: Some(std::path::absolute(path)?),
        })
    }

    /// Whether records go anywhere.
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Append a record (off the call path).
    pub fn record(&self, rec: AuditRecord) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(rec);
        }
    }
}
