//! The one-shot API: `query(core, prompt, options)` runs one prompt to its
//! result and yields the conversation as a stream of typed messages. For
//! more prompts, interrupts or mode changes use [`AgentSession`].

use super::error::AgentError;
use super::options::AgentOptions;
use super::protocol::Message;
use super::session::AgentSession;
use crate::core::Core;
use futures::Stream;
use std::time::Duration;

/// Run `prompt` and stream every message up to and including the result.
/// The CLI's input stays open until the result arrives (hooks, permission
/// callbacks and tools need it), then the CLI is shut down: it has 5
/// seconds to exit, then it is killed with its process group. A CLI that
/// exits abnormally (or is killed) ends the stream with `ProcessExited`.
pub fn query(
    core: Core,
    prompt: impl Into<String>,
    options: AgentOptions,
) -> impl Stream<Item = Result<Message, AgentError>> + Send {
    enum State {
        Start(Core, String, Box<AgentOptions>),
        Running(AgentSession),
        Done,
    }
    futures::stream::unfold(
        State::Start(core, prompt.into(), Box::new(options)),
        |state| async move {
            let mut s = match state {
                State::Start(core, prompt, options) => {
                    match AgentSession::connect(core, *options).await {
                        Ok(s) => match s.send(&prompt) {
                            Ok(()) => s,
                            Err(e) => return Some((Err(e), State::Done)),
                        },
                        Err(e) => return Some((Err(e), State::Done)),
                    }
                }
                State::Running(s) => s,
                State::Done => return None,
            };
            match s.next().await {
                Some(Ok(m @ Message::Result(_))) => {
                    // The turn is over: let the CLI exit, report a bad exit;
                    // one still running after the grace is killed (one that
                    // ignored its input's end kept the stream open for good).
                    s.end_input_within(super::session::EXIT_GRACE);
                    Some((Ok(m), State::Running(s)))
                }
                Some(item) => Some((item, State::Running(s))),
                None => {
                    s.close(Duration::from_secs(5)).await;
                    None
                }
            }
        },
    )
}
