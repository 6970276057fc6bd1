//! The catalog: which tools exist in which scope. A scope (tenant, agent or
//! session) sees only its own tools; the same name may exist in two scopes,
//! and two tools of one name in a scope are both refused (neither serves).
//!
//! Loading never stops at a bad tool: each failure is recorded with its file
//! and the rest still load. Grants are checked across all components here
//! (two tools may not share a host directory if either may write it). The
//! catalog is immutable once built; `core` swaps in a new one on reload, so
//! in-flight calls finish on the old one.
//!
//! Must not touch: calls (the sandbox runs them) or policy.

use crate::caps::{Caps, fs::HostState};
use crate::error::{LoadError, LoadErrorKind};
use crate::manifest::Manifest;
use crate::model::ToolDef;
use crate::sandbox::{LoadedComponent, Sandbox};
use crate::schema::Schema;
use futures::StreamExt;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The set of tools a caller may see and call: a tenant, an agent, a
/// session. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope(Arc<str>);

impl Scope {
    /// The scope called `name`.
    pub fn new(name: impl AsRef<str>) -> Scope {
        Scope(Arc::from(name.as_ref()))
    }
    /// Its name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Scope {
    /// The scope called `default` (one shared name: a clone, not an
    /// allocation per call).
    fn default() -> Self {
        static DEFAULT: std::sync::LazyLock<Scope> =
            std::sync::LazyLock::new(|| Scope::new("default"));
        DEFAULT.clone()
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where tools come from: a directory of manifests (every `*.toml` in it), a
/// manifest file, or a `.wasm` whose manifest sits beside it (`x.wasm` ->
/// `x.toml`); and the scope they go into, with that scope's caps.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Source {
    /// Whose tools these are.
    pub scope: Scope,
    /// The directory, manifest or `.wasm`.
    pub path: PathBuf,
    /// Caps for this source's tools on top of the host config's (a
    /// tenant's overrides); intersected, so they only narrow. Start from
    /// the host's caps and narrow them: a field left at its default
    /// narrows too (`FsCaps` without quotas allows the built-in 1 GiB).
    pub caps: Option<Arc<Caps>>,
    /// Only the tools of these names, or of the manifests of these names
    /// (a tenant's named tools); `None`: all.
    pub only: Option<Arc<[String]>>,
}

impl Source {
    /// Tools from `path` into `scope`.
    pub fn new(scope: Scope, path: impl Into<PathBuf>) -> Source {
        Source {
            scope,
            path: path.into(),
            caps: None,
            only: None,
        }
    }

    /// Take only the tools named `names`, or of manifests so named, from
    /// this source.
    pub fn only_tools(mut self, names: impl IntoIterator<Item = String>) -> Source {
        self.only = Some(names.into_iter().collect());
        self
    }

    /// Narrow this source's tools further by `caps`.
    pub fn with_caps(mut self, caps: Caps) -> Source {
        self.caps = Some(Arc::new(caps));
        self
    }

    /// Manifest files this source names, sorted: every `*.toml` of a
    /// directory, a manifest itself, or the one beside a `.wasm`. An error
    /// if the path is not one a host loads from (see the README, "Using
    /// it").
    pub fn manifests(&self) -> Result<Vec<PathBuf>, LoadError> {
        let p = &self.path;
        let err = |reason: String| LoadError::new(p, LoadErrorKind::Source { reason });
        if let Err(why) = crate::files::trusted_path(p) {
            return Err(err(format!("not loaded: {why}")));
        }
        if p.is_dir() {
            let mut out: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| err(format!("cannot read tools directory: {e}")))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                // Every `*.toml` but a directory: one that is not a
                // readable regular file (a dangling link, a FIFO) is a
                // load error naming it, not skipped without a word
                // (found by review).
                .filter(|p| is_manifest_name(p) && !p.is_dir())
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

    /// Whether loading it may give tools: not an empty directory, or one
    /// without manifests. A guess made ahead of the load (which reports
    /// what a source really holds), for work worth starting early.
    pub(crate) fn may_have_tools(&self) -> bool {
        match std::fs::read_dir(&self.path) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .any(|e| is_manifest_name(&e.path())),
            Err(_) => self.path.exists(),
        }
    }

    /// Protect what this source is made of: no grant may reach it. A tools
    /// directory is protected whole, inside too: besides its manifests it
    /// may hold their components and, as a package store, the records an
    /// upgrade is reviewed against (`sha256/<digest>/check.toml`; found by
    /// review: a tool granted `<store>/sha256` could widen every installed
    /// package's baseline, and the next signed upgrade asking for more went
    /// through unreviewed). Data for tools belongs outside it.
    pub(crate) fn protect(&self, host: &mut HostState) {
        if self.path.is_dir() {
            host.protect(&self.path, "tools directory", true);
        } else {
            host.protect(&self.path, "tool file", false);
            host.protect(&self.path.with_extension("toml"), "tool manifest", false);
            host.protect(&self.path.with_extension("wasm"), "tool component", false);
        }
    }
}

/// Whether `p` has a manifest's name (`*.toml`).
fn is_manifest_name(p: &Path) -> bool {
    p.extension().is_some_and(|x| x == "toml")
}

/// A callable tool: its definition, compiled schemas and component.
pub(crate) struct CatalogTool {
    pub(crate) def: ToolDef,
    pub(crate) component: Arc<LoadedComponent>,
    pub(crate) input: Schema,
    pub(crate) output: Option<Schema>,
    /// Its calls' metric series, looked up at its first call. A tool is
    /// in one scope of one core's catalog, so one series is its own.
    pub(crate) series: std::sync::OnceLock<crate::metrics::Series>,
}

/// What happened while loading, for progress output.
#[derive(Debug)]
#[non_exhaustive]
pub enum LoadEvent<'a> {
    /// A manifest is about to load.
    #[non_exhaustive]
    Loading {
        /// The manifest.
        manifest: &'a Path,
        /// Its position (from 0).
        index: usize,
        /// How many there are.
        total: usize,
    },
    /// A manifest loaded.
    #[non_exhaustive]
    Loaded {
        /// The manifest.
        manifest: &'a Path,
        /// How many tools it added.
        tools: usize,
        /// Whether it was compiled (false: from the cache, or kept from
        /// its previous load).
        compiled: bool,
        /// Whether its component was asked what it offers (`describe`, in
        /// a sandbox); false: a typed component (its type says), or an
        /// answer recorded earlier, beside its compiled form in the cache
        /// or by its previous load in this process.
        described: bool,
        /// How long it took.
        millis: u128,
    },
    /// A manifest failed to load.
    #[non_exhaustive]
    Failed {
        /// Why.
        error: &'a LoadError,
    },
}

/// The components of one scope that serve resources or prompts, and which
/// one owns each prompt. Resource URIs are owned by exactly one component
/// (clashes are refused at load), found by `ScopeServed::owner`.
#[derive(Default)]
pub(crate) struct ScopeServed {
    /// In load order.
    pub(crate) components: Vec<Arc<LoadedComponent>>,
    pub(crate) prompts: BTreeMap<Arc<str>, Arc<LoadedComponent>>,
    /// Components refused for a clash, whose resources and prompts are not
    /// served. What they claim stays claimed: a third component claiming
    /// it is refused too (else it would take what the two lost).
    refused: Vec<Arc<LoadedComponent>>,
}

impl ScopeServed {
    /// The component that serves `uri`: the one that declares it, or whose
    /// template matches it.
    pub(crate) fn owner(&self, uri: &str) -> Option<&Arc<LoadedComponent>> {
        self.components.iter().find(|c| c.served.claims(uri))
    }

    /// The component with the resource template `template` (exactly).
    pub(crate) fn template_owner(&self, template: &str) -> Option<&Arc<LoadedComponent>> {
        self.components.iter().find(|c| {
            c.served
                .templates
                .iter()
                .any(|(t, _)| t.uri_template == template)
        })
    }

    /// Why `comp` may not join: a URI, template prefix or prompt name of
    /// it that a component here claims already (served, or refused for a
    /// clash of its own), that component's manifest, and where it is among
    /// those served.
    fn clash(&self, comp: &LoadedComponent) -> Option<(String, PathBuf, Option<usize>)> {
        let served = self
            .components
            .iter()
            .enumerate()
            .map(|(i, c)| (Some(i), c));
        let refused = self.refused.iter().map(|c| (None, c));
        served.chain(refused).find_map(|(at, other)| {
            overlap(&comp.served, &other.served).map(|what| (what, other.manifest.path.clone(), at))
        })
    }
}

/// A URI, template prefix or prompt name both `new` and `old` claim.
fn overlap(new: &crate::served::Served, old: &crate::served::Served) -> Option<String> {
    for r in &new.resources {
        if old.claims(&r.uri) {
            return Some(format!("resource `{}`", r.uri));
        }
    }
    for r in &old.resources {
        if new.claims(&r.uri) {
            return Some(format!("resource `{}`", r.uri));
        }
    }
    for (t, parsed) in &new.templates {
        for (_, o) in &old.templates {
            let (a, b) = (parsed.prefix(), o.prefix());
            if a.starts_with(b) || b.starts_with(a) {
                return Some(format!(
                    "resource template `{}` (its prefix overlaps another template's)",
                    t.uri_template
                ));
            }
        }
    }
    new.prompts
        .iter()
        .find(|p| old.prompts.iter().any(|o| o.name == p.name))
        .map(|p| format!("prompt `{}`", p.name))
}

#[derive(Default)]
pub(crate) struct Catalog {
    scopes: HashMap<Scope, BTreeMap<Arc<str>, Arc<CatalogTool>>>,
    /// Resources and prompts, per scope.
    served: HashMap<Scope, ScopeServed>,
    /// Every tool that failed to load, and why.
    pub(crate) errors: Vec<LoadError>,
}

/// What a load may take from the catalog it replaces.
#[derive(Clone, Copy)]
pub(crate) enum Previous<'a> {
    /// Nothing: the first load.
    None,
    /// Components whose manifest and caps are unchanged, as they are.
    Components(&'a Catalog),
    /// Only what the same components' `describe` answered: the host's
    /// protected paths changed, so every component's grants are checked
    /// and prepared again.
    Described(&'a Catalog),
}

impl Catalog {
    /// Load every source. Never fails as a whole: see `errors`.
    /// Components of `previous` whose manifest and caps are unchanged are
    /// reused as they are (no recompile, no `describe`); one of the same
    /// component under other caps is prepared again but not asked to
    /// `describe` again: a reload under load never loses a tool to a busy
    /// pool.
    pub(crate) async fn load(
        sandbox: &Sandbox,
        sources: &[Source],
        caps: &Caps,
        host: &HostState,
        previous: Previous<'_>,
        on_event: &(dyn Fn(LoadEvent<'_>) + Sync),
    ) -> Catalog {
        let (catalog, whole) = match previous {
            Previous::None => (None, false),
            Previous::Components(c) => (Some(c), true),
            Previous::Described(c) => (Some(c), false),
        };
        let reusable = reusable_components(catalog);
        let mut cat = Catalog::default();
        let mut owners: Owners = HashMap::new();
        let mut work = Vec::new();
        for s in sources {
            cat.scopes.entry(s.scope.clone()).or_default();
            match s.manifests() {
                Ok(ms) => work.extend(ms.into_iter().map(|m| (s, m))),
                Err(e) => cat.fail(e, on_event),
            }
        }
        // A manifest linked in from elsewhere is protected where it is: a
        // tool granted its directory could otherwise rewrite it, and the
        // watcher would load what it wrote (found by review). The tools
        // directory protects the manifests in it; this load knows where
        // the links lead now.
        let linked: Vec<&PathBuf> = work
            .iter()
            .map(|(_, m)| m)
            .filter(|m| m.symlink_metadata().is_ok_and(|md| md.is_symlink()))
            .collect();
        let host = &if linked.is_empty() {
            std::borrow::Cow::Borrowed(host)
        } else {
            let mut more = host.clone();
            for m in linked {
                more.protect(m, "tool manifest", false);
            }
            std::borrow::Cow::Owned(more)
        };
        let total = work.len();
        // Components load a few at a time (compiling and deserializing use
        // every core; `describe` takes a pool slot like any call), and are
        // then added in the sources' order, one by one, so clashes and
        // overlaps are decided as if they had loaded in turn.
        let width = sandbox.load_parallelism();
        // One set of load threads for the whole catalog: each takes load
        // after load, and they end once this load (and any other sharing
        // them) is done (`sandbox::lanes`).
        let _lanes = sandbox.load_lanes();
        let reusable = &reusable;
        let mut futures = Vec::with_capacity(total);
        for (index, (source, mpath)) in work.into_iter().enumerate() {
            futures.push(async move {
                on_event(LoadEvent::Loading {
                    manifest: &mpath,
                    index,
                    total,
                });
                let started = std::time::Instant::now();
                let caps = match &source.caps {
                    Some(c) => std::borrow::Cow::Owned(caps.intersect(c)),
                    None => std::borrow::Cow::Borrowed(caps),
                };
                let reuse = reusable.get(&(&source.scope, mpath.as_path())).copied();
                let result = load_one(sandbox, &mpath, &caps, host, reuse, whole).await;
                if let Ok((comp, _)) = &result {
                    let uncapped = caps.uncapped(&comp.manifest);
                    if !uncapped.is_empty() {
                        // Escaped: the paths and names are the manifest
                        // author's, and a newline forged a log line
                        // (found by review).
                        let said = format!(
                            "{}: granted as its manifest asks, with no host config cap: {} (bound what tools may have with `[fs] roots`, `[env] pass` and `[network] allow` in the host config)",
                            mpath.display(),
                            uncapped.join(", ")
                        );
                        tracing::warn!("{}", crate::audit::escape_controls(&said));
                    }
                }
                // The previous load kept whole: nothing was compiled or
                // asked now.
                let kept = matches!((&result, reuse), (Ok((c, _)), Some(p)) if Arc::ptr_eq(c, p));
                (source, mpath, result, started.elapsed(), kept)
            });
        }
        let loads = futures::stream::iter(futures).buffered(width);
        let mut loads = std::pin::pin!(loads);
        // Every directory granted so far, for the cross-tool overlap check.
        let mut granted: Vec<(PathBuf, Arc<crate::caps::fs::PreparedDir>)> = Vec::new();
        // The sources each name of a named selection took something from.
        let mut picked: HashMap<(Scope, String), Vec<PathBuf>> = HashMap::new();
        while let Some((source, mpath, result, took, kept)) = loads.next().await {
            let Some(loaded) = selected(source, &mpath, result, &granted) else {
                continue;
            };
            // What of a named selection this manifest offers, loaded or
            // not: a source whose `echo` fails to load (a digest
            // mid-upgrade) still offers `echo`, or another source's
            // lookalike would be taken alone (found by the fix review).
            let offered: Vec<&str> = match &loaded {
                Ok((_, tools, _)) => tools.iter().map(|t| &*t.def.name).collect(),
                Err((_, names)) => names.iter().map(|n| &**n).collect(),
            };
            for name in source.only.iter().flat_map(|o| o.iter()) {
                if stem_of(&mpath) == name || offered.contains(&name.as_str()) {
                    let from = picked
                        .entry((source.scope.clone(), name.clone()))
                        .or_default();
                    if !from.contains(&source.path) {
                        from.push(source.path.clone());
                    }
                }
            }
            match loaded {
                Ok((comp, tools, serves)) => {
                    if !tools.is_empty() || serves {
                        for d in &comp.grants.fs.dirs {
                            granted.push((mpath.clone(), d.clone()));
                        }
                    }
                    let (compiled, described) = (comp.compiled && !kept, comp.asked && !kept);
                    if serves {
                        cat.add_served(&source.scope, &mpath, &comp, on_event);
                    }
                    let added = cat.add_tools(&source.scope, &mpath, tools, &mut owners, on_event);
                    on_event(LoadEvent::Loaded {
                        manifest: &mpath,
                        tools: added,
                        compiled,
                        described,
                        millis: took.as_millis(),
                    });
                }
                Err((e, names)) => {
                    cat.fail(e, on_event);
                    for name in &names {
                        cat.take_name(&source.scope, &mpath, name, &mut owners, on_event);
                    }
                }
            }
        }
        // A name no source of its scope offers: a typo, or a tool not
        // installed. Said, where it was an empty scope and silence (found
        // by the user review).
        let mut missing = std::collections::HashSet::new();
        for s in sources {
            for name in s.only.iter().flat_map(|o| o.iter()) {
                let key = (s.scope.clone(), name.clone());
                if !picked.contains_key(&key) && missing.insert(key) {
                    cat.fail(
                        LoadError::new(
                            &s.path,
                            LoadErrorKind::Source {
                                reason: format!(
                                    "scope `{}` names `{name}`, which no manifest of its tool sources offers (a typo, a tool not installed, or one whose manifest failed to load: see the errors above), so the scope has no tool by that name",
                                    s.scope
                                ),
                            },
                        ),
                        on_event,
                    );
                }
            }
        }
        for ((scope, name), from) in picked {
            if from.len() > 1 {
                cat.ambiguous(&scope, &name, &from, on_event);
            }
        }
        cat
    }

    /// A named selection's `name` found in several sources of `scope`
    /// (`from`): it takes nothing of any. A tenant naming `echo` took the
    /// tools of every `echo.toml` of every `--tools` directory, so a
    /// writer of any of them added tools to that tenant's scope, running
    /// under its caps (found by review).
    fn ambiguous(
        &mut self,
        scope: &Scope,
        name: &str,
        from: &[PathBuf],
        on_event: &(dyn Fn(LoadEvent<'_>) + Sync),
    ) {
        let picked = |c: &LoadedComponent| stem_of(&c.manifest.path) == name;
        if let Some(tools) = self.scopes.get_mut(scope) {
            tools.retain(|n, t| &**n != name && !picked(&t.component));
        }
        if let Some(served) = self.served.get_mut(scope) {
            served.components.retain(|c| !picked(c));
            served.prompts.retain(|_, c| !picked(c));
        }
        let list: Vec<String> = from.iter().map(|p| p.display().to_string()).collect();
        self.fail(
            LoadError::new(
                &from[0],
                LoadErrorKind::Source {
                    reason: format!(
                        "scope `{scope}` names `{name}`, which more than one tool source offers ({}), so it takes it from none (a writer of one of them could add tools to the scope); keep it in one source, or name it by its own path",
                        list.join(", ")
                    ),
                },
            ),
            on_event,
        );
    }

    /// Report `e` and keep it in `errors`.
    fn fail(&mut self, e: LoadError, on_event: &(dyn Fn(LoadEvent<'_>) + Sync)) {
        on_event(LoadEvent::Failed { error: &e });
        self.errors.push(e);
    }

    /// Add `comp`'s resources and prompts to `scope`, unless one of them
    /// clashes with a component's already there (then an error).
    fn add_served(
        &mut self,
        scope: &Scope,
        mpath: &Path,
        comp: &Arc<LoadedComponent>,
        on_event: &(dyn Fn(LoadEvent<'_>) + Sync),
    ) {
        let here = self.served.entry(scope.clone()).or_default();
        match here.clash(comp) {
            // Neither is served: keeping the first let a hostile package
            // named to sort first take another's resource reads (and the
            // arguments in their URIs) or prompts, as with tools (found
            // by review).
            Some((what, other, at)) => {
                here.refused.push(comp.clone());
                let first = at.map(|i| here.components.remove(i));
                if let Some(first) = &first {
                    here.prompts.retain(|_, c| !Arc::ptr_eq(c, first));
                    here.refused.push(first.clone());
                }
                let clash = |other: &Path| LoadErrorKind::ServedClash {
                    what: what.clone(),
                    other: other.to_path_buf(),
                    scope: scope.to_string(),
                };
                self.fail(LoadError::new(mpath, clash(&other)), on_event);
                if first.is_some() {
                    self.fail(LoadError::new(&other, clash(mpath)), on_event);
                }
            }
            None => {
                for p in &comp.served.prompts {
                    here.prompts.insert(p.name.clone(), comp.clone());
                }
                here.components.push(comp.clone());
            }
        }
    }

    /// Add `tools` (of the manifest `mpath`) to `scope`, but not one whose
    /// name a tool of another manifest there has already (`owners`): then
    /// neither is served, and each manifest gets an error naming the
    /// other. Tool names come from the components' own `describe`, and
    /// manifests load in path order: keeping the first let a hostile
    /// package named to sort first take another tool's calls, arguments
    /// and policy rules (found by review). How many were added.
    fn add_tools(
        &mut self,
        scope: &Scope,
        mpath: &Path,
        tools: Vec<CatalogTool>,
        owners: &mut Owners,
        on_event: &(dyn Fn(LoadEvent<'_>) + Sync),
    ) -> usize {
        let mut added = 0;
        for t in tools {
            if !self.take_name(scope, mpath, &t.def.name, owners, on_event) {
                continue;
            }
            self.scopes
                .entry(scope.clone())
                .or_default()
                .insert(t.def.name.clone(), Arc::new(t));
            added += 1;
        }
        added
    }

    /// Whether `name` is free in `scope` for `mpath`'s tool, which then
    /// owns it. If another manifest owns it, neither tool is served: an
    /// error for each (the first holder's once: a third finds it gone).
    /// A manifest refused for its grants still takes its tools' names
    /// (see the load loop): else a hostile one that sorts first could get
    /// another refused (an overlapping grant) and keep the name (found by
    /// review).
    fn take_name(
        &mut self,
        scope: &Scope,
        mpath: &Path,
        name: &Arc<str>,
        owners: &mut Owners,
        on_event: &(dyn Fn(LoadEvent<'_>) + Sync),
    ) -> bool {
        let key = (scope.clone(), as_clients_see(name));
        let Some((other, other_name)) = owners.get(&key) else {
            owners.insert(key, (mpath.to_path_buf(), name.clone()));
            return true;
        };
        let clash = |tool: &str, other: &Path| LoadErrorKind::NameClash {
            tool: tool.to_string(),
            other: other.to_path_buf(),
            scope: scope.to_string(),
        };
        self.fail(LoadError::new(mpath, clash(name, other)), on_event);
        let first = self
            .scopes
            .get_mut(scope)
            .and_then(|m| m.remove(other_name));
        if first.is_some() {
            self.fail(LoadError::new(other, clash(other_name, mpath)), on_event);
        }
        false
    }

    /// The tools of `scope`, by name. Empty for an unknown scope.
    pub(crate) fn tools(&self, scope: &Scope) -> impl Iterator<Item = &Arc<CatalogTool>> {
        self.scopes.get(scope).into_iter().flat_map(|m| m.values())
    }

    /// Tool `name` if, and only if, it is in `scope`.
    pub(crate) fn get(&self, scope: &Scope, name: &str) -> Option<&Arc<CatalogTool>> {
        self.scopes.get(scope)?.get(name)
    }

    pub(crate) fn scopes(&self) -> impl Iterator<Item = &Scope> {
        self.scopes.keys()
    }

    /// How many scopes have tools.
    pub(crate) fn scope_count(&self) -> usize {
        self.scopes.len()
    }

    /// The resources and prompts of `scope` (empty for an unknown scope).
    pub(crate) fn served(&self, scope: &Scope) -> Option<&ScopeServed> {
        self.served.get(scope)
    }

    /// The components this catalog serves and `new` does not (a reload
    /// retires them).
    pub(crate) fn not_in<'a>(&'a self, new: &Catalog) -> Vec<&'a Arc<LoadedComponent>> {
        let kept: std::collections::HashSet<*const LoadedComponent> =
            new.components().map(|(_, c)| Arc::as_ptr(c)).collect();
        let mut gone: Vec<_> = self
            .components()
            .map(|(_, c)| c)
            .filter(|c| !kept.contains(&Arc::as_ptr(c)))
            .collect();
        gone.dedup_by(|a, b| Arc::ptr_eq(a, b));
        gone
    }

    /// Every component that serves something, with its scope (one that
    /// serves several tools is named once for each).
    pub(crate) fn components(&self) -> impl Iterator<Item = (&Scope, &Arc<LoadedComponent>)> {
        self.scopes
            .iter()
            .flat_map(|(scope, m)| m.values().map(move |t| (scope, &t.component)))
            .chain(
                self.served
                    .iter()
                    .flat_map(|(scope, s)| s.components.iter().map(move |c| (scope, c))),
            )
    }
}

/// The components of `previous` a reload may reuse, by scope and manifest:
/// a component is reused only by the scope it was loaded for. Two scopes
/// serving the same manifest get a component each (its own concurrency,
/// warm set and task share), as on the first load; reusing one for both
/// would let one tenant's calls queue another's after a reload.
fn reusable_components(
    previous: Option<&Catalog>,
) -> HashMap<(&Scope, &Path), &Arc<LoadedComponent>> {
    previous
        .into_iter()
        .flat_map(Catalog::components)
        .map(|(scope, c)| ((scope, c.manifest.path.as_path()), c))
        .collect()
}

/// A loaded component, the tools a source takes of it, and whether the
/// source serves its resources and prompts.
type Selected = (Arc<LoadedComponent>, Vec<CatalogTool>, bool);

/// Why a manifest's load was refused, and the names of the tools it would
/// have served (taken all the same, see `Catalog::take_name`).
type Refused = (LoadError, Vec<Arc<str>>);

/// What `source` takes of a loaded manifest: the tools it selects, and
/// whether it serves the component's resources and prompts, once their
/// directories are checked against those `granted` so far. `None` for a
/// failure that is not this source's business; a failure names the tools
/// it selected, if it got that far (their names are still taken).
fn selected(
    source: &Source,
    mpath: &Path,
    result: Result<(Arc<LoadedComponent>, Vec<CatalogTool>), LoadError>,
    granted: &[(PathBuf, Arc<crate::caps::fs::PreparedDir>)],
) -> Option<Result<Selected, Refused>> {
    // A named selection takes a tool by its name, or every tool of
    // the manifest of that name (`text` for text.toml's tools).
    let stem = stem_of(mpath);
    let wanted = |name: &str| {
        source
            .only
            .as_ref()
            .is_none_or(|only| only.iter().any(|n| n == name || n == stem))
    };
    // Resources and prompts come with the whole component only: a
    // selection that names tools alone does not get them.
    let whole = source
        .only
        .as_ref()
        .is_none_or(|only| only.iter().any(|n| n == stem));
    Some(match result {
        Ok((comp, mut tools)) => {
            // A named selection (a tenant's): the other tools of the
            // source are not its, and their grants are not made.
            tools.retain(|t| wanted(&t.def.name));
            let serves = whole && !comp.served.is_empty();
            if tools.is_empty() && !serves {
                Ok((comp, tools, false))
            } else {
                match check_overlaps(mpath, &comp, granted) {
                    Ok(()) => Ok((comp, tools, serves)),
                    Err(e) => Err((e, tools.iter().map(|t| t.def.name.clone()).collect())),
                }
            }
        }
        // Only a failure of a tool this source wants is its business
        // (known by the manifest's name before the tool is).
        Err(e) if !wanted(stem) => {
            tracing::debug!("{}: not loaded into {}: {e}", mpath.display(), source.scope);
            return None;
        }
        Err(e) => Err((e, Vec::new())),
    })
}

/// What a component's load depends on besides caps: its manifest's text and
/// the component's bytes as they are now (size and modification time; the
/// digest is checked again whenever this changes).
fn fingerprint(text: &str, mpath: &Path) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(text.as_bytes());
    if let Ok(m) = Manifest::parse(mpath, text)
        && let Ok(meta) = std::fs::metadata(&m.component)
    {
        use std::os::unix::fs::MetadataExt;
        h.update(meta.len().to_le_bytes());
        h.update(meta.mtime_nsec().to_le_bytes());
        h.update(meta.mtime().to_le_bytes());
        h.update(meta.ino().to_le_bytes());
    }
    h.finalize().into()
}

/// A component's directories against every directory granted before it.
fn check_overlaps(
    mpath: &Path,
    comp: &LoadedComponent,
    granted: &[(PathBuf, Arc<crate::caps::fs::PreparedDir>)],
) -> Result<(), LoadError> {
    for d in &comp.grants.fs.dirs {
        for (other, g) in granted {
            if let Some(m) = crate::caps::fs::overlap(g, d) {
                return Err(LoadError::new(
                    mpath,
                    LoadErrorKind::Overlap {
                        message: format!("{m}; the other grant is {}'s", other.display()),
                    },
                ));
            }
        }
    }
    Ok(())
}

async fn load_one(
    sandbox: &Sandbox,
    mpath: &Path,
    caps: &Caps,
    host: &HostState,
    previous: Option<&Arc<LoadedComponent>>,
    reuse_whole: bool,
) -> Result<(Arc<LoadedComponent>, Vec<CatalogTool>), LoadError> {
    let text =
        crate::files::read_trusted_text(mpath, crate::files::MAX_MANIFEST_BYTES).map_err(|e| {
            LoadError::new(
                mpath,
                LoadErrorKind::Source {
                    reason: format!("cannot read manifest: {e}"),
                },
            )
        })?;
    let fingerprint = fingerprint(&text, mpath);
    let comp = match previous {
        Some(p) if reuse_whole && p.fingerprint == fingerprint && p.caps == *caps => p.clone(),
        _ => {
            let manifest = Manifest::parse(mpath, &text)
                .map_err(|d| LoadError::new(mpath, LoadErrorKind::Manifest(d)))?;
            // The same component under other caps (protected paths or
            // operator caps changed): its `describe` answer still holds.
            let described = previous.and_then(|p| p.described());
            let mut c = sandbox.load(manifest, caps, host, described).await?;
            c.fingerprint = fingerprint;
            c.caps = caps.clone();
            Arc::new(c)
        }
    };
    let tools = comp
        .tools
        .iter()
        .map(|def| {
            let bad = |reason: String| {
                LoadError::new(
                    mpath,
                    LoadErrorKind::BadToolDef {
                        tool: def.name.to_string(),
                        reason,
                    },
                )
            };
            let mut input =
                Schema::compile(&def.input_schema).map_err(|e| bad(format!("input {e}")))?;
            // Typed-WIT tools: the exact conversion is the argument check.
            if let Some((check, expansion)) = comp.argument_check(&def.name) {
                input = input.with_check(check, expansion);
            }
            let output = def
                .output_schema
                .as_ref()
                .map(|s| Schema::compile(s))
                .transpose()
                .map_err(|e| bad(format!("output {e}")))?;
            Ok(CatalogTool {
                def: honest(def.clone(), &comp),
                component: comp.clone(),
                input,
                output,
                series: Default::default(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((comp, tools))
}

/// A tool's annotations as its grants make them: a tool that may write a
/// directory is not read-only, one that may reach a host is open-world,
/// whatever it says of itself.
fn honest(mut def: ToolDef, comp: &LoadedComponent) -> ToolDef {
    let g = &comp.grants;
    if g.fs.writes() {
        def.annotations.read_only = Some(false);
    }
    if g.net.any() {
        def.annotations.open_world = Some(true);
    }
    def
}

/// A manifest's name without its extension (`text` for `text.toml`): what
/// a named selection takes all the tools of.
fn stem_of(mpath: &Path) -> &str {
    mpath.file_stem().and_then(|s| s.to_str()).unwrap_or("")
}

/// Which manifest took each tool name of a scope (and the name as it
/// spelled it), by the name as clients see it ([`as_clients_see`]).
type Owners = HashMap<(Scope, String), (PathBuf, Arc<str>)>;

/// A tool name as clients that allow no `.` in names see it: the `claude`
/// CLI (and the model's API) write `.` as `_`, so `json.query` and
/// `json_query` are one tool to them, and the CLI kept one of the two: a
/// hostile component could take another's calls and arguments under the
/// lookalike (found by review). Names clash as clients see them.
fn as_clients_see(name: &str) -> String {
    name.replace('.', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_may_have_tools_unless_it_is_an_empty_or_manifestless_directory() {
        let d = tempfile::tempdir().unwrap();
        let source = |p: &Path| Source::new(Scope::default(), p);
        assert!(!source(d.path()).may_have_tools(), "an empty directory");
        std::fs::write(d.path().join("notes.txt"), "").unwrap();
        assert!(!source(d.path()).may_have_tools(), "no manifest in it");
        std::fs::write(d.path().join("echo.toml"), "").unwrap();
        assert!(source(d.path()).may_have_tools(), "a manifest in it");
        assert!(
            source(&d.path().join("echo.toml")).may_have_tools(),
            "a manifest"
        );
        assert!(
            !source(&d.path().join("gone")).may_have_tools(),
            "nothing there"
        );
    }
}
