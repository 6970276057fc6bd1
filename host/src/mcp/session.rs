//! Sealed sessions: 2025-11-25 HTTP sessions that any replica can serve.
//!
//! A session's state (what its `initialize` said: protocol version, client
//! capabilities, client info), the tenant it belongs to and when it expires
//! travel in its `Mcp-Session-Id`, encrypted and authenticated with the
//! host's [`StateKey`] ring (XChaCha20-Poly1305; the newest key seals, every
//! key opens). The id is `SID.SEALED`: `SID` 32 random hex digits (what the
//! audit log records), `SEALED` the base64url nonce, ciphertext and tag, with
//! the tenant and `SID` bound as associated data.
//!
//! A replica that gets a request for a session it does not hold opens the id
//! and, if it is genuine, unexpired and this tenant's, restores the session
//! by replaying its `initialize` (rmcp's session-restore path) and serves the
//! request: no shared store, no affinity. An id that does not open (forged,
//! altered, sealed by an unknown key or for another tenant, expired) is a
//! session that does not exist: 404, as the spec says, and the client starts
//! a new session.
//!
//! What does not travel: the session's `logging/setLevel` (a restored
//! session starts at `info`), and server-to-client streams (a GET stream or
//! a call in flight on a replica that dies ends; the client reconnects or
//! retries). `DELETE` ends the session on the replica that holds it, and
//! that replica answers its id 404 from then on (it remembers the ended
//! ids of each tenant until they expire, at most [`MAX_ENDED`]); another
//! replica does not know (nothing is shared to revoke it) and restores it,
//! for its holder, who could open a new session anyway.
//!
//! Owns: sealing and opening session ids, and the session manager and store
//! rmcp's Streamable HTTP service uses. Knows nothing of tools or calls.

use crate::mrtr::StateKey;
use base64::Engine as _;
use futures::Stream;
use rmcp::model::{ClientJsonRpcMessage, ClientRequest, InitializeRequestParams, RequestId};
use rmcp::transport::WorkerTransport;
use rmcp::transport::streamable_http_server::session::local::{
    LocalSessionManager, LocalSessionManagerError, LocalSessionWorker,
};
use rmcp::transport::streamable_http_server::session::{
    EventStore, ServerSseMessage, SessionState, SessionStore, SessionStoreError,
};
use rmcp::transport::streamable_http_server::{RestoreOutcome, SessionId, SessionManager};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Associated data of every sealed session id (then the tenant and `SID`).
const AAD: &[u8] = b"toolhost session id v1";
const VERSION: u8 = 1;
/// The largest `initialize` (as sealed JSON) a session id carries: ids
/// travel in a header on every request, and proxies bound header sizes
/// (nginx: 8 KiB per line by default).
pub(crate) const MAX_SEALED_INITIALIZE: usize = 3 << 10;
/// The longest id opened (longer ones are refused unread).
const MAX_ID: usize = 8 << 10;
/// Clock skew tolerated between replicas for an id's issue time.
const SKEW: u64 = 300;

/// Seals and opens the session ids of one tenant (or of the one scope a
/// tenantless server serves). Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct SessionSeal {
    key: StateKey,
    /// `tenant:NAME` or `scope:NAME`: what an id is bound to.
    owner: Arc<str>,
    ttl: Duration,
    /// Sessions ended here by `DELETE`: `SID` to its expiry.
    ended: Arc<std::sync::Mutex<std::collections::HashMap<u128, u64>>>,
}

/// Most ended sessions remembered per tenant (24 bytes each, about 200
/// KiB). Past it the expired are forgotten, then those expiring soonest:
/// such an id opens again, for its holder only, as on another replica.
const MAX_ENDED: usize = 8192;

/// The plaintext of a sealed session id.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    v: u8,
    /// The owner (tenant) the session belongs to.
    o: String,
    /// The `SID` part of the id.
    s: String,
    /// Issued and expires at, seconds since the epoch.
    iat: u64,
    exp: u64,
    /// The client's `initialize` parameters (without `_meta`).
    p: InitializeRequestParams,
}

impl Claims {
    /// The `SID` as a number (its 32 hex digits were checked at opening).
    fn sid(&self) -> Option<u128> {
        u128::from_str_radix(&self.s, 16).ok()
    }
}

/// Why a session id does not open. Never shown to the client (every case is
/// a 404, so an attacker learns nothing from which), but logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SealError {
    #[error("not a sealed session id")]
    Malformed,
    #[error("no key opens it, or it was sealed for another tenant or altered")]
    Unauthentic,
    #[error("expired")]
    Expired,
    #[error("issued in the future (clock skew between replicas?)")]
    Future,
    #[error("its session was ended (DELETE)")]
    Ended,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl SessionSeal {
    pub(crate) fn new(key: StateKey, owner: String, ttl: Duration) -> SessionSeal {
        SessionSeal {
            key,
            owner: owner.into(),
            ttl,
            ended: Arc::default(),
        }
    }

    /// `id`'s session was ended by its holder: it opens no more here. An id
    /// that does not open is not remembered (anyone can send a `DELETE`).
    pub(crate) fn end(&self, id: &str) {
        let Ok(c) = self.open_claims(id) else {
            return;
        };
        let (Some(sid), exp) = (c.sid(), c.exp) else {
            return;
        };
        let mut ended = lock(&self.ended);
        // Ended already: nothing to do (a repeated DELETE costs no scan).
        if ended.contains_key(&sid) {
            return;
        }
        if ended.len() >= MAX_ENDED {
            let now = now_secs();
            ended.retain(|_, exp| *exp > now);
        }
        if ended.len() >= MAX_ENDED
            && let Some(soonest) = ended.iter().min_by_key(|(_, exp)| **exp).map(|(s, _)| *s)
        {
            ended.remove(&soonest);
        }
        ended.insert(sid, exp);
    }

    fn aad(&self, sid: &str) -> Vec<u8> {
        let mut aad = AAD.to_vec();
        for part in [&*self.owner, sid] {
            aad.extend_from_slice(&(part.len() as u64).to_le_bytes());
            aad.extend_from_slice(part.as_bytes());
        }
        aad
    }

    /// A new session id carrying `params`.
    pub(crate) fn seal(&self, params: &InitializeRequestParams) -> SessionId {
        self.seal_at(params, now_secs())
    }

    fn seal_at(&self, params: &InitializeRequestParams, iat: u64) -> SessionId {
        let nonce = <chacha20poly1305::XNonce as chacha20poly1305::aead::Generate>::generate();
        let sid = hex::encode(&nonce[..16]);
        let mut p = params.clone();
        p.meta = None;
        let claims = Claims {
            v: VERSION,
            o: self.owner.to_string(),
            s: sid.clone(),
            iat,
            exp: iat.saturating_add(self.ttl.as_secs()),
            p,
        };
        let plain = serde_json::to_vec(&claims).expect("claims serialize");
        let sealed = self.key.seal_bytes(&self.aad(&sid), &plain);
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealed);
        format!("{sid}.{b64}").into()
    }

    /// The `initialize` parameters sealed in `id`, if it is genuine, this
    /// owner's, unexpired and not ended here. Checked for sessions held
    /// here too, not only when one is restored: rmcp closes a session
    /// before its store hears of the `DELETE`, and a request in between
    /// restored it, to be served until it expired (found by review).
    pub(crate) fn open(&self, id: &str) -> Result<InitializeRequestParams, SealError> {
        let c = self.open_claims(id)?;
        if c.sid()
            .is_some_and(|sid| lock(&self.ended).contains_key(&sid))
        {
            return Err(SealError::Ended);
        }
        Ok(c.p)
    }

    /// The claims of `id`, if it is genuine, this owner's and unexpired.
    fn open_claims(&self, id: &str) -> Result<Claims, SealError> {
        if id.len() > MAX_ID {
            return Err(SealError::Malformed);
        }
        let (sid, sealed) = id.split_once('.').ok_or(SealError::Malformed)?;
        if sid.len() != 32 || !sid.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(SealError::Malformed);
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sealed)
            .map_err(|_| SealError::Malformed)?;
        // Shorter than a nonce and a tag: nothing to authenticate.
        if bytes.len() < 24 + 16 {
            return Err(SealError::Malformed);
        }
        let plain = self
            .key
            .open_bytes(&self.aad(sid), &bytes)
            .ok_or(SealError::Unauthentic)?;
        let c: Claims = serde_json::from_slice(&plain).map_err(|_| SealError::Malformed)?;
        // Bound twice (associated data and claims): both must agree.
        if c.v != VERSION || c.o != *self.owner || c.s != sid {
            return Err(SealError::Unauthentic);
        }
        let now = now_secs();
        // This server's own TTL too: an id sealed for longer (by a replica
        // with a longer `--session-ttl`, or before a restart that lowered
        // it) was accepted for its whole sealed life (found by review).
        if now >= c.exp || now >= c.iat.saturating_add(self.ttl.as_secs()) {
            return Err(SealError::Expired);
        }
        if c.iat > now + SKEW {
            return Err(SealError::Future);
        }
        Ok(c)
    }
}

/// The `SID` of a session id, for the audit log: the part before the `.`,
/// bounded (a client can send anything in the header).
pub(crate) fn audit_id(header: &str) -> &str {
    let sid = header.split('.').next().unwrap_or(header);
    match sid.char_indices().nth(64) {
        Some((i, _)) => &sid[..i],
        None => sid,
    }
}

tokio::task_local! {
    /// The parameters of the `initialize` being served in this task, for the
    /// session manager to seal into the new session's id (rmcp creates the
    /// session before it hands the `initialize` over).
    static INITIALIZE: InitializeRequestParams;
}

/// The `initialize` parameters of `message`, if it opens a session, checked
/// to fit in a session id.
pub(crate) fn initialize_params(
    message: &ClientJsonRpcMessage,
) -> Result<Option<InitializeRequestParams>, String> {
    let ClientJsonRpcMessage::Request(r) = message else {
        return Ok(None);
    };
    let ClientRequest::InitializeRequest(init) = &r.request else {
        return Ok(None);
    };
    let mut p = init.params.clone();
    p.meta = None;
    let size = serde_json::to_vec(&p)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > MAX_SEALED_INITIALIZE {
        return Err(format!(
            "the initialize parameters are {size} bytes; at most {MAX_SEALED_INITIALIZE} fit in a session id (send fewer capabilities or a shorter clientInfo)"
        ));
    }
    Ok(Some(p))
}

/// Run `f` (rmcp serving a request) with `params` as the `initialize` a new
/// session seals.
pub(crate) async fn initializing<F: Future>(
    params: Option<InitializeRequestParams>,
    f: F,
) -> F::Output {
    match params {
        Some(p) => INITIALIZE.scope(p, f).await,
        None => f.await,
    }
}

/// Why the session manager failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    #[error(transparent)]
    Local(#[from] LocalSessionManagerError),
    #[error("a session was created outside an `initialize` request")]
    NoInitialize,
    #[error("a new session id collided with a live one")]
    Collision,
    #[error("{0} sessions are open, the most this server holds for their owner")]
    Full(usize),
}

/// rmcp's in-memory session manager, with sealed ids: sessions are created
/// under an id that carries their `initialize`, a held session whose id has
/// expired is ended, and at most `max` are held at once.
///
/// Each held session is a task and its channels (idle ones end after
/// rmcp's keep-alive, 5 minutes); a client could otherwise open them as
/// fast as it can send `initialize`s, or have a replica restore every id it
/// was ever given. The front end refuses a request that would open one
/// past `max` with a 429 ([`SealedSessions::admits`]); the count checked
/// here again, under a lock, is the bound itself (a request racing past
/// the front end's check gets rmcp's 500 instead).
pub(crate) struct SealedSessions {
    local: LocalSessionManager,
    seal: SessionSeal,
    max: std::sync::atomic::AtomicUsize,
    /// Held while a session is counted and created: two requests cannot
    /// both take the last place.
    opening: tokio::sync::Mutex<()>,
    /// The request ids in flight in each held session (see
    /// [`SealedSessions::create_stream`]).
    in_flight: InFlightIds,
}

/// Where a request in flight is (see `accept_message`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Being handed to rmcp's session worker.
    SettingUp,
    /// rmcp has it.
    Pushed,
    /// Cancelled while being set up: whether rmcp saw the request or the
    /// cancellation first is unknown, so the id is freed by its response,
    /// or by its stream ending without one (rmcp then closed its route).
    CancelledEarly,
}

/// Request ids in flight, per held session, each with its stage.
type InFlightIds = Arc<
    std::sync::Mutex<
        std::collections::HashMap<SessionId, std::collections::HashMap<RequestId, Stage>>,
    >,
>;

/// The longest request id or progress token a session takes (as JSON
/// text): rmcp keeps both with the request's channel, for a minute after a
/// cancellation.
const MAX_REQUEST_ID: usize = super::MAX_ID_BYTES;

/// Most requests in flight in one session.
const MAX_IN_FLIGHT: usize = 1024;

impl SealedSessions {
    pub(crate) fn new(seal: SessionSeal, max: usize) -> SealedSessions {
        SealedSessions {
            local: LocalSessionManager::default(),
            seal,
            max: max.into(),
            opening: tokio::sync::Mutex::new(()),
            in_flight: InFlightIds::default(),
        }
    }

    /// The most sessions held at once from now on (a reload may change it;
    /// sessions already held past a lowered bound stay until they end).
    pub(crate) fn set_max(&self, max: usize) {
        self.max.store(max, std::sync::atomic::Ordering::Relaxed);
    }

    /// The most sessions held at once.
    pub(crate) fn max(&self) -> usize {
        self.max.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether a request may go on: it is for a session held here, or it
    /// opens (`initialize`) or restores (a genuine id not held) one and
    /// there is room. Requests without a session (stateless) always may,
    /// and so may an id that does not open (forged, expired, another
    /// tenant's): rmcp answers it 404, which tells its client to start
    /// over, where a 429 would have it retry for ever.
    pub(crate) async fn admits(&self, id: Option<&str>, initialize: bool) -> bool {
        if !initialize && id.is_none() {
            return true;
        }
        let sessions = self.local.sessions.read().await;
        if sessions.len() < self.max() {
            return true;
        }
        match id {
            Some(id) if !initialize => sessions.contains_key(id) || self.seal.open(id).is_err(),
            _ => false,
        }
    }

    /// Fail unless there is room for one more session.
    async fn room(&self) -> Result<(), SessionError> {
        let max = self.max();
        if self.local.sessions.read().await.len() >= max {
            return Err(SessionError::Full(max));
        }
        Ok(())
    }
}

impl SessionManager for SealedSessions {
    type Error = SessionError;
    type Transport = WorkerTransport<LocalSessionWorker>;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        let id = INITIALIZE
            .try_with(|p| self.seal.seal(p))
            .map_err(|_| SessionError::NoInitialize)?;
        let _one = self.opening.lock().await;
        self.room().await?;
        // Ids kept for sessions that have ended since (their responses
        // never seen): the sessions held bound what is kept.
        {
            let live = self.local.sessions.read().await;
            lock(&self.in_flight).retain(|s, _| live.contains_key(s));
        }
        match self.local.restore_session(id.clone()).await? {
            RestoreOutcome::Restored(t) => Ok((id, t)),
            _ => Err(SessionError::Collision),
        }
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<rmcp::model::ServerJsonRpcMessage, Self::Error> {
        Ok(self.local.initialize_session(id, message).await?)
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        if !self.local.has_session(id).await? {
            return Ok(false);
        }
        if let Err(e) = self.seal.open(id) {
            tracing::debug!("ending held session: its id {e}");
            self.local.close_session(id).await?;
            return Ok(false);
        }
        Ok(true)
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        lock(&self.in_flight).remove(id);
        Ok(self.local.close_session(id).await?)
    }

    /// A request's stream, its id held in flight until its response is
    /// sent. rmcp routes a session's messages by request id: a second
    /// request under an id in flight overwrote the first's route, and the
    /// first's channel stayed for the session's life (a review's case:
    /// concurrent `ping`s under one id leaked 120 MB in a session, about
    /// 1 MB each with long ids). Such a request is answered with an error,
    /// as over stdio, and so is one whose id or progress token is longer
    /// than [`MAX_REQUEST_ID`], or past [`MAX_IN_FLIGHT`] in its session.
    /// An id whose response went to a resumed stream (`Last-Event-ID`) is
    /// freed when that stream carries it (see [`SealedSessions::resume`]).
    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        use futures::StreamExt as _;
        use rmcp::model::GetMeta as _;
        let held = match &message {
            ClientJsonRpcMessage::Request(r) => {
                let rid = &r.id;
                // Numbers are short; a string is measured, not copied.
                let long = |id: &rmcp::model::NumberOrString| match id {
                    rmcp::model::NumberOrString::String(s) => s.len() > MAX_REQUEST_ID,
                    rmcp::model::NumberOrString::Number(_) => false,
                };
                let token = r.request.get_meta().get_progress_token();
                let refused = if long(rid) {
                    Some(format!(
                        "request ids longer than {MAX_REQUEST_ID} bytes are refused"
                    ))
                } else if token.is_some_and(|t| long(&t.0)) {
                    Some(format!(
                        "progress tokens longer than {MAX_REQUEST_ID} bytes are refused"
                    ))
                } else {
                    let mut held = lock(&self.in_flight);
                    let ids = held.entry(id.clone()).or_default();
                    if ids.len() >= MAX_IN_FLIGHT {
                        Some(format!(
                            "{MAX_IN_FLIGHT} requests are in flight in this session; send more once they are answered"
                        ))
                    } else if ids.insert(rid.clone(), Stage::SettingUp).is_some() {
                        Some(format!(
                            "request id {} is already in flight in this session",
                            crate::error::shown_name(&rid.to_string())
                        ))
                    } else {
                        None
                    }
                };
                if let Some(why) = refused {
                    let error: rmcp::model::ServerJsonRpcMessage =
                        rmcp::model::JsonRpcMessage::error(
                            rmcp::ErrorData::invalid_request(why, None),
                            Some(rid.clone()),
                        );
                    let once = futures::stream::iter([ServerSseMessage::from_message(error)]);
                    return Ok(once.left_stream());
                }
                // From here, dropped (an error below, or this future
                // dropped while rmcp's worker is busy), it frees the id.
                Some(Held {
                    session: id.clone(),
                    id: rid.clone(),
                    ids: self.in_flight.clone(),
                    keep: false,
                })
            }
            _ => None,
        };
        let stream = self.local.create_stream(id, message).await?;
        // rmcp has it: a cancellation now reaches it after it (see
        // `accept_message`).
        if let Some(h) = &held
            && let Some(stage @ Stage::SettingUp) = lock(&self.in_flight)
                .get_mut(&h.session)
                .and_then(|ids| ids.get_mut(&h.id))
        {
            *stage = Stage::Pushed;
        }
        Ok(Tracked {
            inner: Some(Box::pin(stream)),
            session: id.clone(),
            ids: self.in_flight.clone(),
            own: held,
            read_on: false,
        }
        .right_stream())
    }

    /// A notification or a client's response. A cancellation frees its
    /// request's id once rmcp has it: rmcp closes that request's route, and
    /// a stream that ended without a response would otherwise keep the id
    /// taken. Only a request rmcp already has, and only after the
    /// cancellation is handed on: freed earlier, a request still being set
    /// up ran on uncancelled under a free id, and a second request under
    /// it overwrote its route (found by the review of the fix).
    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        let cancelled = match &message {
            ClientJsonRpcMessage::Notification(n) => match &n.notification {
                rmcp::model::ClientNotification::CancelledNotification(c) => {
                    c.params.request_id.clone().filter(|rid| {
                        let mut held = lock(&self.in_flight);
                        match held.get_mut(id).and_then(|ids| ids.get_mut(rid)) {
                            Some(Stage::Pushed) => true,
                            Some(stage) => {
                                *stage = Stage::CancelledEarly;
                                false
                            }
                            None => false,
                        }
                    })
                }
                _ => None,
            },
            _ => None,
        };
        self.local.accept_message(id, message).await?;
        if let Some(rid) = cancelled {
            free(&self.in_flight, id, &rid);
        }
        Ok(())
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        Ok(self.local.create_standalone_stream(id).await?)
    }

    /// A resumed stream: a request's response it carries frees the
    /// request's id (its own stream ended when this one took its place).
    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        // A request's stream (`INDEX/REQUEST`), which ends with its
        // response; the session's common stream never ends, and is not
        // read on when dropped.
        let request_wise = last_event_id.contains('/');
        let stream = self.local.resume(id, last_event_id).await?;
        Ok(Tracked {
            inner: Some(Box::pin(stream)),
            session: id.clone(),
            ids: self.in_flight.clone(),
            own: None,
            read_on: request_wise,
        })
    }

    async fn restore_session(
        &self,
        id: SessionId,
    ) -> Result<RestoreOutcome<Self::Transport>, Self::Error> {
        let _one = self.opening.lock().await;
        if self.local.has_session(&id).await? {
            return Ok(RestoreOutcome::AlreadyPresent);
        }
        self.room().await?;
        Ok(self.local.restore_session(id).await?)
    }

    fn event_store(&self) -> Option<Arc<dyn EventStore>> {
        None
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The request id a JSON-RPC response (or error) answers.
fn answered(m: &ServerSseMessage) -> Option<&RequestId> {
    match m.message.as_deref()? {
        rmcp::model::JsonRpcMessage::Response(r) => Some(&r.id),
        rmcp::model::JsonRpcMessage::Error(e) => e.id.as_ref(),
        _ => None,
    }
}

/// Read `rest` of a stream to its end on a task of `rt` (what its items
/// free is freed as they pass). The caller checks for a runtime before it
/// builds `rest`: a `rest` dropped for want of one would drop its parts
/// through the same `Drop` again.
fn read_on<T: Stream + Send + Unpin + 'static>(rt: tokio::runtime::Handle, mut rest: T) {
    use futures::StreamExt as _;
    rt.spawn(async move { while rest.next().await.is_some() {} });
}

/// Free request id `rid` of `session`.
fn free(ids: &InFlightIds, session: &SessionId, rid: &RequestId) {
    let mut held = lock(ids);
    if let Some(set) = held.get_mut(session) {
        set.remove(rid);
        if set.is_empty() {
            held.remove(session);
        }
    }
}

/// One request id in flight: freed when dropped, unless `keep` (its
/// response did not come on its own stream: a resumed one carries it).
struct Held {
    session: SessionId,
    id: RequestId,
    ids: InFlightIds,
    keep: bool,
}

impl Drop for Held {
    fn drop(&mut self) {
        if !self.keep {
            free(&self.ids, &self.session, &self.id);
        }
    }
}

/// A stream from rmcp whose responses free their requests' ids.
///
/// A request's own stream (`own`): its id is in flight until its response
/// passes. Read to its end even when the client went away first (rmcp's
/// channel lives until the request's response), so its id is never taken
/// again while rmcp still routes it. Ended without its response (a resumed
/// stream took its place, the request was cancelled, or the session
/// ended), the id stays taken until a resumed stream carries the response,
/// a cancellation of a request rmcp had frees it, or the session goes; a
/// request cancelled while being set up is freed as its stream ends (see
/// `Stage`).
///
/// A resumed stream: each response it carries frees its request's id; a
/// request's resumed stream (`read_on`) is read to its end too when the
/// client goes away first, as nothing else would free the id (found by the
/// review of the fix). The session's common stream never ends, and is not.
struct Tracked<S: Stream<Item = ServerSseMessage> + Send + 'static> {
    inner: Option<std::pin::Pin<Box<S>>>,
    session: SessionId,
    ids: InFlightIds,
    /// The request whose own stream this is, until its response passes.
    own: Option<Held>,
    /// Read on when dropped (a request's resumed stream).
    read_on: bool,
}

impl<S: Stream<Item = ServerSseMessage> + Send + 'static> Stream for Tracked<S> {
    type Item = ServerSseMessage;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<ServerSseMessage>> {
        let Some(inner) = self.inner.as_mut() else {
            return std::task::Poll::Ready(None);
        };
        let next = std::task::ready!(inner.as_mut().poll_next(cx));
        match next.as_ref() {
            Some(m) => {
                if let Some(rid) = answered(m) {
                    if self.own.as_ref().is_some_and(|h| &h.id == rid) {
                        self.own = None;
                    } else {
                        free(&self.ids, &self.session, rid);
                    }
                }
            }
            None => {
                self.inner = None;
                // Kept, unless cancelled while being set up (see `Stage`).
                if let Some(mut h) = self.own.take() {
                    h.keep = lock(&h.ids)
                        .get(&h.session)
                        .and_then(|ids| ids.get(&h.id))
                        .is_some_and(|stage| *stage != Stage::CancelledEarly);
                }
            }
        }
        std::task::Poll::Ready(next)
    }
}

impl<S: Stream<Item = ServerSseMessage> + Send + 'static> Drop for Tracked<S> {
    fn drop(&mut self) {
        if !(self.read_on || self.own.is_some()) {
            return;
        }
        let Some(inner) = self.inner.take() else {
            return;
        };
        // The client went away first: read on, there (with no runtime to
        // read on, an own id is freed with the stream).
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        read_on(
            rt,
            Tracked {
                inner: Some(inner),
                session: self.session.clone(),
                ids: self.ids.clone(),
                own: self.own.take(),
                read_on: self.read_on,
            },
        );
    }
}

/// The "store" rmcp restores sessions from: the id itself. Nothing is
/// stored; loading opens the id, deleting remembers it as ended.
pub(crate) struct SealedStore(pub(crate) SessionSeal);

#[async_trait::async_trait]
impl SessionStore for SealedStore {
    async fn load(&self, session_id: &str) -> Result<Option<SessionState>, SessionStoreError> {
        match self.0.open(session_id) {
            Ok(p) => Ok(Some(SessionState::new(p))),
            Err(e) => {
                tracing::debug!("session id refused: {e}");
                Ok(None)
            }
        }
    }

    async fn store(&self, _: &str, _: &SessionState) -> Result<(), SessionStoreError> {
        Ok(())
    }

    /// rmcp's `DELETE`, after the session is closed: remembered as ended.
    async fn delete(&self, session_id: &str) -> Result<(), SessionStoreError> {
        self.0.end(session_id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::model::{ClientCapabilities, Implementation};

    fn params() -> InitializeRequestParams {
        InitializeRequestParams::new(
            ClientCapabilities::default(),
            Implementation::new("client", "1.0"),
        )
    }

    fn seal(key: &StateKey, owner: &str) -> SessionSeal {
        SessionSeal::new(key.clone(), owner.into(), Duration::from_secs(3600))
    }

    #[test]
    fn an_id_opens_for_its_tenant_on_any_replica_sharing_the_key() {
        let key = StateKey::from_hex_list(&"42".repeat(32)).unwrap();
        let id = seal(&key, "tenant:a").seal(&params());
        assert!(id.len() < 1024, "{} bytes", id.len());
        assert!(id.bytes().all(|b| (0x21..=0x7e).contains(&b)), "{id}");
        let other_replica = seal(&StateKey::from_hex(&"42".repeat(32)).unwrap(), "tenant:a");
        assert_eq!(other_replica.open(&id).unwrap().client_info.name, "client");
        assert_eq!(audit_id(&id).len(), 32);
    }

    /// An ended id opens no more on the seal (and its clones) that ended
    /// it; ids that do not open are not remembered; at most `MAX_ENDED`
    /// are, the soonest to expire forgotten first.
    #[test]
    fn an_ended_session_does_not_open_and_the_ended_are_bounded() {
        let key = StateKey::random();
        let a = seal(&key, "tenant:a");
        let id = a.seal(&params());
        let kept = a.seal(&params());
        a.clone().end(&id);
        assert_eq!(a.open(&id).unwrap_err(), SealError::Ended);
        assert!(a.open(&kept).is_ok());
        // Another replica (its own seal) knows nothing of it.
        assert!(seal(&key, "tenant:a").open(&id).is_ok());
        a.end("forged");
        a.end(&seal(&key, "tenant:b").seal(&params()));
        assert_eq!(lock(&a.ended).len(), 1);
        // Full: the soonest to expire is forgotten first.
        let base = now_secs();
        let soonest = a.seal_at(&params(), base - 200);
        a.end(&soonest);
        for i in 0..MAX_ENDED as u64 {
            a.end(&a.seal_at(&params(), base - 100 + i % 50));
        }
        assert_eq!(lock(&a.ended).len(), MAX_ENDED);
        assert!(a.open(&soonest).is_ok(), "the soonest to expire was kept");
        assert_eq!(a.open(&id).unwrap_err(), SealError::Ended);
    }

    #[test]
    fn forged_altered_foreign_and_expired_ids_are_refused() {
        let key = StateKey::random();
        let a = seal(&key, "tenant:a");
        let id = a.seal(&params());
        // Another tenant, same key: the binding fails.
        assert_eq!(
            seal(&key, "tenant:b").open(&id).unwrap_err(),
            SealError::Unauthentic
        );
        // Another key.
        assert_eq!(
            seal(&StateKey::random(), "tenant:a").open(&id).unwrap_err(),
            SealError::Unauthentic
        );
        // The SID swapped for another session's: bound as associated data.
        let other = a.seal(&params());
        let spliced = format!("{}.{}", audit_id(&other), id.split_once('.').unwrap().1);
        assert_eq!(a.open(&spliced).unwrap_err(), SealError::Unauthentic);
        // Any flipped character.
        for i in [40, id.len() / 2, id.len() - 1] {
            let mut b = id.as_bytes().to_vec();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            assert!(a.open(std::str::from_utf8(&b).unwrap()).is_err(), "at {i}");
        }
        for junk in [
            "",
            "x",
            "a.b",
            &"0".repeat(32),
            &format!("{}.", "0".repeat(32)),
        ] {
            assert_eq!(a.open(junk).unwrap_err(), SealError::Malformed, "{junk}");
        }
        assert_eq!(
            a.open(&"A".repeat(MAX_ID + 1)).unwrap_err(),
            SealError::Malformed
        );
        // Expired, and issued implausibly far in the future.
        let old = a.seal_at(&params(), now_secs() - 3601);
        assert_eq!(a.open(&old).unwrap_err(), SealError::Expired);
        let future = a.seal_at(&params(), now_secs() + 3 * SKEW);
        assert_eq!(a.open(&future).unwrap_err(), SealError::Future);
        // The review's case: sealed by a replica with a longer TTL (or
        // before a restart lowered it), an id lived its sealed life here.
        // This server's own TTL bounds it too.
        let long = SessionSeal::new(key.clone(), "tenant:a".into(), Duration::from_secs(86_400))
            .seal_at(&params(), now_secs() - 7200);
        assert_eq!(a.open(&long).unwrap_err(), SealError::Expired);
    }

    /// rmcp closes a session, then tells its store of the `DELETE`: a
    /// request in between restored it (found by review). A session held
    /// here whose id was ended since is held no more at its next request,
    /// and a full table answers its id 404, not 429.
    #[tokio::test]
    async fn a_session_restored_before_its_end_was_heard_ends_at_its_next_request() {
        let key = StateKey::random();
        let sealer = seal(&key, "tenant:a");
        let sessions = SealedSessions::new(sealer.clone(), 1);
        let id = sealer.seal(&params());
        let restored = sessions.restore_session(id.clone()).await.unwrap();
        assert!(matches!(restored, RestoreOutcome::Restored(_)));
        SealedStore(sealer.clone()).delete(&id).await.unwrap();
        assert!(!sessions.has_session(&id).await.unwrap());
        assert!(!sessions.local.has_session(&id).await.unwrap());
        let other = sealer.seal(&params());
        sessions.restore_session(other).await.unwrap();
        assert!(sessions.admits(Some(&*id), false).await, "404, not 429");
    }

    #[tokio::test]
    async fn no_more_sessions_are_held_than_the_bound_however_they_arrive() {
        let key = StateKey::random();
        let sealer = seal(&key, "tenant:a");
        let sessions = SealedSessions::new(sealer.clone(), 2);
        let ids: Vec<SessionId> = (0..3).map(|_| sealer.seal(&params())).collect();
        // Restored from their ids (another replica's sessions), then a new
        // one: the third is refused either way.
        for id in &ids[..2] {
            assert!(sessions.admits(Some(&**id), false).await);
            let restored = sessions.restore_session(id.clone()).await.unwrap();
            assert!(matches!(restored, RestoreOutcome::Restored(_)));
        }
        assert!(matches!(
            sessions.restore_session(ids[2].clone()).await,
            Err(SessionError::Full(2))
        ));
        let created = INITIALIZE
            .scope(params(), async { sessions.create_session().await })
            .await;
        assert!(matches!(created, Err(SessionError::Full(2))));
        // A held session restored again is still the one held.
        assert!(matches!(
            sessions.restore_session(ids[0].clone()).await,
            Ok(RestoreOutcome::AlreadyPresent)
        ));
        // What the front end asks before it hands a request over.
        assert!(sessions.admits(Some(&*ids[0]), false).await);
        assert!(sessions.admits(None, false).await);
        assert!(!sessions.admits(Some(&*ids[2]), false).await);
        assert!(!sessions.admits(None, true).await);
        // An id that would not restore anyway goes on, to rmcp's 404.
        let foreign = seal(&key, "tenant:b").seal(&params());
        assert!(sessions.admits(Some(&*foreign), false).await);
        assert!(sessions.admits(Some("forged"), false).await);
        // One ended, or the bound raised by a reload: room again.
        sessions.close_session(&ids[0]).await.unwrap();
        assert!(sessions.admits(None, true).await);
        sessions.restore_session(ids[2].clone()).await.unwrap();
        assert!(!sessions.admits(None, true).await);
        sessions.set_max(3);
        assert!(sessions.admits(None, true).await);
    }

    #[test]
    fn a_rotated_ring_still_opens_ids_sealed_with_the_retiring_key() {
        let (old, new) = ("01".repeat(32), "02".repeat(32));
        let before = seal(&StateKey::from_hex_list(&old).unwrap(), "scope:default");
        let during = seal(
            &StateKey::from_hex_list(&format!("{new}\n{old}")).unwrap(),
            "scope:default",
        );
        let after = seal(&StateKey::from_hex_list(&new).unwrap(), "scope:default");
        let id = before.seal(&params());
        assert!(during.open(&id).is_ok());
        assert_eq!(after.open(&id).unwrap_err(), SealError::Unauthentic);
        assert!(after.open(&during.seal(&params())).is_ok());
    }
}
