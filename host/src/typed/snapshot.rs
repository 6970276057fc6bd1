//! Committed JSON snapshots for tests: compare, or rewrite them when
//! `TOOLHOST_UPDATE_SNAPSHOTS=1`.

use serde_json::Value;
use std::path::PathBuf;

/// Compare `actual` with the JSON file at `path` (relative to the
/// workspace root).
pub fn check(path: &str, actual: &Value) {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .join(path);
    let pretty = serde_json::to_string_pretty(actual).unwrap() + "\n";
    if std::env::var_os("TOOLHOST_UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, &pretty).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&file).unwrap_or_else(|e| {
        panic!(
            "snapshot {} is missing ({e}); run with TOOLHOST_UPDATE_SNAPSHOTS=1 to write it",
            file.display()
        )
    });
    let expected: Value = serde_json::from_str(&expected).unwrap();
    assert!(
        &expected == actual,
        "snapshot {} differs; if the change is intended, rerun with TOOLHOST_UPDATE_SNAPSHOTS=1.\nactual:\n{pretty}",
        file.display()
    );
}
