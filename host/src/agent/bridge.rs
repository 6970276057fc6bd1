//! `mcp_message` over an in-memory transport: one long-lived rmcp server
//! (the same `ServerHandler` every MCP front end uses) per SDK server name,
//! fed the CLI's JSON-RPC messages one by one. Responses are matched to
//! requests by JSON-RPC id; server notifications (`tools/list_changed`,
//! logging, progress) go back to the CLI; server-to-client requests are
//! answered here (ping) or refused, so nothing ever waits forever.
//!
//! `tools/call`, the hot path, skips rmcp's service loop once the session
//! is initialized: the request goes to the same handler's
//! [`Service::handle_request`] on the task that answers the control
//! request, with a context made as the loop makes it (the connection's
//! peer, the request's `_meta`, a cancellation token of its own). The loop
//! would cost five task hand-offs per call (in, a spawned handler, back,
//! a spawned send, out); the handler, its checks and the call path are
//! the same either way. A request naming its own protocol version in
//! `_meta` still goes through the loop, which scopes that version for the
//! handler.
//!
//! The session makes each server's MCP handshake itself at the start
//! ([`Bridge::handshake`]) and hands the CLI its results with `initialize`
//! (`sdkMcpServerManifests`), so the CLI's client answers its own handshake
//! from them; the CLI's messages then reach the connection made here. A
//! CLI that ignores them sends its own `initialize`, served as ever.
//!
//! Must not: interpret MCP beyond routing (the handler answers), or let a
//! request id be answered twice.

use crate::mcp::{Finishing, call_past_loop};
use futures::FutureExt;
use rmcp::model::{CallToolRequestParams, ClientJsonRpcMessage, RequestId, ServerJsonRpcMessage};
use rmcp::service::Peer;
use rmcp::transport::Transport;
use rmcp::{RoleServer, ServerHandler, ServiceExt};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Writes a server notification to the CLI (server name, JSON-RPC
/// message) at once: it must not wait, since it runs in the task that
/// orders the server's messages.
pub type Outbound = Arc<dyn Fn(&str, Value) + Send + Sync>;

struct ChannelTransport {
    rx: mpsc::UnboundedReceiver<ClientJsonRpcMessage>,
    tx: mpsc::UnboundedSender<ServerJsonRpcMessage>,
    seq: Arc<Seq>,
}

/// How far the server's messages have got: `sent` by the loop, `done` by
/// the task that forwards them (notifications written to the CLI). A
/// direct call's reply waits until what the loop sent before it is done,
/// so that its progress and log notifications reach the CLI before its
/// result, as they do through the loop.
#[derive(Default)]
struct Seq {
    sent: AtomicU64,
    done: AtomicU64,
    moved: tokio::sync::Notify,
}

impl Seq {
    /// Wait until every message sent so far is done (at once, usually).
    async fn caught_up(&self) {
        let target = self.sent.load(Ordering::Acquire);
        loop {
            let moved = self.moved.notified();
            tokio::pin!(moved);
            moved.as_mut().enable();
            if self.done.load(Ordering::Acquire) >= target {
                return;
            }
            moved.await;
        }
    }

    fn advance(&self, to: u64) {
        self.done.store(to, Ordering::Release);
        self.moved.notify_waiters();
    }
}

impl Transport<RoleServer> for ChannelTransport {
    type Error = mpsc::error::SendError<ServerJsonRpcMessage>;
    fn send(
        &mut self,
        item: ServerJsonRpcMessage,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let r = self.tx.send(item);
        if r.is_ok() {
            self.seq.sent.fetch_add(1, Ordering::AcqRel);
        }
        async move { r }
    }
    async fn receive(&mut self) -> Option<ClientJsonRpcMessage> {
        self.rx.recv().await
    }
    async fn close(&mut self) -> Result<(), Self::Error> {
        self.rx.close();
        Ok(())
    }
}

/// Who waits for the reply to one request id. `turn` tells this request
/// from a later one the CLI sends under the same id: only its own waiter
/// removes an entry.
struct Waiter {
    turn: u64,
    /// The request's JSON-RPC id, for an error reply the server does not make.
    id: Value,
    /// A direct call, which the loop never saw: a response from the loop
    /// under its id (to an earlier request with the same id) is not its.
    direct: bool,
    tx: oneshot::Sender<Value>,
}

type Pending = Arc<Mutex<HashMap<String, Waiter>>>;

/// One running server.
struct Conn<S> {
    link: Arc<Link>,
    /// The handler and the connection's peer, once `initialize` is
    /// answered: what a `tools/call` needs to skip the loop.
    served: OnceLock<(S, Peer<RoleServer>)>,
}

/// What a request needs of its connection, whatever the handler: where to
/// send, who waits for which id, how far the server's messages have got.
struct Link {
    to_server: mpsc::UnboundedSender<ClientJsonRpcMessage>,
    pending: Pending,
    seq: Arc<Seq>,
}

/// The end of a connection's forwarding task: the server is gone, so
/// nobody will answer what is still waiting, and no direct reply waits for
/// messages that will not come.
struct Ended {
    seq: Arc<Seq>,
    pending: Pending,
}

impl Drop for Ended {
    fn drop(&mut self) {
        self.seq.advance(u64::MAX);
        for (_, w) in lock(&self.pending).drain() {
            let _ =
                w.tx.send(rpc_error(Some(&w.id), -32603, "SDK MCP server closed"));
        }
    }
}

/// Numbers the waiters (see [`Waiter`]).
static TURNS: AtomicU64 = AtomicU64::new(0);

impl Link {
    /// Wait for the reply to `key`; `None` if a request with that id is in
    /// flight already (its reply could not be told from this one's).
    fn wait(&self, key: &str, id: &Value, direct: bool) -> Option<(u64, oneshot::Receiver<Value>)> {
        let mut pending = lock(&self.pending);
        if pending.contains_key(key) {
            return None;
        }
        let turn = TURNS.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let id = id.clone();
        pending.insert(
            key.to_string(),
            Waiter {
                turn,
                id,
                direct,
                tx,
            },
        );
        Some((turn, rx))
    }

    /// Forget the waiter for `key` if it is still the one of `turn`.
    fn forget(&self, key: &str, turn: u64) {
        let mut pending = lock(&self.pending);
        if pending.get(key).is_some_and(|w| w.turn == turn) {
            pending.remove(key);
        }
    }

    /// Tell the server a request is cancelled.
    fn cancel(&self, note: ClientJsonRpcMessage) {
        let _ = self.to_server.send(note);
    }
}

/// Makes a fresh handler (for the first connect and every re-initialize).
pub type Factory<S> = Arc<dyn Fn() -> S + Send + Sync>;

/// The bridge for one SDK server name.
pub struct Bridge<S> {
    name: Arc<str>,
    factory: Factory<S>,
    outbound: Outbound,
    conn: Mutex<Option<Arc<Conn<S>>>>,
    /// How many `notifications/tools/list_changed` its servers have sent.
    list_changes: Arc<AtomicU64>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn id_key(id: &Value) -> String {
    id.to_string()
}

fn rpc_error(id: Option<&Value>, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id.cloned().unwrap_or(Value::Null),
           "error": {"code": code, "message": message}})
}

impl<S: ServerHandler + Clone + Send + Sync + 'static> Bridge<S> {
    pub fn new(name: &str, factory: Factory<S>, outbound: Outbound) -> Self {
        Bridge {
            name: Arc::from(name),
            factory,
            outbound,
            conn: Mutex::new(None),
            list_changes: Arc::default(),
        }
    }

    /// How many times its servers have announced that their tools changed
    /// (a listing taken before the count moved is out of date).
    pub fn tool_list_changes(&self) -> u64 {
        self.list_changes.load(Ordering::Acquire)
    }

    /// Start a server; the old one (if any) ends when its channel drops.
    fn start(&self) -> Arc<Conn<S>> {
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<ServerJsonRpcMessage>();
        let pending: Pending = Arc::default();
        let seq = Arc::new(Seq::default());
        let conn = Arc::new(Conn {
            link: Arc::new(Link {
                to_server: in_tx.clone(),
                pending: pending.clone(),
                seq: seq.clone(),
            }),
            served: OnceLock::new(),
        });
        // Weak: the server's input ends when the connection's last user
        // drops it (a re-`initialize` replaced it), which ends its loop and
        // then this task; a strong sender here would keep both forever.
        let in_tx = in_tx.downgrade();
        let handler = (self.factory)();
        let name = self.name.clone();
        // Weak: the connection ends when its last user drops it, not when
        // its own server task does.
        let served = Arc::downgrade(&conn);
        tokio::spawn(async move {
            let direct = handler.clone();
            match handler
                .serve(ChannelTransport {
                    rx: in_rx,
                    tx: out_tx,
                    seq: seq.clone(),
                })
                .await
            {
                Ok(running) => {
                    if let Some(conn) = served.upgrade() {
                        let _ = conn.served.set((direct, running.peer().clone()));
                    }
                    let _ = running.waiting().await;
                }
                Err(e) => tracing::warn!("SDK MCP server `{name}` failed to start: {e}"),
            }
        });
        let (name, outbound) = (self.name.clone(), self.outbound.clone());
        let list_changes = self.list_changes.clone();
        let seq = conn.link.seq.clone();
        tokio::spawn(async move {
            // However this task ends (a panic too), nothing is left waiting.
            let _end = Ended {
                seq: seq.clone(),
                pending: pending.clone(),
            };
            let mut done = 0;
            while let Some(msg) = out_rx.recv().await {
                done += 1;
                let Ok(v) = serde_json::to_value(&msg) else {
                    seq.advance(done);
                    continue;
                };
                match (v.get("method").is_some(), v.get("id")) {
                    // A response (or error) to one of the CLI's requests.
                    (false, Some(id)) => {
                        let key = id_key(id);
                        let mut pending = lock(&pending);
                        if pending.get(&key).is_some_and(|w| !w.direct)
                            && let Some(w) = pending.remove(&key)
                        {
                            let _ = w.tx.send(v);
                        }
                    }
                    // A request from the server to the client.
                    (true, Some(id)) => {
                        let answer = if v["method"] == "ping" {
                            json!({"jsonrpc": "2.0", "id": id, "result": {}})
                        } else {
                            rpc_error(
                                Some(id),
                                -32601,
                                "requests to the client are not supported for SDK servers",
                            )
                        };
                        if let Ok(m) = serde_json::from_value(answer)
                            && let Some(in_tx) = in_tx.upgrade()
                        {
                            let _ = in_tx.send(m);
                        }
                    }
                    // A notification: to the CLI, now.
                    (true, None) => {
                        if v["method"] == "notifications/tools/list_changed" {
                            list_changes.fetch_add(1, Ordering::AcqRel);
                        }
                        outbound(&name, v)
                    }
                    (false, None) => {}
                }
                seq.advance(done);
            }
        });
        conn
    }

    /// Make the MCP handshake the CLI's client would make (`initialize`
    /// with no client capabilities, `notifications/initialized`, and
    /// `tools/list` when the server has tools), here, in process, on a
    /// connection the CLI's messages then reach; return its results
    /// verbatim, as the CLI's `sdkMcpServerManifests` entry reads them:
    /// `{"initializeResult", "toolsListResult"}` (the listing left out if
    /// it is paginated or fails). `None` if the server did not initialize.
    ///
    /// A CLI that honours the entry answers its client's handshake from it,
    /// so a session's servers cost no control round trips before the first
    /// turn; one that does not (older, or its client asks another protocol
    /// version) sends its own `initialize`, which starts a new connection
    /// as always.
    pub async fn handshake(&self, protocol_version: &str) -> Option<Value> {
        let init = json!({"jsonrpc": "2.0", "id": "toolhost-handshake-0", "method": "initialize",
            "params": {"protocolVersion": protocol_version, "capabilities": {},
                       "clientInfo": {"name": "toolhost", "version": env!("CARGO_PKG_VERSION")}}});
        let initialize_result = self.submit(init).reply().await.get("result")?.clone();
        self.submit(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .reply()
            .await;
        let mut manifest = json!({ "initializeResult": initialize_result });
        if manifest["initializeResult"]
            .pointer("/capabilities/tools")
            .is_some()
        {
            let list =
                json!({"jsonrpc": "2.0", "id": "toolhost-handshake-1", "method": "tools/list"});
            if let Some(result) = self.submit(list).reply().await.get("result")
                && result.get("nextCursor").is_none_or(Value::is_null)
            {
                manifest["toolsListResult"] = result.clone();
            }
        }
        Some(manifest)
    }

    /// Deliver one JSON-RPC message from the CLI to the server now, in the
    /// order the CLI sent it (an `initialize` starts a new connection that the
    /// messages after it must reach, not the old one), and return what
    /// waits for its reply. A request whose id is already in flight on the
    /// connection is refused: its reply could not be told from the other's.
    pub fn submit(&self, message: Value) -> Submitted {
        let id = message.get("id").filter(|i| !i.is_null()).cloned();
        let is_request = message.get("method").is_some() && id.is_some();
        if let Some(id) = &id
            && message.get("method").and_then(Value::as_str) == Some("tools/call")
            && let Some(direct) = self.direct(&message, id)
        {
            return direct;
        }
        let parsed: ClientJsonRpcMessage = match serde_json::from_value(message.clone()) {
            Ok(m) => m,
            Err(e) => {
                let method = message.get("method").and_then(Value::as_str).unwrap_or("");
                return Submitted::Done(match id {
                    Some(_) => rpc_error(
                        id.as_ref(),
                        -32602,
                        &format!("invalid message for `{method}`: {e}"),
                    ),
                    None => json!({"jsonrpc": "2.0", "result": {}}),
                });
            }
        };
        let conn = {
            let mut c = lock(&self.conn);
            let fresh = message.get("method").and_then(Value::as_str) == Some("initialize");
            match (&*c, fresh) {
                (Some(conn), false) => conn.clone(),
                _ => {
                    let conn = self.start();
                    *c = Some(conn.clone());
                    conn
                }
            }
        };
        if !is_request {
            // A request the CLI cancels is stopped in the server, which then
            // sends no response (MCP); its control request is still answered,
            // here, so nothing waits for a reply that never comes.
            if message.get("method").and_then(Value::as_str) == Some("notifications/cancelled")
                && let Some(rid) = message.pointer("/params/requestId")
                && let Some(w) = lock(&conn.link.pending).remove(&id_key(rid))
            {
                let _ = w.tx.send(rpc_error(Some(rid), -32800, "request cancelled"));
            }
            let _ = conn.link.to_server.send(parsed);
            return Submitted::Done(json!({"jsonrpc": "2.0", "result": {}}));
        }
        let id = id.expect("request has an id");
        let key = id_key(&id);
        let conn = conn.link.clone();
        let Some((turn, rx)) = conn.wait(&key, &id, false) else {
            return Submitted::Done(in_flight(&id, &key));
        };
        if conn.to_server.send(parsed).is_err() {
            conn.forget(&key, turn);
            return Submitted::Done(rpc_error(Some(&id), -32603, "SDK MCP server closed"));
        }
        Submitted::Waiting(Waiting {
            conn,
            id,
            key,
            turn,
            rx: Some(rx),
        })
    }

    /// A `tools/call` for the handler at once, past the loop (see the
    /// module doc); `None` to take the loop's way: before the session is
    /// initialized, for a request naming its protocol version, or one the
    /// loop should refuse in its own words (params that do not parse).
    fn direct(&self, message: &Value, id: &Value) -> Option<Submitted> {
        let conn = lock(&self.conn).clone()?;
        let (server, peer) = conn.served.get()?;
        let params = CallToolRequestParams::deserialize(message.get("params")?).ok()?;
        let rid = RequestId::deserialize(id).ok()?;
        // The request's token: cancelled when its reply is no longer
        // awaited (the CLI cancelled it either way), which stops the call.
        let stop = CancellationToken::new();
        let call = call_past_loop(server.clone(), peer.clone(), rid, params, stop.clone())?;
        let key = id_key(id);
        let Some((turn, rx)) = conn.link.wait(&key, id, true) else {
            return Some(Submitted::Done(in_flight(id, &key)));
        };
        let seq = conn.link.seq.clone();
        let reply_id = id.clone();
        let call = async move {
            let message = call.await;
            // The call's notifications went to the loop before it returned.
            seq.caught_up().await;
            serde_json::to_value(&message).unwrap_or_else(|e| {
                rpc_error(
                    Some(&reply_id),
                    -32603,
                    &format!("the response did not serialize: {e}"),
                )
            })
        }
        .boxed();
        Some(Submitted::Direct(Direct {
            call: Finishing::new(call, stop),
            conn: conn.link.clone(),
            id: id.clone(),
            key,
            turn,
            rx,
        }))
    }
}

fn in_flight(id: &Value, key: &str) -> Value {
    rpc_error(
        Some(id),
        -32600,
        &format!("request id {key} is already in flight"),
    )
}

/// A message [`Bridge::submit`] delivered; its `mcp_response` (for a
/// notification or a response, an empty result) comes from
/// [`Submitted::reply`].
pub enum Submitted {
    /// Answered already (a notification, or a message refused).
    Done(Value),
    /// A request in the server.
    Waiting(Waiting),
    /// A `tools/call` that runs as its reply is awaited.
    Direct(Direct),
}

impl Submitted {
    /// The `mcp_response`. Dropping this future (or a `Submitted` never
    /// awaited) cancels the request in the server.
    pub async fn reply(self) -> Value {
        match self {
            Submitted::Done(v) => v,
            Submitted::Waiting(mut w) => {
                let rx = w.rx.take().expect("a reply is awaited once");
                let reply = rx.await;
                let id = w.id.clone();
                // Answered (or the server is gone): nothing to cancel.
                w.rx = None;
                w.key.clear();
                reply.unwrap_or_else(|_| rpc_error(Some(&id), -32603, "SDK MCP server closed"))
            }
            Submitted::Direct(mut d) => {
                let answered = tokio::select! {
                    // Cancelled (`notifications/cancelled`): that is the
                    // answer, and dropping `d` stops the call.
                    biased;
                    r = &mut d.rx => r.ok(),
                    v = &mut d.call => {
                        d.conn.forget(&d.key, d.turn);
                        Some(v)
                    }
                };
                answered.unwrap_or_else(|| rpc_error(Some(&d.id), -32603, "SDK MCP server closed"))
            }
        }
    }
}

/// A `tools/call` run by the task awaiting its reply. Dropped unanswered
/// (the CLI cancelled it, by `notifications/cancelled` or by cancelling
/// the control request), its call is stopped and recorded as `cancelled`,
/// as a call the loop ran is (see [`Finishing`]).
pub struct Direct {
    /// First: dropped (cancelled, and left to finish) before the link.
    call: Finishing<Value>,
    conn: Arc<Link>,
    id: Value,
    key: String,
    turn: u64,
    rx: oneshot::Receiver<Value>,
}

impl Drop for Direct {
    fn drop(&mut self) {
        self.conn.forget(&self.key, self.turn);
    }
}

/// A request in the server, awaiting its reply.
pub struct Waiting {
    conn: Arc<Link>,
    id: Value,
    /// Its key in the connection's pending map; empty once answered.
    key: String,
    turn: u64,
    rx: Option<oneshot::Receiver<Value>>,
}

/// Cancels a request in the server when its caller stops waiting
/// (`control_cancel_request`): the running tool is stopped, not leaked.
impl Drop for Waiting {
    fn drop(&mut self) {
        if self.key.is_empty() {
            return;
        }
        self.conn.forget(&self.key, self.turn);
        let note = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                          "params": {"requestId": self.id, "reason": "cancelled by the CLI"}});
        if let Ok(m) = serde_json::from_value(note) {
            self.conn.cancel(m);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::model::{
        CallToolResponse, CallToolResult, ContentBlock, ProgressNotificationParam,
        ServerCapabilities, ServerConfig,
    };
    use rmcp::{ErrorData, ServerHandler};
    use std::time::Duration;

    /// A handler that reports progress (when asked) before it answers, and
    /// whose clones all hold `alive` (to see when a server is gone).
    #[derive(Clone)]
    struct Probe {
        /// Held, never read: its count is how many handles live.
        _alive: Arc<()>,
    }

    impl ServerHandler for Probe {
        fn get_info(&self) -> ServerConfig {
            ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
        }
        async fn call_tool(
            &self,
            _: CallToolRequestParams,
            ctx: rmcp::service::RequestContext<RoleServer>,
        ) -> Result<CallToolResponse, ErrorData> {
            if let Some(token) = ctx.meta.get_progress_token() {
                let _ = ctx
                    .peer
                    .notify_progress(ProgressNotificationParam::new(token, 1.0))
                    .await;
            }
            Ok(CallToolResult::success(vec![ContentBlock::text("done")]).into())
        }
    }

    type Seen = Arc<Mutex<Vec<String>>>;

    /// A bridge whose notifications take `slow` to write, recording what
    /// reached "the CLI" in order.
    fn bridge(alive: &Arc<()>, slow: Duration) -> (Bridge<Probe>, Seen) {
        let seen: Seen = Arc::default();
        let s = seen.clone();
        let outbound: Outbound = Arc::new(move |_: &str, v: Value| {
            std::thread::sleep(slow);
            lock(&s).push(v["method"].as_str().unwrap_or("?").to_string());
        });
        let alive = alive.clone();
        let factory: Factory<Probe> = Arc::new(move || Probe {
            _alive: alive.clone(),
        });
        (Bridge::new("probe", factory, outbound), seen)
    }

    async fn initialize(b: &Bridge<Probe>) {
        let r = b
            .submit(
                json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "t", "version": "0"}}}),
            )
            .reply()
            .await;
        assert!(r.get("result").is_some(), "{r}");
        b.submit(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .reply()
            .await;
    }

    /// A `tools/call` once the session is up: past the loop.
    async fn direct_call(b: &Bridge<Probe>, id: u64, meta: Value) -> Value {
        let msg = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                         "params": {"name": "x", "arguments": {}, "_meta": meta}});
        for _ in 0..200 {
            match b.submit(msg.clone()) {
                Submitted::Direct(d) => return Submitted::Direct(d).reply().await,
                // Not initialized yet as the bridge sees it: its reply is
                // still a reply; try again for the direct path.
                other => drop(other.reply().await),
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("tools/call never took the direct path");
    }

    /// The handshake made here is what the CLI's entry needs (the
    /// server's own results, verbatim), and it opens the connection the
    /// CLI's calls then reach, with no `initialize` of the CLI's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_handshake_made_here_opens_the_connection_the_cli_then_uses() {
        let alive = Arc::new(());
        let (b, _) = bridge(&alive, Duration::ZERO);
        let m = b
            .handshake("2025-11-25")
            .await
            .expect("the server initialized");
        assert_eq!(
            m["initializeResult"]["protocolVersion"], "2025-11-25",
            "{m}"
        );
        assert!(
            m["initializeResult"]["capabilities"]["tools"].is_object(),
            "{m}"
        );
        assert_eq!(m["toolsListResult"]["tools"], json!([]), "{m}");
        let r = direct_call(&b, 1, json!({})).await;
        assert_eq!(r["result"]["content"][0]["text"], "done", "{r}");
    }

    /// The reply of a direct call waits for the notifications the server
    /// sent before it, however slowly they are written.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_direct_reply_comes_after_the_calls_notifications() {
        let alive = Arc::new(());
        let (b, seen) = bridge(&alive, Duration::from_millis(50));
        initialize(&b).await;
        // Until the session is up as the bridge sees it, calls take the
        // loop (and report progress there too): be past that first.
        direct_call(&b, 9, json!({})).await;
        lock(&seen).clear();
        let r = direct_call(&b, 1, json!({"progressToken": "p"})).await;
        assert_eq!(r["result"]["content"][0]["text"], "done", "{r}");
        assert_eq!(r["id"], 1, "{r}");
        lock(&seen).push("reply".into());
        assert_eq!(*lock(&seen), ["notifications/progress", "reply"]);
    }

    /// A response the loop makes to an earlier request is never taken as a
    /// direct call's, though the CLI reused the id.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_loop_response_never_answers_a_direct_call_with_its_id() {
        let alive = Arc::new(());
        let (b, _) = bridge(&alive, Duration::ZERO);
        initialize(&b).await;
        // Direct call 7 in flight; a loop request with id 7 is refused.
        let conn = lock(&b.conn).clone().unwrap().link.clone();
        let key = id_key(&json!(7));
        let (turn, _rx) = conn.wait(&key, &json!(7), true).unwrap();
        let r = b
            .submit(json!({"jsonrpc": "2.0", "id": 7, "method": "tools/list"}))
            .reply()
            .await;
        assert_eq!(r["error"]["code"], -32600, "{r}");
        // The loop's response to a request with id 7 (sent past `submit`,
        // as an earlier request cancelled by the CLI would be answered)
        // leaves the direct call's waiter alone: wait until the loop has
        // sent it and the forwarding task has handled it.
        let sent = conn.seq.sent.load(Ordering::Acquire);
        conn.to_server
            .send(
                serde_json::from_value(json!({"jsonrpc": "2.0", "id": 7, "method": "tools/list"}))
                    .unwrap(),
            )
            .unwrap();
        let waited = std::time::Instant::now();
        while conn.seq.sent.load(Ordering::Acquire) == sent {
            assert!(
                waited.elapsed() < Duration::from_secs(10),
                "the loop never answered"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        conn.seq.caught_up().await;
        assert!(
            lock(&conn.pending)
                .get(&key)
                .is_some_and(|w| w.turn == turn)
        );
        conn.forget(&key, turn);
    }

    /// A re-`initialize` ends the server it replaces: nothing keeps it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replaced_server_ends() {
        let alive = Arc::new(());
        let (b, _) = bridge(&alive, Duration::ZERO);
        initialize(&b).await;
        direct_call(&b, 1, json!({})).await;
        let one = Arc::strong_count(&alive);
        for _ in 0..5 {
            initialize(&b).await;
            direct_call(&b, 2, json!({})).await;
        }
        let mut waited = 0;
        while Arc::strong_count(&alive) > one {
            waited += 1;
            assert!(
                waited < 200,
                "{} handles of replaced servers live on (one server holds {one})",
                Arc::strong_count(&alive) - one
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
