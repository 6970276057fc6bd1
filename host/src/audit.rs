//! The audit log: one JSON line per call and per decision (allowed, denied,
//! unknown tool, and how it ended). Written off the call path by a dedicated
//! thread so a slow disk never slows a call.
//!
//! Audit records what happened; it decides nothing.

use serde::Serialize;
use std::io::Write;
use std::path::Path;
use std::sync::mpsc;

#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    /// Unix time in milliseconds.
    pub ts_ms: u128,
    pub scope: String,
    pub caller: String,
    pub tool: String,
    /// `ok`, or the `CallError::kind` that ended the call.
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub duration_us: u64,
    pub args_bytes: usize,
}

/// Where audit records go.
#[derive(Clone, Default)]
pub struct Audit {
    tx: Option<mpsc::Sender<AuditRecord>>,
}

impl Audit {
    /// No audit log.
    pub fn disabled() -> Audit {
        Audit { tx: None }
    }

    /// Append JSON lines to `path` (created if missing).
    pub fn to_file(path: &Path) -> std::io::Result<Audit> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
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
        Ok(Audit { tx: Some(tx) })
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    pub fn record(&self, rec: AuditRecord) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(rec);
        }
    }
}
