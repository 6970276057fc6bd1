//! `mcp_message` over an in-memory transport: one long-lived rmcp server
//! (the same `ServerHandler` every MCP front end uses) per SDK server name,
//! fed the CLI's JSON-RPC messages one by one. Responses are matched to
//! requests by JSON-RPC id; server notifications (`tools/list_changed`,
//! logging, progress) go back to the CLI; server-to-client requests are
//! answered here (ping) or refused, so nothing ever waits forever.

use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::Transport;
use rmcp::{RoleServer, ServerHandler, ServiceExt};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// A server notification for the CLI: (server name, JSON-RPC message).
pub type Outbound = mpsc::UnboundedSender<(Arc<str>, Value)>;

struct ChannelTransport {
    rx: mpsc::UnboundedReceiver<ClientJsonRpcMessage>,
    tx: mpsc::UnboundedSender<ServerJsonRpcMessage>,
}

impl Transport<RoleServer> for ChannelTransport {
    type Error = mpsc::error::SendError<ServerJsonRpcMessage>;
    fn send(
        &mut self,
        item: ServerJsonRpcMessage,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let r = self.tx.send(item);
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

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Value>>>>;

/// One running server: where to send, and who waits for which id.
struct Conn {
    to_server: mpsc::UnboundedSender<ClientJsonRpcMessage>,
    pending: Pending,
}

/// Makes a fresh handler (for the first connect and every re-initialize).
pub type Factory<S> = Arc<dyn Fn() -> S + Send + Sync>;

/// The bridge for one SDK server name.
pub struct Bridge<S> {
    name: Arc<str>,
    factory: Factory<S>,
    outbound: Outbound,
    conn: Mutex<Option<Arc<Conn>>>,
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

impl<S: ServerHandler + Send + 'static> Bridge<S> {
    pub fn new(name: &str, factory: Factory<S>, outbound: Outbound) -> Self {
        Bridge {
            name: Arc::from(name),
            factory,
            outbound,
            conn: Mutex::new(None),
        }
    }

    /// Start a server; the old one (if any) ends when its channel drops.
    fn start(&self) -> Arc<Conn> {
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<ServerJsonRpcMessage>();
        let pending: Pending = Arc::default();
        let conn = Arc::new(Conn {
            to_server: in_tx.clone(),
            pending: pending.clone(),
        });
        let handler = (self.factory)();
        let name = self.name.clone();
        tokio::spawn(async move {
            match handler
                .serve(ChannelTransport {
                    rx: in_rx,
                    tx: out_tx,
                })
                .await
            {
                Ok(running) => {
                    let _ = running.waiting().await;
                }
                Err(e) => tracing::warn!("SDK MCP server `{name}` failed to start: {e}"),
            }
        });
        let (name, outbound) = (self.name.clone(), self.outbound.clone());
        tokio::spawn(async move {
            while let Some(msg) = out_rx.recv().await {
                let Ok(v) = serde_json::to_value(&msg) else {
                    continue;
                };
                match (v.get("method").is_some(), v.get("id")) {
                    // A response (or error) to one of the CLI's requests.
                    (false, Some(id)) => {
                        if let Some(tx) = lock(&pending).remove(&id_key(id)) {
                            let _ = tx.send(v);
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
                        if let Ok(m) = serde_json::from_value(answer) {
                            let _ = in_tx.send(m);
                        }
                    }
                    // A notification: forward to the CLI.
                    (true, None) => {
                        let _ = outbound.send((name.clone(), v));
                    }
                    (false, None) => {}
                }
            }
            // The server is gone: nobody will answer what is still waiting.
            for (_, tx) in lock(&pending).drain() {
                let _ = tx.send(rpc_error(None, -32603, "SDK MCP server closed"));
            }
        });
        conn
    }

    /// Deliver one JSON-RPC message from the CLI to the server now, in the
    /// order the CLI sent it (an `initialize` starts a new connection that the
    /// messages after it must reach, not the old one), and return what
    /// waits for its reply. A request whose id is already in flight on the
    /// connection is refused: its reply could not be told from the other's.
    pub fn submit(&self, message: Value) -> Submitted {
        let id = message.get("id").filter(|i| !i.is_null()).cloned();
        let is_request = message.get("method").is_some() && id.is_some();
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
                && let Some(tx) = lock(&conn.pending).remove(&id_key(rid))
            {
                let _ = tx.send(rpc_error(Some(rid), -32800, "request cancelled"));
            }
            let _ = conn.to_server.send(parsed);
            return Submitted::Done(json!({"jsonrpc": "2.0", "result": {}}));
        }
        let id = id.expect("request has an id");
        let key = id_key(&id);
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = lock(&conn.pending);
            if pending.contains_key(&key) {
                return Submitted::Done(rpc_error(
                    Some(&id),
                    -32600,
                    &format!("request id {key} is already in flight"),
                ));
            }
            pending.insert(key.clone(), tx);
        }
        if conn.to_server.send(parsed).is_err() {
            lock(&conn.pending).remove(&key);
            return Submitted::Done(rpc_error(Some(&id), -32603, "SDK MCP server closed"));
        }
        Submitted::Waiting(Waiting {
            conn,
            id,
            key,
            rx: Some(rx),
        })
    }
}

/// A message [`Bridge::submit`] delivered; its `mcp_response` (for a
/// notification or a response, an empty result) comes from
/// [`Submitted::reply`].
pub enum Submitted {
    /// Answered already (a notification, or a message refused).
    Done(Value),
    /// A request in the server.
    Waiting(Waiting),
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
        }
    }
}

/// A request in the server, awaiting its reply.
pub struct Waiting {
    conn: Arc<Conn>,
    id: Value,
    /// Its key in the connection's pending map; empty once answered.
    key: String,
    rx: Option<oneshot::Receiver<Value>>,
}

/// Cancels a request in the server when its caller stops waiting
/// (`control_cancel_request`): the running tool is stopped, not leaked.
impl Drop for Waiting {
    fn drop(&mut self) {
        if self.key.is_empty() {
            return;
        }
        lock(&self.conn.pending).remove(&self.key);
        let note = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                          "params": {"requestId": self.id, "reason": "cancelled by the CLI"}});
        if let Ok(m) = serde_json::from_value(note) {
            let _ = self.conn.to_server.send(m);
        }
    }
}
