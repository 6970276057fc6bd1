//! The catalog: which tools exist in which scope. A scope (tenant, agent or
//! session) sees only its own tools; the same name may exist in two scopes.
//!
//! Loading never stops at a bad tool: each failure is recorded with its file
//! and the rest still load. The catalog is immutable once built; `core`
//! swaps in a new one on reload, so in-flight calls finish on the old one.

use crate::error::LoadError;
use crate::manifest::Manifest;
use crate::model::ToolDef;
use crate::sandbox::{LoadedComponent, Sandbox};
use crate::schema::Schema;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The set of tools a caller may see and call.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope(Arc<str>);

impl Scope {
    pub fn new(name: impl AsRef<str>) -> Scope {
        Scope(Arc::from(name.as_ref()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Scope {
    fn default() -> Self {
        Scope::new("default")
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where tools come from: a directory of manifests (every `*.toml` in it), a
/// manifest file, or a `.wasm` whose manifest sits beside it (`x.wasm` ->
/// `x.toml`).
#[derive(Debug, Clone)]
pub struct Source {
    pub scope: Scope,
    pub path: PathBuf,
}

impl Source {
    pub fn new(scope: Scope, path: impl Into<PathBuf>) -> Source {
        Source {
            scope,
            path: path.into(),
        }
    }

    /// Manifest files this source names, sorted.
    pub fn manifests(&self) -> Result<Vec<PathBuf>, LoadError> {
        let p = &self.path;
        let err = |reason: String| LoadError::Source {
            path: p.clone(),
            reason,
        };
        if p.is_dir() {
            let mut out: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| err(format!("cannot read tools directory: {e}")))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
                .collect();
            out.sort();
            Ok(out)
        } else if p.extension().is_some_and(|x| x == "wasm") {
            let m = p.with_extension("toml");
            if m.is_file() {
                Ok(vec![m])
            } else {
                Err(err(format!(
                    "no manifest beside it (expected {})",
                    m.display()
                )))
            }
        } else if p.is_file() {
            Ok(vec![p.clone()])
        } else {
            Err(err("no such file or directory".into()))
        }
    }
}

/// A callable tool: its definition, compiled schemas and component.
pub struct CatalogTool {
    pub def: ToolDef,
    pub component: Arc<LoadedComponent>,
    pub input: Schema,
    pub output: Option<Schema>,
}

/// What happened while loading, for progress output.
#[derive(Debug)]
pub enum LoadEvent<'a> {
    Loading {
        manifest: &'a Path,
        index: usize,
        total: usize,
    },
    Loaded {
        manifest: &'a Path,
        tools: usize,
        compiled: bool,
        millis: u128,
    },
    Failed {
        error: &'a LoadError,
    },
}

#[derive(Default)]
pub struct Catalog {
    scopes: HashMap<Scope, BTreeMap<Arc<str>, Arc<CatalogTool>>>,
    /// Every tool that failed to load, and why.
    pub errors: Vec<LoadError>,
}

impl Catalog {
    /// Load every source. Never fails as a whole: see `errors`.
    pub async fn load(
        sandbox: &Sandbox,
        sources: &[Source],
        on_event: &(dyn Fn(LoadEvent<'_>) + Sync),
    ) -> Catalog {
        let mut cat = Catalog::default();
        let mut owners: HashMap<(Scope, Arc<str>), PathBuf> = HashMap::new();
        let mut work = Vec::new();
        for s in sources {
            cat.scopes.entry(s.scope.clone()).or_default();
            match s.manifests() {
                Ok(ms) => work.extend(ms.into_iter().map(|m| (s.scope.clone(), m))),
                Err(e) => {
                    on_event(LoadEvent::Failed { error: &e });
                    cat.errors.push(e);
                }
            }
        }
        let total = work.len();
        for (index, (scope, mpath)) in work.into_iter().enumerate() {
            on_event(LoadEvent::Loading {
                manifest: &mpath,
                index,
                total,
            });
            let started = std::time::Instant::now();
            match load_one(sandbox, &mpath).await {
                Ok(tools) => {
                    let compiled = tools.first().is_some_and(|t| t.component.compiled);
                    let mut added = 0;
                    for t in tools {
                        let key = (scope.clone(), t.def.name.clone());
                        if let Some(other) = owners.get(&key) {
                            let e = LoadError::NameClash {
                                manifest: mpath.clone(),
                                tool: t.def.name.to_string(),
                                other: other.clone(),
                                scope: scope.to_string(),
                            };
                            on_event(LoadEvent::Failed { error: &e });
                            cat.errors.push(e);
                            continue;
                        }
                        owners.insert(key, mpath.clone());
                        cat.scopes
                            .entry(scope.clone())
                            .or_default()
                            .insert(t.def.name.clone(), Arc::new(t));
                        added += 1;
                    }
                    on_event(LoadEvent::Loaded {
                        manifest: &mpath,
                        tools: added,
                        compiled,
                        millis: started.elapsed().as_millis(),
                    });
                }
                Err(e) => {
                    on_event(LoadEvent::Failed { error: &e });
                    cat.errors.push(e);
                }
            }
        }
        cat
    }

    /// The tools of `scope`, by name. Empty for an unknown scope.
    pub fn tools(&self, scope: &Scope) -> impl Iterator<Item = &Arc<CatalogTool>> {
        self.scopes.get(scope).into_iter().flat_map(|m| m.values())
    }

    /// Tool `name` if, and only if, it is in `scope`.
    pub fn get(&self, scope: &Scope, name: &str) -> Option<&Arc<CatalogTool>> {
        self.scopes.get(scope)?.get(name)
    }

    pub fn scopes(&self) -> impl Iterator<Item = &Scope> {
        self.scopes.keys()
    }
}

async fn load_one(sandbox: &Sandbox, mpath: &Path) -> Result<Vec<CatalogTool>, LoadError> {
    let manifest = Manifest::load(mpath)?;
    let comp = Arc::new(sandbox.load(manifest).await?);
    comp.tools
        .iter()
        .map(|def| {
            let bad = |reason: String| LoadError::BadToolDef {
                manifest: mpath.to_owned(),
                tool: def.name.to_string(),
                reason,
            };
            let input =
                Schema::compile(&def.input_schema).map_err(|e| bad(format!("input {e}")))?;
            let output = def
                .output_schema
                .as_ref()
                .map(|s| Schema::compile(s))
                .transpose()
                .map_err(|e| bad(format!("output {e}")))?;
            Ok(CatalogTool {
                def: def.clone(),
                component: comp.clone(),
                input,
                output,
            })
        })
        .collect()
}
