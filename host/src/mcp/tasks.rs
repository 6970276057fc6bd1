//! Tasks (MCP tasks extension, SEP-2663): a tool call whose caller got a
//! task handle instead of the result, and polls for it (`tasks/get`),
//! answers the call's questions (`tasks/update`) or stops it
//! (`tasks/cancel`).
//!
//! A call of a task-supporting tool, from a caller that declared the
//! extension, starts in its request like any call. It becomes a task when
//! the tool asks to (`run-as-task`) or once it has run for `[tasks] after`;
//! from then on the request is answered with the task's handle, the call
//! goes on in the background (its events are no longer forwarded, its
//! questions wait in the task for `tasks/update`), and its end is kept in
//! the task for `[tasks] keep` after the task was created. The call itself
//! is any call: a fresh sandbox, its tool's limits (timeout included), and
//! stopped at once on `tasks/cancel` or server shutdown, not when the
//! caller disconnects.
//!
//! Owns: one server's (one tenant's) store of tasks, with its bounds
//! (`[tasks] max`, running and kept ones together, past which a call
//! answers in its request; `[tasks] max-bytes` of kept results, made room
//! in by forgetting results already returned, oldest first), the
//! [`Switch`] a call's client goes through, which
//! hands the call from its request to its task exactly once, and the wire
//! shapes of task states. Must not touch: how the call runs (the core runs
//! it) or who may call what (decided before the call starts).
//!
//! Why not rmcp's `TaskManager`: it bounds neither the number of tasks nor
//! the results it keeps, aborts a running operation's future at its TTL
//! (leaving the guest to its deadline), and starts the operation itself,
//! where here a call that is already running becomes a task.

use super::input::Stateless;
use crate::config::TasksConfig;
use crate::model::{ClientError, ClientRequest, ClientRequests};
use crate::mrtr::Capabilities;
use rmcp::model::{DetailedTask, JsonObject};
use rmcp::model::{ErrorData, GetTaskResult, InputRequest, Task, TaskPayload, TaskStatus};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// The polling interval suggested to clients.
const POLL_INTERVAL_MS: u64 = 500;

/// One server's tasks. Task ids are random (122 bits): a task is reached
/// only by the caller that was given its id, and only through the server
/// (the tenant) that created it; any other id is "unknown".
pub(super) struct Tasks {
    config: TasksConfig,
    inner: Mutex<HashMap<String, Entry>>,
}

struct Entry {
    task: Task,
    created: Instant,
    /// When the call ended.
    ended: Option<Instant>,
    state: State,
    /// Stops the call (`tasks/cancel`).
    cancel: CancellationToken,
    /// The component whose sandbox the call holds (`Core::tool_component`).
    component: usize,
}

enum State {
    /// The call runs; these questions wait for `tasks/update`.
    Running {
        questions: BTreeMap<String, Question>,
    },
    /// The call ended: `completed`, `failed` or `cancelled` (shared, so a
    /// `tasks/get` copies a large result outside the store's lock).
    Done {
        payload: Arc<TaskPayload>,
        /// Its size as sent (JSON).
        bytes: u64,
        /// The host memory it holds, as parsed (see [`weight`]): counted
        /// against `[tasks] max-bytes`.
        weight: u64,
        /// A `tasks/get` has returned it.
        sent: bool,
    },
}

struct Question {
    /// The MCP method asked (its answer's shape is checked).
    method: String,
    request: InputRequest,
    /// Its size as sent: charged to the tenant's output on every
    /// `tasks/get` that carries it.
    bytes: u64,
    answer: oneshot::Sender<Value>,
}

fn unknown(id: &str) -> ErrorData {
    // The id is the client's text: escaped and bounded (it reaches the log).
    ErrorData::invalid_params(
        format!("unknown task `{}`", crate::error::shown_name(id)),
        None,
    )
}

impl Tasks {
    pub(super) fn new(config: TasksConfig) -> Arc<Tasks> {
        Arc::new(Tasks {
            config,
            inner: Mutex::new(HashMap::new()),
        })
    }

    /// Whether this server makes tasks at all (`[tasks] max` > 0).
    pub(super) fn enabled(&self) -> bool {
        self.config.max > 0
    }

    /// How long a call of a task-supporting tool runs in its request before
    /// it becomes a task by itself.
    pub(super) fn after(&self) -> std::time::Duration {
        self.config.after
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drop the ended tasks whose time is up: `keep` after creation (the
    /// `ttlMs` clients are told), and never sooner than `keep` after the
    /// end, so a task that ran longer than `keep` can still be read. A
    /// running task stays until it ends (its tool's timeout bounds that).
    fn sweep(&self, tasks: &mut HashMap<String, Entry>) {
        let keep = self.config.keep;
        tasks.retain(|_, e| {
            e.ended
                .is_none_or(|t| e.created.elapsed() < keep || t.elapsed() < keep)
        });
    }

    /// A new running task for a call of `component` (which runs at most
    /// `concurrency` calls at once), stopped by `cancel`. `None` when the
    /// server holds as many tasks as it may, or when half the component's
    /// calls already run as tasks (tasks waiting for answers hold their
    /// sandboxes; the other half stays for requests): the call then
    /// answers in its request.
    fn create(
        &self,
        cancel: CancellationToken,
        (component, concurrency): (usize, u32),
    ) -> Option<Task> {
        let mut tasks = self.lock();
        self.sweep(&mut tasks);
        if tasks.len() >= self.config.max as usize {
            return None;
        }
        let running = tasks
            .values()
            .filter(|e| e.component == component && e.ended.is_none())
            .count();
        if running >= (concurrency as usize / 2).max(1) {
            return None;
        }
        let id = uuid::Uuid::new_v4().to_string();
        let now = rmcp::task_manager::current_timestamp();
        let task = Task::new(id.clone(), TaskStatus::Working, now.clone(), now)
            .with_ttl_ms(self.config.keep.as_millis() as u64)
            .with_poll_interval_ms(POLL_INTERVAL_MS);
        tasks.insert(
            id,
            Entry {
                task: task.clone(),
                created: Instant::now(),
                ended: None,
                state: State::Running {
                    questions: BTreeMap::new(),
                },
                cancel,
                component,
            },
        );
        Some(task)
    }

    #[cfg(test)]
    /// `tasks/get`; with the bytes the tenant's output quota pays for this
    /// copy (see [`Got::again`]).
    pub(super) fn get(&self, id: &str) -> Result<(GetTaskResult, Option<u64>), ErrorData> {
        let got = self.peek(id)?;
        let again = got.again;
        Ok((got.result(), again))
    }

    /// What `tasks/get` of `id` answers, not copied yet: a caller that
    /// must pay for a copy first (`again`) does, before the copy is made.
    pub(super) fn peek(&self, id: &str) -> Result<Got, ErrorData> {
        let mut again = None;
        let (task, payload) = {
            let mut tasks = self.lock();
            self.sweep(&mut tasks);
            let e = tasks.get_mut(id).ok_or_else(|| unknown(id))?;
            let payload = match &mut e.state {
                State::Running { questions } if questions.is_empty() => {
                    Arc::new(TaskPayload::Working)
                }
                State::Running { questions } => {
                    // Sent on every poll, so charged on every poll, as a
                    // kept result's copies are (found by review: a tool
                    // quoting its arguments in a question made the host
                    // send them again and again for free).
                    again = Some(questions.values().map(|q| q.bytes).sum());
                    Arc::new(TaskPayload::InputRequired {
                        input_requests: questions
                            .iter()
                            .map(|(k, q)| (k.clone(), q.request.clone()))
                            .collect(),
                    })
                }
                State::Done {
                    payload,
                    bytes,
                    sent,
                    ..
                } => {
                    if std::mem::replace(sent, true) {
                        again = Some(*bytes);
                    }
                    payload.clone()
                }
            };
            (e.task.clone(), payload)
        };
        Ok(Got {
            task,
            payload,
            again,
        })
    }

    /// `tasks/update`: answer the waiting questions named in `answers`;
    /// other keys (unknown, or already answered) are ignored, as the
    /// extension says. An answer without the shape of its question's
    /// result is the client's error (-32602), and then no answer of the
    /// update is taken: every question keeps waiting.
    pub(super) fn update(
        &self,
        id: &str,
        answers: BTreeMap<String, Value>,
    ) -> Result<(), ErrorData> {
        let mut tasks = self.lock();
        self.sweep(&mut tasks);
        let e = tasks.get_mut(id).ok_or_else(|| unknown(id))?;
        if let State::Running { questions } = &mut e.state {
            for (key, answer) in &answers {
                if let Some(q) = questions.get(key)
                    && let Err(reason) = crate::mrtr::valid_answer(&q.method, answer)
                {
                    return Err(ErrorData::invalid_params(
                        format!(
                            "the answer to `{key}` (`{}`) is malformed: {reason}",
                            q.method
                        ),
                        None,
                    ));
                }
            }
            let mut answered = false;
            for (key, answer) in answers {
                if let Some(q) = questions.remove(&key) {
                    // The call may have ended meanwhile: nothing to tell.
                    let _ = q.answer.send(answer);
                    answered = true;
                }
            }
            if answered {
                e.task.last_updated_at = rmcp::task_manager::current_timestamp();
            }
        }
        Ok(())
    }

    /// `tasks/cancel`: stop the call (the guest is stopped within an epoch
    /// tick, plus a grace in its first slice; the task ends `cancelled`).
    /// Ended tasks stay as they are.
    pub(super) fn cancel(&self, id: &str) -> Result<(), ErrorData> {
        let mut tasks = self.lock();
        self.sweep(&mut tasks);
        let e = tasks.get_mut(id).ok_or_else(|| unknown(id))?;
        if let State::Running { questions } = &mut e.state {
            // Waiting questions fail at once: the guest need not wait.
            questions.clear();
            e.cancel.cancel();
        }
        Ok(())
    }

    /// Stop every running task: the server is shutting down, and no client
    /// could read what they would return.
    pub(super) fn cancel_all(&self) {
        for e in self.lock().values_mut() {
            if let State::Running { questions } = &mut e.state {
                questions.clear();
                e.cancel.cancel();
            }
        }
    }

    /// Forget task `id`: its handle never reached a client.
    fn forget(&self, id: &str) {
        if let Some(e) = self.lock().remove(id) {
            e.cancel.cancel();
        }
    }

    /// The call of task `id` asks its client `request` (an MCP `method`)
    /// under `key`: it waits in the task until `tasks/update` answers it.
    fn ask(
        &self,
        id: &str,
        key: String,
        method: String,
        request: InputRequest,
        bytes: u64,
    ) -> Result<oneshot::Receiver<Value>, ClientError> {
        let mut tasks = self.lock();
        let Some(Entry {
            state: State::Running { questions },
            task,
            ..
        }) = tasks.get_mut(id)
        else {
            return Err(ClientError::Failed("the task has ended".into()));
        };
        let (tx, rx) = oneshot::channel();
        questions.insert(
            key,
            Question {
                method,
                request,
                bytes,
                answer: tx,
            },
        );
        task.last_updated_at = rmcp::task_manager::current_timestamp();
        Ok(rx)
    }

    /// The call of task `id` ended with `payload`. Kept within `[tasks]
    /// max-bytes` of all of this server's ended tasks: results already
    /// returned once are forgotten to make room, oldest first, and one
    /// that still does not fit is not kept (its task ends failed, saying
    /// so). Found by review: each tenant kept up to `max` results of up to
    /// `max-output` each (4 GiB at the default caps, many times that as
    /// parsed trees), outside every memory bound, for as long as it did
    /// not poll again.
    fn finish(&self, id: &str, payload: TaskPayload) {
        // Weighed once, here, outside any caller's path and the lock.
        let (bytes, weight) = weigh(&payload);
        let mut tasks = self.lock();
        self.sweep(&mut tasks);
        let Some(e) = tasks.get(id) else { return };
        // A cancelled call ends cancelled, whatever it said on its way out.
        let (payload, bytes, weight) = if e.cancel.is_cancelled() {
            (TaskPayload::Cancelled, 0, 0)
        } else if !make_room(&mut tasks, weight, self.config.max_bytes) {
            let message = format!(
                "the task's result ({weight} bytes as held) is more than this server keeps for the results of its tasks together (`[tasks] max-bytes`, {} bytes); call the tool without a task, or ask the operator to raise it",
                self.config.max_bytes
            );
            let p = failed(ErrorData::internal_error(message, None));
            let (b, w) = weigh(&p);
            (p, b, w)
        } else {
            (payload, bytes, weight)
        };
        let Some(e) = tasks.get_mut(id) else { return };
        e.task.status = payload.status();
        e.task.last_updated_at = rmcp::task_manager::current_timestamp();
        e.state = State::Done {
            payload: Arc::new(payload),
            bytes,
            weight,
            sent: false,
        };
        e.ended = Some(Instant::now());
    }
}

/// A task's state as `tasks/get` returns it, before the copy.
pub(super) struct Got {
    task: Task,
    payload: Arc<TaskPayload>,
    /// What this answer costs the tenant's output quota: the ended call's
    /// result when it was returned before (the call paid for the first
    /// copy), or the questions a running call waits on (every copy).
    pub(super) again: Option<u64>,
}

impl Got {
    /// The answer (a copy of a kept result).
    pub(super) fn result(self) -> GetTaskResult {
        GetTaskResult::new(DetailedTask::new(
            self.task,
            Arc::unwrap_or_clone(self.payload),
        ))
    }
}

/// What a call's request waits for: its result, or the news that it
/// became a task.
pub(super) type Outcome = Result<crate::model::ToolOutput, crate::error::CallError>;

/// A call's client while it may still become a task. Until then, questions
/// go to the request's own client (the session's peer, or the stateless
/// round's replay) and the call's end goes to the request; after, both go
/// to the task. The hand-over happens once, under one lock, so no question
/// and no result can go to the wrong side.
pub(super) struct Switch {
    request_client: Arc<dyn ClientRequests>,
    round: Option<Arc<Stateless>>,
    /// What the caller can answer (its declared capabilities).
    capabilities: Capabilities,
    tasks: Arc<Tasks>,
    /// The component serving the call, and how many calls it runs at once.
    component: (usize, u32),
    cancel: CancellationToken,
    phase: Mutex<Phase>,
    /// Fired when the call becomes a task.
    became_task: CancellationToken,
}

enum Phase {
    Request {
        done: Option<oneshot::Sender<Outcome>>,
    },
    Task {
        id: String,
        seed: Task,
    },
}

/// Where a call that may become a task comes from and goes to.
pub(super) struct SwitchParts {
    /// The request's own client (the session's peer, or the round's replay).
    pub(super) request_client: Arc<dyn ClientRequests>,
    /// The stateless round, on 2026-07-28.
    pub(super) round: Option<Arc<Stateless>>,
    /// What the caller declared it can answer.
    pub(super) capabilities: Capabilities,
    /// The component serving the tool and its concurrency.
    pub(super) component: (usize, u32),
}

impl Switch {
    /// The switch of a call whose request waits on the returned receiver;
    /// `cancel` stops the call.
    pub(super) fn new(
        parts: SwitchParts,
        tasks: Arc<Tasks>,
        cancel: CancellationToken,
    ) -> (Arc<Switch>, oneshot::Receiver<Outcome>) {
        let (tx, rx) = oneshot::channel();
        let switch = Arc::new(Switch {
            request_client: parts.request_client,
            round: parts.round,
            capabilities: parts.capabilities,
            tasks,
            component: parts.component,
            cancel,
            phase: Mutex::new(Phase::Request { done: Some(tx) }),
            became_task: CancellationToken::new(),
        });
        (switch, rx)
    }

    fn phase(&self) -> MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Resolves once the call is a task.
    pub(super) async fn became_task(&self) {
        self.became_task.cancelled().await
    }

    /// The task's first state, once the call is one.
    pub(super) fn seed(&self) -> Option<Task> {
        match &*self.phase() {
            Phase::Task { seed, .. } => Some(seed.clone()),
            Phase::Request { .. } => None,
        }
    }

    /// Make the call a task, unless it is ending its stateless round with
    /// questions (those go back in the request's input-required result),
    /// has ended or been cancelled, or the server (or the tool's
    /// component) holds all the tasks it may.
    ///
    /// The phase's lock is held while the round is consulted, and
    /// `request` holds it while a question reaches the round (which
    /// records it at once): no question can go to both sides.
    pub(super) fn to_task(&self) -> bool {
        let mut phase = self.phase();
        match &*phase {
            Phase::Task { .. } => true,
            Phase::Request { done: None } => false,
            Phase::Request { .. } => {
                if self.cancel.is_cancelled() || self.round.as_ref().is_some_and(|r| r.waiting()) {
                    return false;
                }
                let Some(seed) = self.tasks.create(self.cancel.clone(), self.component) else {
                    return false;
                };
                *phase = Phase::Task {
                    id: seed.task_id.clone(),
                    seed,
                };
                self.became_task.cancel();
                true
            }
        }
    }

    /// The request went away before its client got the call's result or
    /// its task's handle: stop the call, and forget the task if it had
    /// become one (no client knows its id).
    pub(super) fn abandon(&self) {
        self.cancel.cancel();
        if let Phase::Task { id, .. } = &*self.phase() {
            self.tasks.forget(id);
        }
    }

    /// The call ended: tell its request, or keep its end in its task.
    pub(super) fn finish(&self, outcome: Outcome) {
        let mut phase = self.phase();
        match &mut *phase {
            Phase::Request { done } => {
                if let Some(done) = done.take() {
                    let _ = done.send(outcome);
                }
            }
            Phase::Task { id, .. } => {
                let payload = self.payload(outcome);
                self.tasks.finish(id, payload);
            }
        }
    }

    /// How a call that ran as a task ended, as the task reports it. The
    /// tool's own failures and the limits it hit are results the model
    /// reads (`completed` with `isError`); a crashed guest or a host
    /// failure is a protocol error (`failed`).
    fn payload(&self, outcome: Outcome) -> TaskPayload {
        use super::input::Round;
        use crate::error::CallErrorKind;
        let outcome = match &self.round {
            None => outcome,
            Some(round) => match round.finish(outcome) {
                Ok(Round::Complete(r)) => r,
                Ok(Round::ToolError(message)) => {
                    return completed(super::server::tool_error(message));
                }
                Ok(Round::InputRequired(_)) => {
                    return failed(ErrorData::internal_error(
                        "the tool asked its client outside its task",
                        None,
                    ));
                }
                Err(e) => return failed(e),
            },
        };
        match outcome {
            Ok(out) => completed(super::server::call_result(out)),
            Err(e) => match e.kind() {
                CallErrorKind::Cancelled => TaskPayload::Cancelled,
                CallErrorKind::Trap { .. } | CallErrorKind::Internal { .. } => {
                    failed(ErrorData::internal_error(e.to_string(), None))
                }
                _ => match super::server::call_error(e) {
                    Ok(r) => completed(r),
                    Err(e) => failed(e),
                },
            },
        }
    }
}

/// A payload's size as sent (JSON) and as held (parsed: its JSON, and
/// what each value in it takes, as a request body is weighed:
/// `weight::parsed_weight`).
fn weigh(payload: &TaskPayload) -> (u64, u64) {
    match payload {
        TaskPayload::Completed { result: o } | TaskPayload::Failed { error: o } => {
            let json = serde_json::to_vec(o).unwrap_or_default();
            let bytes = json.len() as u64;
            (bytes, bytes + crate::weight::parsed_weight(&json) as u64)
        }
        _ => (0, 0),
    }
}

/// Room for `weight` more bytes of results among `tasks`, within `max`:
/// results already returned once are forgotten, oldest ended first.
/// Whether it fits.
fn make_room(tasks: &mut HashMap<String, Entry>, weight: u64, max: u64) -> bool {
    let held = |tasks: &HashMap<String, Entry>| -> u64 {
        tasks
            .values()
            .map(|e| match e.state {
                State::Done { weight, .. } => weight,
                State::Running { .. } => 0,
            })
            .sum()
    };
    if weight > max {
        return false;
    }
    while held(tasks) + weight > max {
        let oldest_sent = tasks
            .iter()
            .filter(|(_, e)| matches!(e.state, State::Done { sent: true, .. }))
            .min_by_key(|(_, e)| e.ended)
            .map(|(id, _)| id.clone());
        match oldest_sent {
            Some(id) => {
                tasks.remove(&id);
            }
            None => return false,
        }
    }
    true
}

fn completed(r: rmcp::model::CallToolResult) -> TaskPayload {
    TaskPayload::Completed {
        result: to_object(&r),
    }
}

fn failed(e: ErrorData) -> TaskPayload {
    TaskPayload::Failed {
        error: to_object(&e),
    }
}

fn to_object(v: &impl serde::Serialize) -> JsonObject {
    match serde_json::to_value(v) {
        Ok(Value::Object(o)) => o,
        _ => JsonObject::new(),
    }
}

impl ClientRequests for Switch {
    fn request(
        &self,
        req: ClientRequest,
    ) -> Pin<Box<dyn Future<Output = Result<Value, ClientError>> + Send>> {
        let id = {
            let phase = self.phase();
            match &*phase {
                // Under the phase's lock: see `to_task`.
                Phase::Request { .. } => return self.request_client.request(req),
                Phase::Task { id, .. } => id.clone(),
            }
        };
        // Answers the client gave in earlier stateless rounds still count.
        if let Some(known) = self.round.as_ref().and_then(|r| r.known(&req)) {
            return Box::pin(std::future::ready(known));
        }
        // A question the caller cannot answer fails now, not at the deadline.
        if let Err(capability) = self.capabilities.check(&req.method) {
            return Box::pin(std::future::ready(Err(ClientError::Unsupported {
                method: req.method.clone(),
                capability: capability.to_string(),
            })));
        }
        let wire = serde_json::json!({"method": req.method, "params": req.params});
        let bytes = wire.to_string().len() as u64;
        let asked = match serde_json::from_value::<InputRequest>(wire) {
            Ok(request) => self
                .tasks
                .ask(&id, req.key.clone(), req.method.clone(), request, bytes),
            Err(e) => Err(ClientError::Failed(format!(
                "the tool asked its client a malformed `{}` (key `{}`): {e}",
                req.method, req.key
            ))),
        };
        Box::pin(async move {
            asked?.await.map_err(|_| {
                ClientError::Failed(format!(
                    "`{}` was not answered: the task was cancelled",
                    req.method
                ))
            })
        })
    }

    fn run_as_task(&self) -> bool {
        self.to_task()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's task id is escaped and bounded in the refusal (it reaches
    /// the server's log).
    #[test]
    fn an_unknown_tasks_id_is_bounded_in_its_refusal() {
        let e = unknown(&"x".repeat(3_000_000));
        assert!(e.message.len() < 400, "{}", e.message.len());
    }
    use std::time::Duration;

    fn tasks(max: u32, keep: Duration) -> Arc<Tasks> {
        Tasks::new(TasksConfig {
            max,
            keep,
            ..TasksConfig::default()
        })
    }

    fn elicit() -> InputRequest {
        serde_json::from_value(serde_json::json!({
            "method": "elicitation/create",
            "params": {"mode": "form", "message": "ok?", "requestedSchema": {"type": "object", "properties": {}}}
        }))
        .unwrap()
    }

    #[test]
    fn the_store_holds_at_most_max_and_forgets_ended_tasks_after_keep() {
        let t = tasks(2, Duration::from_millis(50));
        let a = t.create(CancellationToken::new(), (1, 64)).unwrap();
        let b = t.create(CancellationToken::new(), (1, 64)).unwrap();
        assert!(
            t.create(CancellationToken::new(), (1, 64)).is_none(),
            "over max"
        );
        t.finish(&a.task_id, TaskPayload::Cancelled);
        std::thread::sleep(Duration::from_millis(80));
        // `a` ended and its time is up; `b` still runs, however old.
        assert!(t.create(CancellationToken::new(), (1, 64)).is_some());
        assert_eq!(t.get(&a.task_id).unwrap_err().code.0, -32602);
        assert_eq!(
            t.get(&b.task_id).unwrap().0.task.status(),
            TaskStatus::Working
        );
    }

    #[test]
    fn a_question_waits_for_its_answer_and_other_keys_are_ignored() {
        let t = tasks(4, Duration::from_secs(60));
        let task = t.create(CancellationToken::new(), (1, 64)).unwrap();
        let id = task.task_id;
        let mut rx = t
            .ask(&id, "q".into(), "elicitation/create".into(), elicit(), 0)
            .unwrap();
        assert_eq!(
            t.get(&id).unwrap().0.task.status(),
            TaskStatus::InputRequired
        );
        let mut answers = BTreeMap::new();
        answers.insert("unknown".to_string(), serde_json::json!({}));
        t.update(&id, answers).unwrap();
        assert!(rx.try_recv().is_err(), "not answered yet");
        let mut answers = BTreeMap::new();
        answers.insert("q".to_string(), serde_json::json!({"action": "accept"}));
        t.update(&id, answers).unwrap();
        assert_eq!(rx.try_recv().unwrap()["action"], "accept");
        assert_eq!(t.get(&id).unwrap().0.task.status(), TaskStatus::Working);
    }

    #[test]
    fn at_most_half_a_components_calls_run_as_tasks() {
        let t = tasks(64, Duration::from_secs(60));
        let a = t.create(CancellationToken::new(), (7, 4)).unwrap();
        t.create(CancellationToken::new(), (7, 4)).unwrap();
        assert!(t.create(CancellationToken::new(), (7, 4)).is_none());
        // Another component has its own half; one call always may.
        assert!(t.create(CancellationToken::new(), (8, 1)).is_some());
        // An ended task frees its place.
        t.finish(&a.task_id, TaskPayload::Cancelled);
        assert!(t.create(CancellationToken::new(), (7, 4)).is_some());
    }

    #[test]
    fn a_task_that_ran_longer_than_keep_is_kept_after_it_ends() {
        // `keep` long enough that a stalled thread between `finish` and
        // `get` does not reach it.
        let t = tasks(4, Duration::from_secs(2));
        let id = t.create(CancellationToken::new(), (1, 64)).unwrap().task_id;
        std::thread::sleep(Duration::from_millis(2500));
        t.finish(&id, TaskPayload::Cancelled);
        assert!(t.get(&id).is_ok(), "kept for `keep` after its end");
        std::thread::sleep(Duration::from_millis(2500));
        assert!(t.get(&id).is_err(), "then forgotten");
    }

    #[test]
    fn a_malformed_answer_is_refused_and_the_question_keeps_waiting() {
        let t = tasks(4, Duration::from_secs(60));
        let id = t.create(CancellationToken::new(), (1, 64)).unwrap().task_id;
        let mut rx = t
            .ask(&id, "q".into(), "elicitation/create".into(), elicit(), 0)
            .unwrap();
        let mut answers = BTreeMap::new();
        answers.insert("q".to_string(), serde_json::json!({"confirm": true}));
        let e = t.update(&id, answers).unwrap_err();
        assert_eq!(e.code.0, -32602);
        assert!(e.message.contains("`action` is missing"), "{e:?}");
        assert!(rx.try_recv().is_err());
        assert_eq!(
            t.get(&id).unwrap().0.task.status(),
            TaskStatus::InputRequired
        );
    }

    #[test]
    fn cancel_stops_the_call_fails_its_questions_and_the_task_ends_cancelled() {
        let t = tasks(4, Duration::from_secs(60));
        let cancel = CancellationToken::new();
        let id = t.create(cancel.clone(), (1, 64)).unwrap().task_id;
        let mut rx = t
            .ask(&id, "q".into(), "elicitation/create".into(), elicit(), 0)
            .unwrap();
        t.cancel(&id).unwrap();
        assert!(cancel.is_cancelled());
        assert!(rx.try_recv().is_err(), "the question's sender is gone");
        // Whatever the call says on its way out, the task was cancelled.
        t.finish(
            &id,
            TaskPayload::Completed {
                result: JsonObject::new(),
            },
        );
        assert_eq!(t.get(&id).unwrap().0.task.status(), TaskStatus::Cancelled);
        // Cancelling an ended task is fine; an unknown one is -32602.
        t.cancel(&id).unwrap();
        assert_eq!(t.cancel("nope").unwrap_err().code.0, -32602);
    }
}
