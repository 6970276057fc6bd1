//! Input-required results: how a stateless front end lets a running tool ask
//! its client questions (sampling, elicitation, roots) without holding the
//! call open between the question and the answer.
//!
//! The call runs with a [`Replay`] as its client. A question with a recorded
//! or supplied answer is answered at once; any other one is noted and the
//! guest is told to return. The call then ends with
//! `CallErrorKind::InputRequired` and `Replay::finish` turns that into the questions plus a sealed request
//! state: every answer used so far, bound to the scope, the tool, a digest of
//! the arguments and the round, encrypted and authenticated with the host's
//! [`StateKey`] (XChaCha20-Poly1305). When the client retries with its
//! answers and that state, the call runs again, in a fresh sandbox like any
//! call, and gets the recorded answers back in the order it asks for them. A
//! tool that asks something else on replay gets a clear error: tools that
//! ask their client must ask the same questions for the same arguments.
//!
//! Owns: sealing and opening request state, answering a replayed call's
//! questions, the bounds on rounds, answers and state size. Knows no wire
//! format (the MCP mapping is in `mcp`) and never touches the call path:
//! `core` runs a replayed call exactly like any other.

use crate::error::{CallError, CallErrorKind};
use crate::model::{ClientError, ClientRequest, ClientRequests};
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, Generate, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The host's keys for sealed state: the request state of stateless
/// (2026-07-28) calls, and the session ids of 2025-11-25 HTTP sessions.
/// Replicas behind one load balancer must share them (see
/// [`StateKey::from_hex_list`]); by default each process makes its own, so a
/// restart invalidates state in flight (the client starts again).
///
/// A key ring, for rotation: the first (newest) key seals, every key opens.
/// To rotate, put a new key first on every replica, wait until no replica
/// seals with the old one and its sealed state has expired, then drop it.
/// Cheap to clone.
#[derive(Clone)]
pub struct StateKey {
    /// Newest first; never empty.
    ciphers: Arc<[XChaCha20Poly1305]>,
}

impl std::fmt::Debug for StateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StateKey({} keys)", self.ciphers.len())
    }
}

/// The most keys a ring holds (each one is tried on every opening;
/// `StateKey::from_hex_list`'s doc says the number too).
pub const MAX_STATE_KEYS: usize = 8;

impl StateKey {
    /// A fresh random key (from the OS's generator).
    pub fn random() -> StateKey {
        let key = chacha20poly1305::Key::generate();
        StateKey {
            ciphers: Arc::new([XChaCha20Poly1305::new(&key)]),
        }
    }

    /// A key shared with other replicas: 32 bytes from a secret store.
    pub fn from_bytes(bytes: [u8; 32]) -> StateKey {
        StateKey {
            ciphers: Arc::new([XChaCha20Poly1305::new(&bytes.into())]),
        }
    }

    /// A key from 64 hex digits.
    pub fn from_hex(hex_key: &str) -> Result<StateKey, StateKeyError> {
        Ok(StateKey::from_bytes(parse_hex_key(hex_key.trim())?))
    }

    /// A key ring from text (a key file, or the `TOOLHOST_STATE_KEY`
    /// variable): keys of 64 hex digits separated by newlines, commas or
    /// spaces, newest first; `#` starts a comment that runs to the end of
    /// its line. At most 8 keys.
    pub fn from_hex_list(text: &str) -> Result<StateKey, StateKeyError> {
        let mut ciphers = Vec::new();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            for word in line.split([',', ' ', '\t']).filter(|w| !w.is_empty()) {
                ciphers.push(XChaCha20Poly1305::new(&parse_hex_key(word)?.into()));
            }
        }
        match ciphers.len() {
            0 => Err(StateKeyError::Empty),
            n if n > MAX_STATE_KEYS => Err(StateKeyError::TooMany(n)),
            _ => Ok(StateKey {
                ciphers: ciphers.into(),
            }),
        }
    }

    /// How many keys open state (the first one seals).
    pub fn len(&self) -> usize {
        self.ciphers.len()
    }

    /// Never true: a ring has at least one key.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// `plain` encrypted and authenticated with the newest key, bound to
    /// `aad`: a random 24-byte nonce, then the ciphertext and tag.
    pub(crate) fn seal_bytes(&self, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        let nonce = XNonce::generate();
        let sealed = self.ciphers[0]
            .encrypt(&nonce, Payload { msg: plain, aad })
            .expect("encryption of a bounded message cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        out
    }

    /// The plaintext of what [`StateKey::seal_bytes`] sealed with any key of
    /// the ring and the same `aad`; `None` if no key authenticates it.
    pub(crate) fn open_bytes(&self, aad: &[u8], bytes: &[u8]) -> Option<Vec<u8>> {
        if bytes.len() < 24 + 16 {
            return None;
        }
        let (nonce, sealed) = bytes.split_at(24);
        let nonce = XNonce::try_from(nonce).ok()?;
        self.ciphers
            .iter()
            .find_map(|c| c.decrypt(&nonce, Payload { msg: sealed, aad }).ok())
    }
}

fn parse_hex_key(word: &str) -> Result<[u8; 32], StateKeyError> {
    let bytes = hex::decode(word).map_err(|_| StateKeyError::NotHex)?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| StateKeyError::Length(b.len()))
}

/// Why a request-state key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StateKeyError {
    /// Not hexadecimal.
    #[error("the state key is not hex (each key must be 64 hex digits)")]
    NotHex,
    /// Not 32 bytes.
    #[error("a state key must be 32 bytes (64 hex digits), got {0} bytes")]
    Length(usize),
    /// No key at all.
    #[error("no state key given (expected 64 hex digits per key, newest first)")]
    Empty,
    /// More keys than are tried.
    #[error("{0} state keys given; at most 8 (newest first): drop the retired ones")]
    TooMany(usize),
}

/// Bounds on one call's input rounds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Rounds of questions before the call is refused.
    pub(crate) max_rounds: u32,
    /// Sealed state size (the recorded answers travel in it).
    pub(crate) max_state_bytes: usize,
    /// How long issued state stays valid.
    pub(crate) ttl: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_rounds: 10,
            max_state_bytes: 1 << 20,
            ttl: Duration::from_secs(3600),
        }
    }
}

/// What request state is bound to: it opens only for the same call.
#[derive(Debug, Clone)]
pub(crate) struct Binding {
    /// What runs: `tool`, `prompt`, `resource`.
    kind: &'static str,
    /// The tool or prompt name, or the resource URI.
    name: String,
    digest: [u8; 32],
}

impl Binding {
    /// Bound to `scope`, what runs (`kind`, `name`, served by the
    /// component of fingerprint `by`, if any) and its `arguments`.
    pub(crate) fn new(
        scope: &str,
        kind: &'static str,
        name: &str,
        by: Option<[u8; 32]>,
        arguments: &Value,
    ) -> Binding {
        Binding::of(scope, kind, name, by, Sorted(arguments))
    }

    /// A tool call's binding to its arguments as the request carries them
    /// (none: as `{}`), without a copy of them.
    pub(crate) fn of_arguments(
        scope: &str,
        kind: &'static str,
        name: &str,
        by: Option<[u8; 32]>,
        arguments: Option<&serde_json::Map<String, Value>>,
    ) -> Binding {
        match arguments {
            Some(m) => Binding::of(scope, kind, name, by, SortedMap(m)),
            None => Binding::of(scope, kind, name, by, SortedMap(&serde_json::Map::new())),
        }
    }

    fn of(
        scope: &str,
        kind: &'static str,
        name: &str,
        by: Option<[u8; 32]>,
        arguments: impl Serialize,
    ) -> Binding {
        let mut h = Sha256::new();
        for part in [scope, kind, name] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        h.update(by.unwrap_or_default());
        digest_canonical(&mut h, arguments);
        Binding {
            kind,
            name: name.to_string(),
            digest: h.finalize().into(),
        }
    }
}

/// A JSON value written with object keys sorted at every level, so equal
/// arguments digest equally whatever order the client sent their keys in.
/// Serialized straight into the digest: no sorted copy of the arguments
/// is made (they are as large as a request body).
struct Sorted<'a>(&'a Value);

impl Serialize for Sorted<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(m) => SortedMap(m).serialize(s),
            Value::Array(a) => s.collect_seq(a.iter().map(Sorted)),
            v => v.serialize(s),
        }
    }
}

/// An object, its keys sorted at every level (see [`Sorted`]).
struct SortedMap<'a>(&'a serde_json::Map<String, Value>);

impl Serialize for SortedMap<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut entries: Vec<(&String, &Value)> = self.0.iter().collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        s.collect_map(entries.into_iter().map(|(k, v)| (k, Sorted(v))))
    }
}

/// Feed `v`'s compact JSON to `h`.
fn digest_canonical(h: &mut Sha256, v: impl Serialize) {
    struct Feed<'a>(&'a mut Sha256);
    impl std::io::Write for Feed<'_> {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.update(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    // A JSON value (string keys, a writer that cannot fail) always
    // serializes; a digest of part of it would bind too little.
    serde_json::to_writer(Feed(h), &v).expect("a JSON value serializes");
}

fn params_digest(method: &str, params: &Value) -> String {
    let mut h = Sha256::new();
    h.update(method.as_bytes());
    h.update([0]);
    digest_canonical(&mut h, Sorted(params));
    hex::encode(&h.finalize()[..16])
}

/// Why a round of a call cannot go on.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum MrtrError {
    #[error(
        "requestState was not issued by this server or was altered ({reason}); start the call again without requestState"
    )]
    BadState { reason: &'static str },
    #[error(
        "requestState was issued for another call (a different tool, arguments or tenant); retry with the same tool and arguments, or start again without requestState"
    )]
    WrongCall,
    #[error(
        "requestState expired (it is valid for {}); start the call again without requestState",
        humantime::format_duration(*.ttl)
    )]
    Expired { ttl: Duration },
    #[error(
        "{kind} `{name}` still needs input after {max} rounds; the call is refused (a tool may ask its client at most {max} rounds of questions)"
    )]
    TooManyRounds {
        kind: &'static str,
        name: String,
        max: u32,
    },
    #[error(
        "{kind} `{name}` is not deterministic: its question `{key}` was {before} in an earlier round but {now} on replay; a tool that asks its client must ask the same questions, in the same order, for the same arguments"
    )]
    Diverged {
        kind: &'static str,
        name: String,
        key: String,
        before: String,
        now: String,
    },
    #[error("inputResponses.{key} is not a valid answer to `{method}`: {reason}")]
    BadAnswer {
        key: String,
        method: String,
        reason: String,
    },
    #[error(
        "the answers recorded for {kind} `{name}` exceed {limit} bytes of request state; ask for less"
    )]
    StateTooLarge {
        kind: &'static str,
        name: String,
        limit: usize,
    },
    /// The call failed because it needed something the client did not
    /// declare it can do.
    #[error(
        "{kind} `{name}` needs the client's `{capability}` capability, which this request's client capabilities do not declare"
    )]
    MissingCapability {
        kind: &'static str,
        name: String,
        capability: String,
    },
}

/// An answer used by a call, as recorded in its state.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Answer {
    #[serde(rename = "m")]
    method: String,
    #[serde(rename = "p")]
    params: String,
    #[serde(rename = "a")]
    answer: Value,
}

/// A question asked and not yet answered, as recorded in the state.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Asked {
    #[serde(rename = "m")]
    method: String,
    #[serde(rename = "p")]
    params: String,
}

/// The plaintext of request state.
#[derive(Debug, Serialize, Deserialize)]
struct State {
    /// Format version.
    v: u8,
    /// Binding digest (hex).
    b: String,
    /// Rounds completed.
    r: u32,
    /// Issued at, seconds since the epoch.
    t: u64,
    /// Answers, by question key.
    a: BTreeMap<String, Answer>,
    /// Questions of the last round, by key.
    q: BTreeMap<String, Asked>,
}

const STATE_VERSION: u8 = 1;
const AAD: &[u8] = b"toolhost request state v1";

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl StateKey {
    fn seal(&self, state: &State) -> String {
        let plain = serde_json::to_vec(state).expect("state serializes");
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.seal_bytes(AAD, &plain))
    }

    fn open(&self, text: &str) -> Result<State, MrtrError> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| MrtrError::BadState {
                reason: "not base64url",
            })?;
        if bytes.len() < 24 + 16 {
            return Err(MrtrError::BadState {
                reason: "too short",
            });
        }
        let plain = self.open_bytes(AAD, &bytes).ok_or(MrtrError::BadState {
            reason: "authentication failed",
        })?;
        let state: State = serde_json::from_slice(&plain).map_err(|_| MrtrError::BadState {
            reason: "unreadable contents",
        })?;
        if state.v != STATE_VERSION {
            return Err(MrtrError::BadState {
                reason: "unknown version",
            });
        }
        Ok(state)
    }
}

/// Which client methods the client said it can answer (from its declared
/// capabilities), and the capability each needs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Capabilities {
    pub(crate) sampling: bool,
    pub(crate) elicitation: bool,
    pub(crate) roots: bool,
}

impl Capabilities {
    /// The capability `method` needs, and whether the client declared it.
    pub(crate) fn check(&self, method: &str) -> Result<(), &'static str> {
        let (name, ok) = match method {
            "sampling/createMessage" => ("sampling", self.sampling),
            "elicitation/create" => ("elicitation", self.elicitation),
            "roots/list" => ("roots", self.roots),
            _ => ("(unknown)", false),
        };
        if ok { Ok(()) } else { Err(name) }
    }
}

/// The client of one round of a stateless call: answers from the sealed
/// state and this round's responses, notes the rest.
pub(crate) struct Replay {
    key: StateKey,
    limits: Limits,
    binding: Binding,
    round: u32,
    capabilities: Capabilities,
    /// This round's answers from the client, by key.
    responses: BTreeMap<String, Value>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Answers used by this run (recorded ones, then new ones), by key.
    answers: BTreeMap<String, Answer>,
    /// Answers recorded in earlier rounds.
    recorded: BTreeMap<String, Answer>,
    /// Questions of the previous round that were not answered then.
    asked: BTreeMap<String, Asked>,
    /// Questions this run could not get answered, in the order asked.
    pending: Vec<(String, Asked)>,
    /// The first reason this round cannot go on.
    fatal: Option<MrtrError>,
    /// A capability the tool needed and the client did not declare.
    missing: Option<String>,
}

/// How a round ended.
#[derive(Debug)]
pub(crate) enum Outcome<T> {
    /// The call finished (successfully or not) with every answer it needed.
    Complete(T),
    /// The call needs answers: ask the client these and retry with `state`.
    InputRequired {
        requests: Vec<ClientRequest>,
        state: String,
    },
}

impl Replay {
    /// The client for one round of the call `binding`, given the state the
    /// client echoed (if any) and its answers.
    pub(crate) fn open(
        key: &StateKey,
        limits: Limits,
        binding: Binding,
        state: Option<&str>,
        responses: BTreeMap<String, Value>,
        capabilities: Capabilities,
    ) -> Result<Arc<Replay>, MrtrError> {
        let mut inner = Inner::default();
        let mut round = 0;
        if let Some(text) = state {
            if text.len() > limits.max_state_bytes * 2 {
                return Err(MrtrError::BadState { reason: "too long" });
            }
            let s = key.open(text)?;
            if s.b != hex::encode(binding.digest) {
                return Err(MrtrError::WrongCall);
            }
            if now_secs().saturating_sub(s.t) > limits.ttl.as_secs() {
                return Err(MrtrError::Expired { ttl: limits.ttl });
            }
            round = s.r;
            inner.recorded = s.a;
            inner.asked = s.q;
        }
        Ok(Arc::new(Replay {
            key: key.clone(),
            limits,
            binding,
            round,
            capabilities,
            responses,
            inner: Mutex::new(inner),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Answer one question of the call, or say it must wait for the next
    /// round.
    fn answer(&self, req: &ClientRequest) -> Result<Value, ClientError> {
        let mut inner = self.lock();
        let digest = params_digest(&req.method, &req.params);
        let diverged = |before: String, now: String| MrtrError::Diverged {
            kind: self.binding.kind,
            name: self.binding.name.clone(),
            key: req.key.clone(),
            before,
            now,
        };
        let asked_as = |method: &str, params: &str| {
            if method != req.method {
                format!("`{method}`")
            } else if params != digest {
                format!("`{method}` with other params")
            } else {
                format!("`{method}`")
            }
        };
        // A recorded answer must be to the same question.
        if let Some(a) = inner.recorded.get(&req.key).cloned() {
            if a.method != req.method || a.params != digest {
                let e = diverged(
                    format!("answered as {}", asked_as(&a.method, &a.params)),
                    format!("asked as `{}`", req.method),
                );
                return Err(self.fail(&mut inner, e));
            }
            inner.answers.insert(req.key.clone(), a.clone());
            return Ok(a.answer);
        }
        if let Some(q) = inner.asked.get(&req.key)
            && (q.method != req.method || q.params != digest)
        {
            let e = diverged(
                format!("asked as {}", asked_as(&q.method, &q.params)),
                format!("asked as `{}`", req.method),
            );
            return Err(self.fail(&mut inner, e));
        }
        if let Err(capability) = self.capabilities.check(&req.method) {
            inner.missing.get_or_insert_with(|| capability.to_string());
            return Err(ClientError::Unsupported {
                method: req.method.clone(),
                capability: capability.to_string(),
            });
        }
        if let Some(answer) = self.responses.get(&req.key) {
            if let Err(reason) = valid_answer(&req.method, answer) {
                let e = MrtrError::BadAnswer {
                    key: req.key.clone(),
                    method: req.method.clone(),
                    reason,
                };
                return Err(self.fail(&mut inner, e));
            }
            inner.answers.insert(
                req.key.clone(),
                Answer {
                    method: req.method.clone(),
                    params: digest,
                    answer: answer.clone(),
                },
            );
            return Ok(answer.clone());
        }
        inner.pending.push((
            req.key.clone(),
            Asked {
                method: req.method.clone(),
                params: digest,
            },
        ));
        Err(ClientError::InputRequired {
            key: req.key.clone(),
            method: req.method.clone(),
        })
    }

    /// Whether this round is ending: a question waits for the next round,
    /// or the round cannot go on.
    pub(crate) fn waiting(&self) -> bool {
        let inner = self.lock();
        !inner.pending.is_empty() || inner.fatal.is_some()
    }

    /// The answer to `req` if the client already gave it (recorded in an
    /// earlier round, or in this round's responses); `None` if it has not.
    /// A call that went on as a task asks its unanswered questions there.
    pub(crate) fn known(&self, req: &ClientRequest) -> Option<Result<Value, ClientError>> {
        let known = {
            let inner = self.lock();
            inner.recorded.contains_key(&req.key) || self.responses.contains_key(&req.key)
        };
        known.then(|| self.answer(req))
    }

    fn fail(&self, inner: &mut Inner, e: MrtrError) -> ClientError {
        let msg = e.to_string();
        inner.fatal.get_or_insert(e);
        ClientError::Failed(msg)
    }

    /// Turn the call's result into this round's outcome: the result itself,
    /// the questions to ask plus the new sealed state, or why the call
    /// cannot go on.
    pub(crate) fn finish<T>(
        &self,
        result: Result<T, CallError>,
    ) -> Result<Outcome<Result<T, CallError>>, MrtrError> {
        let mut inner = self.lock();
        if let Some(e) = inner.fatal.take() {
            return Err(e);
        }
        let requests = match result {
            Err(e) if matches!(e.kind(), CallErrorKind::InputRequired { .. }) => match e.kind() {
                CallErrorKind::InputRequired { requests } => requests.clone(),
                _ => unreachable!("matched above"),
            },
            Err(e) => {
                // A call that failed after asking for something the client
                // cannot do failed for want of that capability.
                if let Some(capability) = inner.missing.take() {
                    return Err(MrtrError::MissingCapability {
                        kind: self.binding.kind,
                        name: self.binding.name.clone(),
                        capability,
                    });
                }
                return Ok(Outcome::Complete(Err(e)));
            }
            ok => return Ok(Outcome::Complete(ok)),
        };
        if self.round + 1 > self.limits.max_rounds {
            return Err(MrtrError::TooManyRounds {
                kind: self.binding.kind,
                name: self.binding.name.clone(),
                max: self.limits.max_rounds,
            });
        }
        // Everything recorded stays recorded (the tool may stop asking
        // early in a round), plus what this round answered.
        let mut answers = std::mem::take(&mut inner.recorded);
        answers.extend(std::mem::take(&mut inner.answers));
        let asked: BTreeMap<String, Asked> = inner.pending.drain(..).collect();
        let state = State {
            v: STATE_VERSION,
            b: hex::encode(self.binding.digest),
            r: self.round + 1,
            t: now_secs(),
            a: answers,
            q: asked,
        };
        let sealed = self.key.seal(&state);
        if sealed.len() > self.limits.max_state_bytes {
            return Err(MrtrError::StateTooLarge {
                kind: self.binding.kind,
                name: self.binding.name.clone(),
                limit: self.limits.max_state_bytes,
            });
        }
        Ok(Outcome::InputRequired {
            requests,
            state: sealed,
        })
    }
}

impl ClientRequests for Replay {
    fn request(
        &self,
        req: ClientRequest,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Value, ClientError>> + Send>> {
        let r = self.answer(&req);
        Box::pin(std::future::ready(r))
    }
}

/// Whether `answer` has the shape of a result of `method` (the MCP schema's
/// required members). A malformed answer is the client's protocol error.
pub(crate) fn valid_answer(method: &str, answer: &Value) -> Result<(), String> {
    let obj = answer
        .as_object()
        .ok_or_else(|| format!("expected a JSON object, got {answer}"))?;
    let need = |field: &str, ok: &dyn Fn(&Value) -> bool, what: &str| match obj.get(field) {
        Some(v) if ok(v) => Ok(()),
        Some(v) => Err(format!("`{field}` must be {what}, got {v}")),
        None => Err(format!("`{field}` is missing")),
    };
    match method {
        "elicitation/create" => {
            need(
                "action",
                &|v| matches!(v.as_str(), Some("accept" | "decline" | "cancel")),
                "\"accept\", \"decline\" or \"cancel\"",
            )?;
            match obj.get("content") {
                None | Some(Value::Object(_)) => Ok(()),
                Some(v) => Err(format!("`content` must be an object, got {v}")),
            }
        }
        "sampling/createMessage" => {
            need("role", &|v| v.is_string(), "a string")?;
            need("model", &|v| v.is_string(), "a string")?;
            need("content", &|v| v.is_object() || v.is_array(), "content")
        }
        "roots/list" => need("roots", &|v| v.is_array(), "an array"),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeSet;

    fn keys(requests: &[ClientRequest]) -> BTreeSet<&str> {
        requests.iter().map(|r| r.key.as_str()).collect()
    }

    fn binding() -> Binding {
        Binding::new(
            "default",
            "tool",
            "ask",
            None,
            &json!({"b": 1, "a": [1, {"y": 2, "x": 1}]}),
        )
    }

    fn all() -> Capabilities {
        Capabilities {
            sampling: true,
            elicitation: true,
            roots: true,
        }
    }

    fn elicit(key: &str, message: &str) -> ClientRequest {
        ClientRequest {
            key: key.into(),
            method: "elicitation/create".into(),
            params: json!({"message": message, "requestedSchema": {"type": "object"}}),
        }
    }

    fn accept(name: &str) -> Value {
        json!({"action": "accept", "content": {"name": name}})
    }

    /// Run one round: ask `questions` in order, return what finish says.
    fn round(
        key: &StateKey,
        state: Option<&str>,
        responses: BTreeMap<String, Value>,
        questions: &[ClientRequest],
    ) -> Result<Outcome<Result<Vec<Value>, CallError>>, MrtrError> {
        let r = Replay::open(key, Limits::default(), binding(), state, responses, all())?;
        let mut got = Vec::new();
        let mut pending = Vec::new();
        for q in questions {
            match r.answer(q) {
                Ok(v) => got.push(v),
                Err(ClientError::InputRequired { .. }) => pending.push(q.clone()),
                Err(e) => {
                    return r.finish(Err(CallError::new(
                        "ask",
                        CallErrorKind::ToolFailed {
                            message: e.to_string(),
                        },
                    )));
                }
            }
        }
        let result = if pending.is_empty() {
            Ok(got)
        } else {
            Err(CallError::new(
                "ask",
                CallErrorKind::InputRequired { requests: pending },
            ))
        };
        r.finish(result)
    }

    fn state_of<T>(o: Outcome<T>) -> (Vec<ClientRequest>, String) {
        match o {
            Outcome::InputRequired { requests, state } => (requests, state),
            Outcome::Complete(_) => panic!("expected input required"),
        }
    }

    /// States sealed before arguments were digested in place (by a
    /// replica still running the earlier release) still open: the bytes
    /// digested are those of the sorted copy it serialized.
    #[test]
    fn the_digest_is_of_the_same_bytes_as_a_sorted_copy() {
        fn sorted_copy(v: &Value) -> Value {
            match v {
                Value::Object(m) => Value::Object(
                    m.iter()
                        .map(|(k, v)| (k.clone(), sorted_copy(v)))
                        .collect::<BTreeMap<_, _>>()
                        .into_iter()
                        .collect(),
                ),
                Value::Array(a) => Value::Array(a.iter().map(sorted_copy).collect()),
                v => v.clone(),
            }
        }
        let v = json!({"z": [{"b": 1, "a": "é\"\n"}, 2.5, null, true], "a": {"y": -1, "x": 1e300},
                       "": 0, "ä": 1, "A": [[], {}]});
        let mut h = Sha256::new();
        digest_canonical(&mut h, Sorted(&v));
        let ours: [u8; 32] = h.finalize().into();
        let theirs: [u8; 32] = Sha256::digest(sorted_copy(&v).to_string().as_bytes()).into();
        assert_eq!(ours, theirs);
        let Value::Object(m) = &v else { unreachable!() };
        assert_eq!(
            Binding::of_arguments("s", "tool", "t", None, Some(m)).digest,
            Binding::new("s", "tool", "t", None, &v).digest
        );
        assert_eq!(
            Binding::of_arguments("s", "tool", "t", None, None).digest,
            Binding::new("s", "tool", "t", None, &json!({})).digest
        );
    }

    #[test]
    fn argument_key_order_does_not_change_the_binding() {
        let a = Binding::new(
            "s",
            "tool",
            "t",
            None,
            &json!({"x": 1, "y": {"b": 2, "a": 1}}),
        );
        let b = Binding::new(
            "s",
            "tool",
            "t",
            None,
            &json!({"y": {"a": 1, "b": 2}, "x": 1}),
        );
        assert_eq!(a.digest, b.digest);
        let c = Binding::new(
            "s",
            "tool",
            "t",
            None,
            &json!({"x": 2, "y": {"a": 1, "b": 2}}),
        );
        assert_ne!(a.digest, c.digest);
    }

    #[test]
    fn two_rounds_replay_the_first_answer_and_complete() {
        let key = StateKey::random();
        let qs = [elicit("name", "Name?"), elicit("color", "Color?")];
        let (asked, s1) = state_of(round(&key, None, BTreeMap::new(), &qs).unwrap());
        assert_eq!(asked.len(), 2, "both questions in one round");
        // Answer only the first: the second is asked again.
        let r1 = BTreeMap::from([("name".to_string(), accept("Ada"))]);
        let (asked, s2) = state_of(round(&key, Some(&s1), r1, &qs).unwrap());
        assert_eq!(keys(&asked), BTreeSet::from(["color"]));
        // The first answer is replayed from the state, not resent.
        let r2 = BTreeMap::from([("color".to_string(), accept("blue"))]);
        match round(&key, Some(&s2), r2, &qs).unwrap() {
            Outcome::Complete(Ok(v)) => assert_eq!(v, vec![accept("Ada"), accept("blue")]),
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn tampered_state_is_refused() {
        let key = StateKey::random();
        let (_, s) = state_of(round(&key, None, BTreeMap::new(), &[elicit("k", "?")]).unwrap());
        let mut bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&s)
            .unwrap();
        let n = bytes.len();
        bytes[n / 2] ^= 1;
        let bad = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let e = round(&key, Some(&bad), BTreeMap::new(), &[]).unwrap_err();
        assert!(
            matches!(
                e,
                MrtrError::BadState {
                    reason: "authentication failed"
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("altered"), "{e}");
        let e = round(&key, Some(&format!("{s}-TAMPERED")), BTreeMap::new(), &[]).unwrap_err();
        assert!(matches!(e, MrtrError::BadState { .. }), "{e}");
        // Another host's key cannot open it either.
        let e = round(&StateKey::random(), Some(&s), BTreeMap::new(), &[]).unwrap_err();
        assert!(matches!(e, MrtrError::BadState { .. }), "{e}");
    }

    #[test]
    fn state_opens_only_for_the_same_call() {
        let key = StateKey::random();
        let (_, s) = state_of(round(&key, None, BTreeMap::new(), &[elicit("k", "?")]).unwrap());
        let args = json!({"b": 1, "a": [1, {"y": 2, "x": 1}]});
        for (what, other) in [
            (
                "other arguments",
                Binding::new("default", "tool", "ask", None, &json!({"b": 2})),
            ),
            (
                "another scope",
                Binding::new("tenant-b", "tool", "ask", None, &args),
            ),
            // A review's case: the same call after a reload that swapped
            // the component serving it. The answers given to the old one
            // are not handed to the new one.
            (
                "another component",
                Binding::new("default", "tool", "ask", Some([7; 32]), &args),
            ),
        ] {
            let e = Replay::open(
                &key,
                Limits::default(),
                other,
                Some(&s),
                BTreeMap::new(),
                all(),
            )
            .err()
            .unwrap();
            assert!(matches!(e, MrtrError::WrongCall), "{what}: {e}");
        }
    }

    #[test]
    fn a_tool_that_asks_something_else_on_replay_is_named() {
        let key = StateKey::random();
        let (_, s1) =
            state_of(round(&key, None, BTreeMap::new(), &[elicit("k", "first?")]).unwrap());
        let r = BTreeMap::from([("k".to_string(), accept("x"))]);
        let (_, s2) = state_of(
            round(
                &key,
                Some(&s1),
                r,
                &[elicit("k", "first?"), elicit("j", "?")],
            )
            .unwrap(),
        );
        // On replay the recorded question `k` changed.
        let e = round(&key, Some(&s2), BTreeMap::new(), &[elicit("k", "changed?")]).unwrap_err();
        assert!(matches!(e, MrtrError::Diverged { .. }), "{e}");
        assert!(e.to_string().contains("not deterministic"), "{e}");
        // A pending question answered, then asked differently.
        let r = BTreeMap::from([("j".to_string(), accept("y"))]);
        let e = round(
            &key,
            Some(&s2),
            r,
            &[elicit("k", "first?"), elicit("j", "other?")],
        )
        .unwrap_err();
        assert!(matches!(e, MrtrError::Diverged { .. }), "{e}");
    }

    #[test]
    fn rounds_are_bounded() {
        let key = StateKey::random();
        let mut state: Option<String> = None;
        let mut questions = Vec::new();
        for i in 0..=Limits::default().max_rounds {
            questions.push(elicit(&format!("q{i}"), "?"));
            let answers: BTreeMap<String, Value> = questions[..questions.len() - 1]
                .iter()
                .map(|q| (q.key.clone(), accept("a")))
                .collect();
            match round(&key, state.as_deref(), answers, &questions) {
                Ok(o) => state = Some(state_of(o).1),
                Err(e) => {
                    assert!(matches!(e, MrtrError::TooManyRounds { max: 10, .. }), "{e}");
                    assert_eq!(i, 10);
                    return;
                }
            }
        }
        panic!("no round limit");
    }

    #[test]
    fn malformed_answers_are_refused_and_extra_ones_ignored() {
        let key = StateKey::random();
        let r = BTreeMap::from([("k".to_string(), json!(12345))]);
        let e = round(&key, None, r, &[elicit("k", "?")]).unwrap_err();
        assert!(matches!(e, MrtrError::BadAnswer { .. }), "{e}");
        let r = BTreeMap::from([
            ("k".to_string(), accept("a")),
            ("extra".to_string(), json!({"whatever": true})),
        ]);
        assert!(matches!(
            round(&key, None, r, &[elicit("k", "?")]).unwrap(),
            Outcome::Complete(Ok(_))
        ));
    }

    #[test]
    fn an_undeclared_capability_fails_only_a_call_that_needed_it() {
        let key = StateKey::random();
        let caps = Capabilities {
            sampling: true,
            ..Default::default()
        };
        let r = Replay::open(
            &key,
            Limits::default(),
            binding(),
            None,
            BTreeMap::new(),
            caps.clone(),
        )
        .unwrap();
        let e = r.answer(&elicit("k", "?")).unwrap_err();
        assert!(matches!(e, ClientError::Unsupported { .. }), "{e}");
        let failed = r.finish::<()>(Err(CallError::new(
            "ask",
            CallErrorKind::ToolFailed {
                message: e.to_string(),
            },
        )));
        assert!(matches!(failed, Err(MrtrError::MissingCapability { .. })));
        // A tool that adapts (asks something else instead) is fine.
        let r = Replay::open(
            &key,
            Limits::default(),
            binding(),
            None,
            BTreeMap::new(),
            caps,
        )
        .unwrap();
        let _ = r.answer(&elicit("k", "?"));
        assert!(matches!(r.finish(Ok(1)), Ok(Outcome::Complete(Ok(1)))));
    }

    #[test]
    fn a_shared_key_is_64_hex_digits_and_opens_the_others_state() {
        assert_eq!(StateKey::from_hex("zz").unwrap_err(), StateKeyError::NotHex);
        assert_eq!(
            StateKey::from_hex("7f7f").unwrap_err(),
            StateKeyError::Length(2)
        );
        let a = StateKey::from_hex(&"7f".repeat(32)).unwrap();
        let b = StateKey::from_hex(&format!(" {} ", "7f".repeat(32))).unwrap();
        let (_, s) = state_of(round(&a, None, BTreeMap::new(), &[elicit("k", "?")]).unwrap());
        let r = BTreeMap::from([("k".to_string(), accept("x"))]);
        assert!(matches!(
            round(&b, Some(&s), r, &[elicit("k", "?")]).unwrap(),
            Outcome::Complete(Ok(_))
        ));
    }

    #[test]
    fn a_key_ring_seals_with_its_newest_key_and_opens_with_any() {
        let (old, new, other) = ("11".repeat(32), "22".repeat(32), "33".repeat(32));
        let before = StateKey::from_hex_list(&old).unwrap();
        let during =
            StateKey::from_hex_list(&format!("# rotated\n{new}\n{old} # retiring")).unwrap();
        let after = StateKey::from_hex_list(&new).unwrap();
        let stranger = StateKey::from_hex_list(&other).unwrap();
        assert_eq!(during.len(), 2);
        let by_old = before.seal_bytes(b"aad", b"x");
        let by_new = during.seal_bytes(b"aad", b"y");
        assert_eq!(
            during.open_bytes(b"aad", &by_old).as_deref(),
            Some(&b"x"[..])
        );
        assert_eq!(
            after.open_bytes(b"aad", &by_new).as_deref(),
            Some(&b"y"[..])
        );
        // Retired and unknown keys open nothing; nor does another purpose.
        assert_eq!(after.open_bytes(b"aad", &by_old), None);
        assert_eq!(stranger.open_bytes(b"aad", &by_new), None);
        assert_eq!(during.open_bytes(b"other", &by_new), None);
        let mut tampered = by_new.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(during.open_bytes(b"aad", &tampered), None);
        assert_eq!(
            StateKey::from_hex_list(" # nothing\n").unwrap_err(),
            StateKeyError::Empty
        );
        let nine = vec![new.clone(); 9].join(",");
        assert_eq!(
            StateKey::from_hex_list(&nine).unwrap_err(),
            StateKeyError::TooMany(9)
        );
        assert_eq!(
            StateKey::from_hex_list(&format!("{new},abc")).unwrap_err(),
            StateKeyError::NotHex
        );
    }
}
