//! A fake host, for testing tools natively (`cargo test`, no wasm).
//!
//! In a component, [`log`](crate::log), [`progress`](crate::progress),
//! [`cancelled`](crate::cancelled), [`run_as_task`](crate::run_as_task) and
//! client requests ([`request_client`](crate::request_client),
//! [`client::Ask::send`](crate::client::Ask::send),
//! [`client::ask_all`](crate::client::ask_all)) go to the host. Natively
//! there is none: this module owns [`FakeHost`], which stands in for it on
//! the current thread while a tool runs ([`FakeHost::call`], or
//! [`FakeHost::run`] for any code), answers the client requests it was told
//! to answer, and records what the tool did ([`Run`]: its result and its
//! [`Event`]s, in order). Outside a run these services panic with a message
//! naming this module. The module is compiled for non-wasm targets only.
//!
//! ```
//! use serde_json::json;
//! use toolhost_guest::client::{Ask, ask_all};
//! use toolhost_guest::testing::FakeHost;
//! use toolhost_guest::{Level, Tool, ToolError, Toolbox};
//!
//! #[derive(serde::Deserialize, schemars::JsonSchema)]
//! struct Args { files: u32 }
//!
//! fn tidy(a: Args) -> Result<String, ToolError> {
//!     let answers = ask_all([Ask::roots().key("roots"), Ask::sample("Tidy how?", 50).key("how")]);
//!     let mut done = 0;
//!     for i in 0..a.files {
//!         if toolhost_guest::cancelled() {
//!             toolhost_guest::log(Level::Warning, "cancelled");
//!             break;
//!         }
//!         toolhost_guest::progress(f64::from(i + 1), Some(f64::from(a.files)), None);
//!         done += 1;
//!     }
//!     Ok(format!("{done} files, sampling answered: {}", answers[1].is_ok()))
//! }
//!
//! let tools = Toolbox::new().tool(Tool::new("tidy", "Tidies files", tidy));
//! let run = FakeHost::new()
//!     .answer("roots/list", json!({"roots": [{"uri": "file:///data"}]}))
//!     .cancel_after(2) // the first two checks say "not cancelled"
//!     .call(&tools, "tidy", json!({"files": 5}));
//!
//! // No answer for sampling: the client "cannot answer" it.
//! assert_eq!(run.output_text().as_deref(), Some("2 files, sampling answered: false"));
//! assert_eq!(run.asks().iter().map(|a| a.1).collect::<Vec<_>>(), [Some("roots"), Some("how")]);
//! assert_eq!(run.progress(), [(1.0, Some(5.0), None), (2.0, Some(5.0), None)]);
//! assert_eq!(run.logs(), [(Level::Warning, "cancelled")]);
//! assert_eq!(run.cancel_checks, 3);
//! ```
//!
//! The fake host keeps the host's rules a tool can trip over: only
//! `sampling/createMessage`, `elicitation/create` and `roots/list` may be
//! asked (anything else is refused as not granted), question keys must be
//! well formed and unique within the call, params must be a JSON object,
//! [`cancelled`](crate::cancelled) turns true once a question was answered
//! with [`ClientError::InputRequired`] (the call must return so that its
//! client can answer), and [`run_as_task`](crate::run_as_task) is accepted
//! only for a tool whose [`TaskSupport`] allows tasks. It does not model
//! the operator's limits (request budget, sampling's `maxTokens` cap) or the
//! stateless retry: a test answers a question with `InputRequired` to see
//! the first run, and with a value to see the retry.

use crate::client::ClientError;
use crate::host;
use crate::{Level, Output, TaskSupport, ToolError, Toolbox};
use serde_json::Value;
use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;

/// The client requests a tool may make (anything else is not granted).
const METHODS: [&str; 3] = ["sampling/createMessage", "elicitation/create", "roots/list"];

type Answer = Rc<dyn Fn(&Value) -> Result<Value, ClientError>>;

/// A stand-in for the host, for native tests: how it answers, then
/// [`call`](FakeHost::call) a tool (or [`run`](FakeHost::run) any code)
/// under it. By default it answers no client request (each gets
/// [`ClientError::Unsupported`], as from a client without the capability),
/// never cancels, and refuses [`run_as_task`](crate::run_as_task).
///
/// A `FakeHost` can run many calls; each starts afresh (no events, no
/// cancellation checks yet, no keys used).
#[derive(Clone, Default)]
pub struct FakeHost {
    answers: Vec<(String, Answer)>,
    cancel_after: Option<usize>,
    accept_tasks: bool,
}

impl fmt::Debug for FakeHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeHost")
            .field(
                "answers",
                &self.answers.iter().map(|(m, _)| m).collect::<Vec<_>>(),
            )
            .field("cancel_after", &self.cancel_after)
            .field("accept_tasks", &self.accept_tasks)
            .finish()
    }
}

impl FakeHost {
    /// A host that answers nothing, never cancels and refuses tasks.
    pub fn new() -> FakeHost {
        FakeHost::default()
    }

    /// Answer every `method` request with `result` (the client's result,
    /// e.g. `{"action": "accept", "content": {...}}` for
    /// `elicitation/create`). Replaces an earlier answer for `method`.
    ///
    /// # Panics
    ///
    /// If `method` is not one a tool may ask (`sampling/createMessage`,
    /// `elicitation/create`, `roots/list`): the host would never ask it.
    pub fn answer(self, method: &str, result: Value) -> FakeHost {
        self.answer_with(method, move |_| Ok(result.clone()))
    }

    /// Answer every `method` request with what `f` makes of its params: a
    /// result, or an error such as [`ClientError::InputRequired`] (what a
    /// stateless client's first run gets) or [`ClientError::Failed`] (the
    /// user refused, the manifest does not grant it...). Replaces an
    /// earlier answer for `method`.
    ///
    /// # Panics
    ///
    /// As [`answer`](FakeHost::answer).
    pub fn answer_with<F>(mut self, method: &str, f: F) -> FakeHost
    where
        F: Fn(&Value) -> Result<Value, ClientError> + 'static,
    {
        assert!(
            METHODS.contains(&method),
            "FakeHost::answer: `{method}` is not a client request a tool may make \
             (sampling/createMessage, elicitation/create, roots/list)"
        );
        self.answers.retain(|(m, _)| m != method);
        self.answers.push((method.to_string(), Rc::new(f)));
        self
    }

    /// The caller has cancelled the call: [`cancelled`](crate::cancelled)
    /// is true from the first check.
    pub fn cancelled(self) -> FakeHost {
        self.cancel_after(0)
    }

    /// The caller cancels the call after `checks` checks: the first
    /// `checks` calls of [`cancelled`](crate::cancelled) return false, the
    /// later ones true.
    pub fn cancel_after(mut self, checks: usize) -> FakeHost {
        self.cancel_after = Some(checks);
        self
    }

    /// Whether the caller can follow a task (default: no). With `true`,
    /// [`run_as_task`](crate::run_as_task) returns true in a tool whose
    /// [`TaskSupport`] is `Optional` or `Required` (and in code run with
    /// [`run`](FakeHost::run), which has no tool).
    pub fn accept_tasks(mut self, accept: bool) -> FakeHost {
        self.accept_tasks = accept;
        self
    }

    /// Call tool `name` of `toolbox` with `arguments`, as
    /// [`Toolbox::call`] does, with this fake host serving it: its result
    /// and what it did.
    pub fn call(&self, toolbox: &Toolbox, name: &str, arguments: Value) -> Run {
        let tasks = toolbox
            .entries
            .iter()
            .find(|e| e.name == name)
            .is_some_and(|e| e.task_support != TaskSupport::Forbidden);
        self.run_with(tasks, || toolbox.call(name, arguments))
    }

    /// Run `f` with this fake host serving the current thread: for code
    /// other than a whole tool (a helper, a resource's or a prompt's
    /// function). The host is removed when `f` returns, and also when it
    /// panics (the panic goes on).
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> Run<T> {
        self.run_with(true, f)
    }

    fn run_with<T>(&self, tasks: bool, f: impl FnOnce() -> T) -> Run<T> {
        let installed = Installed::new(Session {
            host: self.clone(),
            tasks,
            events: Vec::new(),
            cancel_checks: 0,
            keys: Vec::new(),
            input_required: false,
        });
        let result = f();
        let session = installed.finish();
        Run {
            result,
            events: session.events,
            cancel_checks: session.cancel_checks,
        }
    }
}

/// One thing a tool did with its host, as [`Run::events`] records it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// [`log`](crate::log).
    Log {
        /// Its level.
        level: Level,
        /// Its message.
        message: String,
    },
    /// [`progress`](crate::progress).
    Progress {
        /// Work done.
        progress: f64,
        /// Work in all, if known.
        total: Option<f64>,
        /// What is being done.
        message: Option<String>,
    },
    /// A client request ([`request_client`](crate::request_client),
    /// [`client::Ask::send`](crate::client::Ask::send), one per question of
    /// [`client::ask_all`](crate::client::ask_all)), answered or not.
    Ask {
        /// `sampling/createMessage`, `elicitation/create`, `roots/list`.
        method: String,
        /// The key the tool gave the question, if any.
        key: Option<String>,
        /// Its params.
        params: Value,
    },
    /// [`run_as_task`](crate::run_as_task).
    RunAsTask {
        /// What it returned.
        accepted: bool,
    },
}

/// What running code under a [`FakeHost`] gave: its result (for
/// [`FakeHost::call`], the tool's) and what it did, in order.
#[derive(Debug)]
#[non_exhaustive]
#[must_use = "a `Run` holds the result and what the code did"]
pub struct Run<T = Result<Output, ToolError>> {
    /// What the tool (or the code) returned.
    pub result: T,
    /// Logs, progress, client requests and task hand-overs, in order.
    pub events: Vec<Event>,
    /// How many times [`cancelled`](crate::cancelled) was checked.
    pub cancel_checks: usize,
}

impl<T> Run<T> {
    /// The log messages: level and message, in order.
    pub fn logs(&self) -> Vec<(Level, &str)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Log { level, message } => Some((*level, message.as_str())),
                _ => None,
            })
            .collect()
    }

    /// The progress reports: progress, total and message, in order.
    pub fn progress(&self) -> Vec<(f64, Option<f64>, Option<&str>)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Progress {
                    progress,
                    total,
                    message,
                } => Some((*progress, *total, message.as_deref())),
                _ => None,
            })
            .collect()
    }

    /// The client requests: method, key and params, in order.
    pub fn asks(&self) -> Vec<(&str, Option<&str>, &Value)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Ask {
                    method,
                    key,
                    params,
                } => Some((method.as_str(), key.as_deref(), params)),
                _ => None,
            })
            .collect()
    }

    /// Whether the call went on as a task
    /// ([`run_as_task`](crate::run_as_task) returned true).
    pub fn ran_as_task(&self) -> bool {
        self.events
            .iter()
            .any(|e| matches!(e, Event::RunAsTask { accepted: true }))
    }
}

impl Run {
    /// The tool's text, if it succeeded: its text blocks, joined by
    /// newlines (`None` if it failed or returned no text).
    pub fn output_text(&self) -> Option<String> {
        let out = self.result.as_ref().ok()?;
        let texts: Vec<&str> = out
            .content
            .iter()
            .filter_map(|c| match c {
                crate::Content::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        (!texts.is_empty()).then(|| texts.join("\n"))
    }
}

/// The fake host serving one run, and what the code did so far.
struct Session {
    host: FakeHost,
    /// Whether the tool's task support allows tasks.
    tasks: bool,
    events: Vec<Event>,
    cancel_checks: usize,
    /// Keys of the questions asked, the host's numbering included.
    keys: Vec<String>,
    /// A question was answered `InputRequired`: the call must return.
    input_required: bool,
}

thread_local! {
    static CURRENT: RefCell<Option<Session>> = const { RefCell::new(None) };
}

/// A session installed for the current thread; the one it replaced (a run
/// inside a run) comes back when it is dropped, panic or not.
struct Installed {
    previous: Option<Session>,
}

impl Installed {
    fn new(session: Session) -> Installed {
        Installed {
            previous: CURRENT.replace(Some(session)),
        }
    }

    /// The session, with the one it replaced back in place.
    fn finish(self) -> Session {
        let session = CURRENT.take();
        drop(self);
        session.expect("the fake host's session is installed until the run ends")
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        CURRENT.set(self.previous.take());
    }
}

/// Whether a fake host serves the current thread.
#[cfg(test)]
pub(crate) fn installed() -> bool {
    CURRENT.with_borrow(Option::is_some)
}

fn with_session<R>(service: &str, f: impl FnOnce(&mut Session) -> R) -> R {
    CURRENT.with_borrow_mut(|current| match current {
        Some(s) => f(s),
        None => panic!(
            "{service} needs a host, and natively there is none: run the tool under a fake \
             host from `toolhost_guest::testing` (e.g. `FakeHost::new().call(&toolbox, \
             name, arguments)`) instead of `Toolbox::call`"
        ),
    })
}

/// A question checked and recorded: its answer is still to come.
enum Pending {
    Refused(host::ClientError),
    Answer(Answer, Value),
}

impl Session {
    /// Record a question and apply the host's checks, in its order.
    fn ask(&mut self, request: &host::ClientRequest) -> Pending {
        let method = request.method.as_str();
        let params = serde_json::from_str(&request.params)
            .unwrap_or_else(|_| Value::String(request.params.clone()));
        self.events.push(Event::Ask {
            method: method.to_string(),
            key: request.key.clone(),
            params: params.clone(),
        });
        let refuse = |m: String| Pending::Refused(host::ClientError::Failed(m));
        if !METHODS.contains(&method) {
            return refuse(format!(
                "`{method}` is not granted to this tool (its manifest needs `[client] requests`)"
            ));
        }
        let key = match &request.key {
            Some(k) => k.clone(),
            None => format!("input-{}", self.keys.len() + 1),
        };
        if !valid_key(&key) {
            return refuse(format!(
                "`{key}` is not a valid request key (1-64 characters of A-Z a-z 0-9 _ - . : /)"
            ));
        }
        if self.keys.contains(&key) {
            return refuse(format!(
                "this call already asked its client a question with key `{key}`; each question needs its own key"
            ));
        }
        self.keys.push(key);
        if !params.is_object() {
            return refuse(format!("params of `{method}` must be a JSON object"));
        }
        match self.host.answers.iter().find(|(m, _)| m == method) {
            Some((_, answer)) => Pending::Answer(answer.clone(), params),
            None => Pending::Refused(host::ClientError::Unsupported(format!(
                "the client cannot answer `{method}`: the fake host has no answer for it \
                 (see `FakeHost::answer`)"
            ))),
        }
    }
}

fn valid_key(key: &str) -> bool {
    (1..=64).contains(&key.len())
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.:/".contains(c))
}

/// The answer to a checked question. The answering function runs with the
/// session free (it may log, say).
fn answer(pending: Pending) -> Result<String, host::ClientError> {
    let (f, params) = match pending {
        Pending::Refused(e) => return Err(e),
        Pending::Answer(f, params) => (f, params),
    };
    match f(&params) {
        Ok(v) => Ok(v.to_string()),
        Err(e) => Err(match e {
            ClientError::InputRequired(m) => {
                with_session("a client request", |s| s.input_required = true);
                host::ClientError::InputRequired(m)
            }
            ClientError::Unsupported(m) => host::ClientError::Unsupported(m),
            ClientError::Failed(m) => host::ClientError::Failed(m),
        }),
    }
}

/// The native side of [`crate::host`]: the wit-bindgen import signatures,
/// served by the current thread's fake host.
pub(crate) mod shim {
    use super::{Event, answer, with_session};
    use crate::Level;
    use crate::host::{ClientError, ClientRequest};

    pub(crate) fn log(level: Level, message: &str) {
        with_session("`toolhost_guest::log`", |s| {
            s.events.push(Event::Log {
                level,
                message: message.to_string(),
            });
        });
    }

    pub(crate) fn progress(progress: f64, total: Option<f64>, message: Option<&str>) {
        with_session("`toolhost_guest::progress`", |s| {
            s.events.push(Event::Progress {
                progress,
                total,
                message: message.map(str::to_string),
            });
        });
    }

    pub(crate) fn cancelled() -> bool {
        with_session("`toolhost_guest::cancelled`", |s| {
            s.cancel_checks += 1;
            s.input_required || s.host.cancel_after.is_some_and(|n| s.cancel_checks > n)
        })
    }

    pub(crate) fn run_as_task() -> bool {
        with_session("`toolhost_guest::run_as_task`", |s| {
            let accepted = s.host.accept_tasks && s.tasks;
            s.events.push(Event::RunAsTask { accepted });
            accepted
        })
    }

    const ASK: &str = "a client request (`toolhost_guest::request_client`, \
                       `client::Ask::send`, `client::ask_all`)";

    pub(crate) fn request_client(request: &ClientRequest) -> Result<String, ClientError> {
        answer(with_session(ASK, |s| s.ask(request)))
    }

    /// Every question is checked and recorded before any is answered, as
    /// the host puts them all to the client at once.
    pub(crate) fn request_clients(requests: &[ClientRequest]) -> Vec<Result<String, ClientError>> {
        let pending = with_session(ASK, |s| {
            requests.iter().map(|r| s.ask(r)).collect::<Vec<_>>()
        });
        pending.into_iter().map(answer).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{Ask, ask_all};
    use crate::{Tool, request_client};
    use serde_json::json;
    use std::panic::{AssertUnwindSafe, catch_unwind};

    #[derive(serde::Deserialize, schemars::JsonSchema)]
    struct NoArgs {}

    fn tool(f: impl Fn() -> Result<String, ToolError> + 'static) -> Toolbox {
        Toolbox::new().tool(Tool::new("t", "A test tool.", move |_: NoArgs| f()))
    }

    fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    }

    fn assert_no_host(f: impl FnOnce()) {
        let m = panic_message(catch_unwind(AssertUnwindSafe(f)).unwrap_err());
        assert!(m.contains("toolhost_guest::testing"), "{m}");
        assert!(m.contains("needs a host"), "{m}");
    }

    #[test]
    fn logs_and_progress_are_recorded_in_order() {
        let tools = tool(|| {
            crate::log(Level::Info, "start");
            crate::progress(1.0, Some(2.0), Some("half"));
            crate::log(Level::Debug, String::from("middle"));
            crate::progress(2.0, None, None);
            crate::log(Level::Error, "end");
            Ok("done".into())
        });
        let run = FakeHost::new().call(&tools, "t", json!({}));
        assert_eq!(run.output_text().as_deref(), Some("done"));
        assert_eq!(
            run.events,
            [
                Event::Log {
                    level: Level::Info,
                    message: "start".into()
                },
                Event::Progress {
                    progress: 1.0,
                    total: Some(2.0),
                    message: Some("half".into())
                },
                Event::Log {
                    level: Level::Debug,
                    message: "middle".into()
                },
                Event::Progress {
                    progress: 2.0,
                    total: None,
                    message: None
                },
                Event::Log {
                    level: Level::Error,
                    message: "end".into()
                },
            ]
        );
        assert_eq!(
            run.logs(),
            [
                (Level::Info, "start"),
                (Level::Debug, "middle"),
                (Level::Error, "end")
            ]
        );
        assert_eq!(
            run.progress(),
            [(1.0, Some(2.0), Some("half")), (2.0, None, None)]
        );
        assert!(run.asks().is_empty());
        assert_eq!(run.cancel_checks, 0);
        assert!(!run.ran_as_task());
    }

    #[test]
    fn a_client_answer_reaches_the_tool() {
        let tools = tool(|| {
            let a = Ask::sample("Say hi", 10).key("hi").send()?;
            Ok(a["content"]["text"].as_str().unwrap().to_string())
        });
        let run = FakeHost::new()
            .answer_with("sampling/createMessage", |params| {
                let prompt = params["messages"][0]["content"]["text"].as_str().unwrap();
                Ok(json!({"role": "assistant", "content": {"type": "text", "text": format!("{prompt}!")}}))
            })
            .call(&tools, "t", json!({}));
        assert_eq!(run.output_text().as_deref(), Some("Say hi!"));
        let (method, key, params) = run.asks()[0];
        assert_eq!((method, key), ("sampling/createMessage", Some("hi")));
        assert_eq!(params["maxTokens"], 10);

        // A fixed answer, through `request_client`; a later answer replaces
        // an earlier one.
        let tools = tool(|| Ok(request_client("roots/list", &json!({}))?.to_string()));
        let run = FakeHost::new()
            .answer("roots/list", json!({"roots": []}))
            .answer("roots/list", json!({"roots": [{"uri": "file:///a"}]}))
            .call(&tools, "t", json!({}));
        assert_eq!(
            run.output_text().as_deref(),
            Some(r#"{"roots":[{"uri":"file:///a"}]}"#)
        );
        assert_eq!(run.asks(), [("roots/list", None, &json!({}))]);
    }

    #[test]
    fn an_unanswered_or_ungranted_question_fails_as_the_host_says() {
        let tools = tool(|| match Ask::roots().send() {
            Err(ClientError::Unsupported(m)) => Err(ToolError::failed(m)),
            other => panic!("{other:?}"),
        });
        let run = FakeHost::new()
            .answer("sampling/createMessage", json!({}))
            .call(&tools, "t", json!({}));
        let Err(ToolError::Failed(m)) = &run.result else {
            panic!("{:?}", run.result)
        };
        assert!(
            m.starts_with("the client cannot answer `roots/list`"),
            "{m}"
        );
        assert_eq!(run.asks().len(), 1);

        // `request_client` reports it as a tool error, like any other.
        let tools = tool(|| Ok(request_client("ping", &json!({}))?.to_string()));
        let run = FakeHost::new().call(&tools, "t", json!({}));
        let Err(ToolError::Failed(m)) = &run.result else {
            panic!("{:?}", run.result)
        };
        assert!(m.contains("`ping` is not granted"), "{m}");
        // Asked, though refused.
        assert_eq!(run.asks()[0].0, "ping");

        // An answer's own error reaches the tool as it is.
        let tools = tool(|| match Ask::roots().send() {
            Err(ClientError::Failed(m)) => Ok(m),
            other => panic!("{other:?}"),
        });
        let run = FakeHost::new()
            .answer_with("roots/list", |_| {
                Err(ClientError::Failed("the user said no".into()))
            })
            .call(&tools, "t", json!({}));
        assert_eq!(run.output_text().as_deref(), Some("the user said no"));
    }

    #[test]
    fn questions_are_checked_as_the_host_checks_them() {
        let run = FakeHost::new()
            .answer("roots/list", json!({"roots": []}))
            .run(|| {
                [
                    Ask::roots().send(),                // input-1
                    Ask::roots().key("input-1").send(), // taken
                    Ask::roots().key("bad key").send(),
                    Ask::roots().key("x".repeat(65)).send(),
                    Ask::new("roots/list", json!([1])).key("list").send(),
                    Ask::roots().key("ok").send(),
                ]
            });
        assert_eq!(run.asks().len(), 6);
        let [first, taken, bad, long, list, ok] = run.result;
        assert!(first.is_ok() && ok.is_ok());
        let failed = |r: Result<Value, ClientError>| match r {
            Err(ClientError::Failed(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(failed(taken).contains("already asked"));
        assert!(failed(bad).contains("not a valid request key"));
        assert!(failed(long).contains("not a valid request key"));
        assert!(failed(list).contains("must be a JSON object"));
    }

    #[test]
    #[should_panic(expected = "not a client request a tool may make")]
    fn answering_an_unknown_method_is_a_mistake() {
        let _ = FakeHost::new().answer("sampling/create", json!({}));
    }

    #[test]
    fn ask_all_answers_in_order() {
        let run = FakeHost::new()
            .answer("roots/list", json!({"roots": []}))
            .answer_with("elicitation/create", |p| {
                Ok(json!({"action": "accept", "content": {"echo": p["message"]}}))
            })
            .run(|| {
                ask_all([
                    Ask::elicit("one", json!({})).key("a"),
                    Ask::sample("two", 5).key("b"),
                    Ask::roots().key("c"),
                    Ask::elicit("four", json!({})).key("d"),
                    Ask::roots().key("c"),
                ])
            });
        let asked: Vec<_> = run.asks().iter().map(|a| (a.0, a.1)).collect();
        assert_eq!(
            asked,
            [
                ("elicitation/create", Some("a")),
                ("sampling/createMessage", Some("b")),
                ("roots/list", Some("c")),
                ("elicitation/create", Some("d")),
                ("roots/list", Some("c")),
            ]
        );
        let answers = run.result;
        assert_eq!(answers.len(), 5);
        assert_eq!(answers[0].as_ref().unwrap()["content"]["echo"], "one");
        assert!(matches!(answers[1], Err(ClientError::Unsupported(_))));
        assert_eq!(answers[2].as_ref().unwrap(), &json!({"roots": []}));
        assert_eq!(answers[3].as_ref().unwrap()["content"]["echo"], "four");
        assert!(matches!(&answers[4], Err(ClientError::Failed(m)) if m.contains("already asked")));
    }

    #[test]
    fn ask_all_puts_every_question_before_answering_any() {
        // An answer that logs: its log comes after every question.
        let run = FakeHost::new()
            .answer_with("roots/list", |_| {
                crate::log(Level::Debug, "answering");
                Ok(json!({"roots": []}))
            })
            .run(|| ask_all([Ask::roots().key("a"), Ask::roots().key("b")]));
        assert!(run.result.iter().all(Result::is_ok));
        let kinds: Vec<&str> = run
            .events
            .iter()
            .map(|e| match e {
                Event::Ask { .. } => "ask",
                Event::Log { .. } => "log",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, ["ask", "ask", "log", "log"]);
    }

    #[test]
    fn cancellation_is_seen() {
        let tools = tool(|| {
            let mut steps = 0;
            while !crate::cancelled() {
                steps += 1;
                assert!(steps < 100, "never cancelled");
            }
            Ok(steps.to_string())
        });
        let run = FakeHost::new().cancelled().call(&tools, "t", json!({}));
        assert_eq!(run.output_text().as_deref(), Some("0"));
        assert_eq!(run.cancel_checks, 1);
        let host = FakeHost::new().cancel_after(3);
        let run = host.call(&tools, "t", json!({}));
        assert_eq!(run.output_text().as_deref(), Some("3"));
        assert_eq!(run.cancel_checks, 4);
        // Each call starts afresh.
        assert_eq!(host.call(&tools, "t", json!({})).cancel_checks, 4);

        // Never, by default.
        let run = FakeHost::new().run(|| (0..10).any(|_| crate::cancelled()));
        assert!(!run.result);
        assert_eq!(run.cancel_checks, 10);
    }

    #[test]
    fn input_required_cancels_the_call() {
        let run = FakeHost::new()
            .answer_with("elicitation/create", |_| {
                Err(ClientError::InputRequired(
                    "input required: elicitation".into(),
                ))
            })
            .run(|| {
                let before = crate::cancelled();
                let r = Ask::elicit("?", json!({})).send();
                (before, r, crate::cancelled())
            });
        let (before, r, after) = run.result;
        assert!(!before && after);
        assert!(matches!(r, Err(ClientError::InputRequired(_))));
    }

    #[test]
    fn run_as_task_needs_the_caller_and_the_tool() {
        let plain = tool(|| Ok(crate::run_as_task().to_string()));
        let optional = Toolbox::new().tool(
            Tool::new("t", "A task.", |_: NoArgs| {
                Ok::<_, ToolError>(crate::run_as_task().to_string())
            })
            .task_support(TaskSupport::Optional),
        );
        let accepting = FakeHost::new().accept_tasks(true);
        let cases = [
            (&accepting, &optional, true),
            (&accepting, &plain, false),
            (&FakeHost::new(), &optional, false),
        ];
        for (host, tools, expected) in cases {
            let run = host.call(tools, "t", json!({}));
            assert_eq!(run.output_text(), Some(expected.to_string()));
            assert_eq!(run.events, [Event::RunAsTask { accepted: expected }]);
            assert_eq!(run.ran_as_task(), expected);
        }
        assert!(accepting.run(crate::run_as_task).result);
    }

    #[test]
    fn an_unknown_tool_is_an_error() {
        let run = FakeHost::new().call(&tool(|| Ok(String::new())), "nope", json!({}));
        assert!(matches!(run.result, Err(ToolError::InvalidArguments(_))));
        assert!(run.events.is_empty());
    }

    #[test]
    fn without_a_fake_host_services_panic_naming_this_module() {
        assert!(!installed());
        assert_no_host(|| crate::log(Level::Info, "x"));
        assert_no_host(|| crate::progress(0.0, None, None));
        assert_no_host(|| {
            crate::cancelled();
        });
        assert_no_host(|| {
            crate::run_as_task();
        });
        assert_no_host(|| {
            let _ = request_client("roots/list", &json!({}));
        });
        assert_no_host(|| {
            let _ = Ask::roots().send();
        });
        assert_no_host(|| {
            ask_all([Ask::roots()]);
        });
        // `Toolbox::call` has no host either.
        let tools = tool(|| {
            crate::log(Level::Info, "x");
            Ok(String::new())
        });
        assert_no_host(|| {
            let _ = tools.call("t", json!({}));
        });
    }

    #[test]
    fn the_fake_host_is_removed_after_a_call() {
        let tools = tool(|| {
            assert!(installed());
            crate::log(Level::Info, "inside");
            Ok(String::new())
        });
        let run = FakeHost::new().call(&tools, "t", json!({}));
        assert_eq!(run.logs(), [(Level::Info, "inside")]);
        assert!(!installed());
        assert_no_host(|| crate::log(Level::Info, "after"));
    }

    #[test]
    fn the_fake_host_is_removed_after_a_panic() {
        let tools = tool(|| {
            crate::log(Level::Info, "inside");
            panic!("the tool broke");
        });
        let p = catch_unwind(AssertUnwindSafe(|| {
            FakeHost::new().call(&tools, "t", json!({}))
        }))
        .unwrap_err();
        assert_eq!(panic_message(p), "the tool broke");
        assert!(!installed());
        assert_no_host(|| crate::log(Level::Info, "after"));
        // And a panicking answer too.
        let host = FakeHost::new().answer_with("roots/list", |_| panic!("the answer broke"));
        let p = catch_unwind(AssertUnwindSafe(|| host.run(|| Ask::roots().send()))).unwrap_err();
        assert_eq!(panic_message(p), "the answer broke");
        assert!(!installed());
    }

    #[test]
    fn a_run_inside_a_run_gives_the_outer_one_back() {
        let outer = FakeHost::new().run(|| {
            crate::log(Level::Info, "outer 1");
            let inner = FakeHost::new().cancelled().run(|| {
                crate::log(Level::Info, "inner");
                crate::cancelled()
            });
            crate::log(Level::Info, "outer 2");
            (inner.result, inner.logs().len(), crate::cancelled())
        });
        assert_eq!(outer.result, (true, 1, false));
        assert_eq!(
            outer.logs(),
            [(Level::Info, "outer 1"), (Level::Info, "outer 2")]
        );
        assert!(!installed());
    }

    #[test]
    fn other_threads_have_no_fake_host() {
        let run = FakeHost::new().run(|| {
            std::thread::spawn(|| catch_unwind(|| crate::log(Level::Info, "x")).is_err())
                .join()
                .unwrap()
        });
        assert!(run.result);
    }
}
