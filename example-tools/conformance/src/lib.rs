//! `conformance`: the tools the MCP conformance suite
//! (`@modelcontextprotocol/conformance`) calls by name, written as ordinary
//! guest-SDK tools so the suite exercises the whole path: MCP front end ->
//! core -> sandbox -> component.
//!
//! Each tool returns exactly what the suite's scenario expects. Needs no
//! grants but `[client]`: the sampling, elicitation and roots tools ask the
//! calling client (a server-to-client request on a 2025-11-25 session, an
//! input-required result on 2026-07-28). The suite's diagnostic hooks that
//! change the tool or prompt list (`test_trigger_*_change`) do nothing here:
//! no tool can change what the host serves; scripts/conformance.sh makes
//! the change, as an operator would, when the audit log shows the call.

use base64::Engine as _;
use schemars::JsonSchema;
use serde::Deserialize;
use std::time::Duration;
use toolhost_guest::client::{Ask, ClientError, ask_all};
use toolhost_guest::prompts::{Message, Prompt, Ref, Role};
use toolhost_guest::resources::{Body, Resource, ResourceContent, Template};
use toolhost_guest::{Content, Level, Output, TaskSupport, Tool, ToolError, Toolbox};

/// A 1x1 PNG.
const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";
/// A WAV file with one silent sample.
const WAV: &str = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA=";

/// The delay between the notifications of the logging and progress tools.
const STEP: Duration = Duration::from_millis(50);

/// The tools this component offers.
pub fn tools() -> Toolbox {
    let toolbox = Toolbox::new()
        .tool(Tool::new("test_simple_text", "Return a fixed text.", simple_text).read_only())
        .tool(Tool::new("test_image_content", "Return a 1x1 PNG image.", image).read_only())
        .tool(Tool::new("test_audio_content", "Return a tiny WAV clip.", audio).read_only())
        .tool(
            Tool::new(
                "test_embedded_resource",
                "Return an embedded text resource.",
                embedded_resource,
            )
            .read_only(),
        )
        .tool(
            Tool::new(
                "test_multiple_content_types",
                "Return text, an image and an embedded resource.",
                multiple_content_types,
            )
            .read_only(),
        )
        .tool(
            Tool::new(
                "test_tool_with_logging",
                "Send three info log messages ~50 ms apart while running.",
                with_logging,
            )
            .read_only(),
        )
        .tool(
            Tool::new(
                "test_tool_with_progress",
                "Report progress 0, 50 and 100 of 100, ~50 ms apart.",
                with_progress,
            )
            .read_only(),
        )
        .tool(
            Tool::new(
                "test_error_handling",
                "Always fail with a tool error.",
                error_handling,
            )
            .read_only(),
        )
        .tool(
            Tool::new(
                "test_reconnection",
                "Answer after ~100 ms (the suite's SSE polling scenario: toolhost \
             answers on the request's own stream and never closes it mid-call).",
                reconnection,
            )
            .read_only(),
        )
        .tool(
            Tool::new(
                "json_schema_2020_12_tool",
                "Tool with JSON Schema 2020-12 features",
                json_schema_2020_12,
            )
            .input_schema(json_schema_2020_12_fixture())
            .read_only(),
        )
        .tool(Tool::new(
            "test_sampling",
            "Tests server-initiated sampling (LLM completion request)",
            sampling,
        ))
        .tool(Tool::new(
            "test_elicitation",
            "Tests server-initiated elicitation (user input request)",
            elicitation,
        ))
        .tool(Tool::new(
            "test_elicitation_sep1034_defaults",
            "Tests elicitation with default values per SEP-1034",
            elicitation_sep1034,
        ))
        .tool(Tool::new(
            "test_elicitation_sep1330_enums",
            "Tests elicitation with enum schema improvements per SEP-1330",
            elicitation_sep1330,
        ));
    prompts(resources(task_tools(stateless_tools(mrtr_tools(toolbox)))))
}

/// The suite's resources (`resources-*` scenarios).
fn resources(t: Toolbox) -> Toolbox {
    t.resource(
        Resource::new("test://static-text", "Static text")
            .description("A fixed text resource.")
            .mime_type("text/plain"),
        || Ok(Body::text("This is the content of the static text resource.")),
    )
    .resource(
        Resource::new("test://static-binary", "Static binary")
            .description("A fixed 1x1 PNG.")
            .mime_type("image/png"),
        || Ok(Body::blob(decode(PNG))),
    )
    .resource(
        Resource::new("test://watched-resource", "Watched resource")
            .description("A resource clients may subscribe to.")
            .mime_type("text/plain"),
        || Ok(Body::text("Watched resource content.")),
    )
    .resource_template(
        Template::new("test://template/{id}/data", "Template data")
            .description("Data for an id.")
            .mime_type("application/json"),
        |uri, vars| {
            let id = vars.get("id").unwrap_or_default();
            let data = serde_json::json!({"id": id, "templateTest": true, "data": format!("Data for ID: {id}")});
            Ok(vec![ResourceContent::text(uri, data.to_string())])
        },
    )
}

#[derive(Deserialize, JsonSchema)]
struct PromptArgs {
    /// First test argument
    arg1: String,
    /// Second test argument
    arg2: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
struct EmbedArgs {
    /// URI of the resource to embed
    resource_uri: String,
}

/// The suite's prompts (`prompts-*`, `completion-complete` and the
/// prompts/get input-required scenario).
fn prompts(t: Toolbox) -> Toolbox {
    t.prompt(
        Prompt::new("test_simple_prompt", "A prompt without arguments."),
        |_: NoArgs| -> Result<Vec<Message>, ToolError> {
            Ok(vec![Message::user("This is a simple prompt for testing.")])
        },
    )
    .prompt(
        Prompt::new(
            "test_prompt_with_arguments",
            "A prompt with two required arguments.",
        ),
        |a: PromptArgs| -> Result<Vec<Message>, ToolError> {
            Ok(vec![Message::user(format!(
                "Prompt with arguments: arg1='{}', arg2='{}'",
                a.arg1, a.arg2
            ))])
        },
    )
    .complete(
        Ref::prompt("test_prompt_with_arguments"),
        "arg1",
        |value, _| {
            ["paris", "park", "party", "test", "testing"]
                .iter()
                .filter(|v| v.starts_with(value))
                .map(|v| v.to_string())
                .collect()
        },
    )
    .prompt(
        Prompt::new(
            "test_prompt_with_embedded_resource",
            "A prompt embedding a resource.",
        ),
        |a: EmbedArgs| -> Result<Vec<Message>, ToolError> {
            Ok(vec![
                Message::new(
                    Role::User,
                    Content::ResourceText {
                        uri: a.resource_uri,
                        mime_type: Some("text/plain".into()),
                        text: "Embedded resource content for testing.".into(),
                    },
                ),
                Message::user("Please process the embedded resource above."),
            ])
        },
    )
    .prompt(
        Prompt::new("test_prompt_with_image", "A prompt with an image."),
        |_: NoArgs| -> Result<Vec<Message>, ToolError> {
            Ok(vec![
                Message::new(Role::User, Content::image(decode(PNG), "image/png")),
                Message::user("Please analyze the image above."),
            ])
        },
    )
    .prompt(
        Prompt::new(
            "test_input_required_result_prompt",
            "A prompt that asks the user for context first (key `user_context`).",
        ),
        |_: NoArgs| -> Result<Vec<Message>, ToolError> {
            let r = Ask::elicit(
                "What context should the prompt use?",
                name_schema("context"),
            )
            .key("user_context")
            .send()?;
            Ok(vec![Message::user(format!(
                "Use this context: {}",
                r["content"]["context"].as_str().unwrap_or_default()
            ))])
        },
    )
}

/// The tools of the suite's tasks scenarios (SEP-2663).
fn task_tools(t: Toolbox) -> Toolbox {
    t.tool(
        Tool::new(
            "greet",
            "Greet `name` (answered at once, never a task).",
            greet,
        )
        .read_only(),
    )
    .tool(
        Tool::new(
            "slow_compute",
            "Work `seconds` seconds as a task, then report `label`.",
            slow_compute,
        )
        .task_support(TaskSupport::Optional)
        .read_only(),
    )
    .tool(
        Tool::new(
            "failing_job",
            "A task (tasks required) that fails with a tool error after about a second.",
            failing_job,
        )
        .task_support(TaskSupport::Required),
    )
    .tool(
        Tool::new(
            "protocol_error_job",
            "A task whose guest crashes (a protocol-level failure).",
            protocol_error_job,
        )
        .task_support(TaskSupport::Optional),
    )
    .tool(
        Tool::new(
            "confirm_delete",
            "A task that asks the user to confirm (key `confirm`), then reports.",
            confirm_delete,
        )
        .task_support(TaskSupport::Optional),
    )
    .tool(
        Tool::new(
            "multi_input",
            "A task that asks two questions at once (keys `first`, `second`).",
            multi_input,
        )
        .task_support(TaskSupport::Optional),
    )
    .tool(
        Tool::new(
            "test_tool_with_task",
            "Ask the user's name (key `user_name`, before any task), then finish as a task.",
            tool_with_task,
        )
        .task_support(TaskSupport::Required),
    )
}

#[derive(Deserialize, JsonSchema)]
struct GreetArgs {
    name: String,
}

fn greet(a: GreetArgs) -> Result<String, ToolError> {
    Ok(format!("Hello, {}!", a.name))
}

#[derive(Deserialize, JsonSchema)]
struct SlowArgs {
    /// How long to work.
    seconds: f64,
    label: Option<String>,
}

/// Sleep `d` in small steps, stopping early once cancelled.
fn work(d: Duration) -> Result<(), ToolError> {
    let until = std::time::Instant::now() + d;
    while std::time::Instant::now() < until {
        if toolhost_guest::cancelled() {
            return Err(ToolError::failed("cancelled"));
        }
        std::thread::sleep(STEP.min(until - std::time::Instant::now()));
    }
    Ok(())
}

fn slow_compute(a: SlowArgs) -> Result<String, ToolError> {
    if a.seconds > 0.0 {
        toolhost_guest::run_as_task();
    }
    work(Duration::from_secs_f64(a.seconds.clamp(0.0, 600.0)))?;
    Ok(format!(
        "Computed {} in {}s",
        a.label.as_deref().unwrap_or("result"),
        a.seconds
    ))
}

fn failing_job(_: NoArgs) -> Result<String, ToolError> {
    toolhost_guest::run_as_task();
    work(Duration::from_secs(1))?;
    Err(ToolError::failed("the job failed"))
}

fn protocol_error_job(_: NoArgs) -> Result<String, ToolError> {
    toolhost_guest::run_as_task();
    work(Duration::from_millis(300))?;
    panic!("protocol_error_job crashes on purpose");
}

#[derive(Deserialize, JsonSchema)]
struct DeleteArgs {
    /// The file to delete (nothing is deleted: the tool only asks).
    filename: Option<String>,
}

fn confirm_delete(a: DeleteArgs) -> Result<String, ToolError> {
    toolhost_guest::run_as_task();
    let r = Ask::elicit(
        format!("Delete {}?", a.filename.as_deref().unwrap_or("the file")),
        serde_json::json!({"type": "object", "properties": {"confirm": {"type": "boolean"}}, "required": ["confirm"]}),
    )
    .key("confirm")
    .send()?;
    Ok(format!("delete confirmed: {}", r["content"]["confirm"]))
}

fn multi_input(_: NoArgs) -> Result<String, ToolError> {
    toolhost_guest::run_as_task();
    let answers = ask_all([
        Ask::elicit("First?", name_schema("value")).key("first"),
        Ask::elicit("Second?", name_schema("value")).key("second"),
    ])
    .into_iter()
    .collect::<Result<Vec<_>, _>>()?;
    Ok(format!(
        "first: {}, second: {}",
        answers[0]["content"]["value"], answers[1]["content"]["value"]
    ))
}

fn tool_with_task(_: NoArgs) -> Result<String, ToolError> {
    let r = Ask::elicit("What is your name?", name_schema("name"))
        .key("user_name")
        .send()?;
    let name = r["content"]["name"]
        .as_str()
        .unwrap_or("stranger")
        .to_string();
    toolhost_guest::run_as_task();
    work(Duration::from_millis(300))?;
    Ok(format!("Task finished for user_name={name}"))
}

/// The diagnostic tools of the suite's 2026-07-28 (stateless) scenarios.
fn stateless_tools(t: Toolbox) -> Toolbox {
    t.tool(Tool::new(
        "test_missing_capability",
        "Needs the client's sampling capability: a request that does not declare it is refused (-32021).",
        missing_capability,
    ))
    .tool(Tool::new(
        "test_streaming_elicitation",
        "Report progress, then ask the user a question (an input-required result on 2026-07-28, never a request on the response stream).",
        streaming_elicitation,
    ))
    .tool(Tool::new(
        "test_logging_tool",
        "Log at every level; the client sees only what its request's log level asks for.",
        logging_tool,
    ).read_only())
    .tool(Tool::new(
        "test_trigger_tool_change",
        "Diagnostic hook: the conformance harness changes the tool list when this is called.",
        |_: NoArgs| -> Result<String, ToolError> { Ok("tool list change requested".into()) },
    ).read_only())
    .tool(Tool::new(
        "test_trigger_prompt_change",
        "Diagnostic hook: the conformance harness changes the prompt list when this is called.",
        |_: NoArgs| -> Result<String, ToolError> { Ok("prompt list change requested".into()) },
    ).read_only())
    .tool(Tool::new(
        "test_header_param",
        "Echo a region that also travels as the Mcp-Param-Region header (SEP-2243).",
        header_param,
    ).input_schema(serde_json::json!({
        "type": "object",
        "properties": {
            "region": {"type": "string", "x-mcp-header": "Region", "description": "A region name."}
        },
        "required": ["region"]
    })).read_only())
}

/// The tools of the suite's input-required-result (MRTR) scenarios.
fn mrtr_tools(t: Toolbox) -> Toolbox {
    t.tool(Tool::new(
        "test_input_required_result_elicitation",
        "Ask the user's name (key `user_name`), then greet them.",
        mrtr_elicitation,
    ))
    .tool(Tool::new(
        "test_input_required_result_sampling",
        "Ask the client's model a question (key `capital_question`).",
        mrtr_sampling,
    ))
    .tool(Tool::new(
        "test_input_required_result_list_roots",
        "Ask for the client's roots (key `client_roots`) and list them.",
        mrtr_list_roots,
    ))
    .tool(Tool::new(
        "test_input_required_result_request_state",
        "Ask for a confirmation (key `confirm`); the answer comes back with the host-sealed request state.",
        mrtr_request_state,
    ))
    .tool(Tool::new(
        "test_input_required_result_multiple_inputs",
        "Ask three questions in one round: elicitation, sampling and roots.",
        mrtr_multiple,
    ))
    .tool(Tool::new(
        "test_input_required_result_multi_round",
        "Ask two questions, the second only once the first is answered (two rounds).",
        mrtr_multi_round,
    ))
    .tool(Tool::new(
        "test_input_required_result_tampered_state",
        "Ask for a confirmation; a retry with altered request state is refused.",
        mrtr_request_state,
    ))
    .tool(Tool::new(
        "test_input_required_result_capabilities",
        "Ask for sampling and elicitation, whichever the client supports.",
        mrtr_capabilities,
    ))
}

fn name_schema(field: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "properties": {field: {"type": "string"}},
        "required": [field]
    })
}

fn missing_capability(_: NoArgs) -> Result<String, ToolError> {
    let r = Ask::sample("Say hello.", 20).send()?;
    Ok(format!("sampled: {}", r["content"]["text"]))
}

fn streaming_elicitation(_: NoArgs) -> Result<String, ToolError> {
    toolhost_guest::progress(0.0, Some(1.0), Some("asking the user"));
    let r = Ask::elicit("Continue?", name_schema("answer"))
        .key("answer")
        .send()?;
    Ok(format!("answer: {}", r["content"]["answer"]))
}

fn logging_tool(_: NoArgs) -> Result<String, ToolError> {
    for level in [Level::Debug, Level::Info, Level::Warning, Level::Error] {
        toolhost_guest::log(level, format!("a {level:?} message"));
    }
    Ok("logged".into())
}

#[derive(Deserialize, JsonSchema)]
struct HeaderArgs {
    region: String,
}

fn header_param(a: HeaderArgs) -> Result<String, ToolError> {
    Ok(format!("region: {}", a.region))
}

fn mrtr_elicitation(_: NoArgs) -> Result<String, ToolError> {
    let r = Ask::elicit("What is your name?", name_schema("name"))
        .key("user_name")
        .send()?;
    Ok(format!(
        "Hello, {}!",
        r["content"]["name"].as_str().unwrap_or("stranger")
    ))
}

fn mrtr_sampling(_: NoArgs) -> Result<String, ToolError> {
    let r = Ask::sample("What is the capital of France?", 100)
        .key("capital_question")
        .send()?;
    Ok(format!("LLM response: {}", r["content"]["text"]))
}

fn mrtr_list_roots(_: NoArgs) -> Result<String, ToolError> {
    let r = Ask::roots().key("client_roots").send()?;
    let uris: Vec<&str> = r["roots"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["uri"].as_str()).collect())
        .unwrap_or_default();
    Ok(format!("roots: {}", uris.join(", ")))
}

fn mrtr_request_state(_: NoArgs) -> Result<String, ToolError> {
    let r = Ask::elicit(
        "Please confirm",
        serde_json::json!({
            "type": "object",
            "properties": {"ok": {"type": "boolean"}},
            "required": ["ok"]
        }),
    )
    .key("confirm")
    .send()?;
    Ok(format!("state-ok: confirmed={}", r["content"]["ok"]))
}

fn mrtr_multiple(_: NoArgs) -> Result<String, ToolError> {
    let answers = ask_all([
        Ask::elicit("What is your name?", name_schema("name")).key("user_name"),
        Ask::sample("Generate a greeting", 50).key("greeting"),
        Ask::roots().key("client_roots"),
    ]);
    let mut answers = answers
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?
        .into_iter();
    let (name, greeting, roots) = (
        answers.next().unwrap_or_default(),
        answers.next().unwrap_or_default(),
        answers.next().unwrap_or_default(),
    );
    Ok(format!(
        "name: {}, greeting: {}, roots: {}",
        name["content"]["name"], greeting["content"]["text"], roots["roots"]
    ))
}

fn mrtr_multi_round(_: NoArgs) -> Result<String, ToolError> {
    let name = Ask::elicit("Step 1: What is your name?", name_schema("name"))
        .key("step1")
        .send()?;
    let color = Ask::elicit("Step 2: What is your favorite color?", name_schema("color"))
        .key("step2")
        .send()?;
    Ok(format!(
        "{} likes {}",
        name["content"]["name"], color["content"]["color"]
    ))
}

/// Asks what the client can answer: a client without elicitation gets only
/// the sampling question.
fn mrtr_capabilities(_: NoArgs) -> Result<String, ToolError> {
    let answers = ask_all([
        Ask::sample("Pick a number.", 10).key("number"),
        Ask::elicit("Pick a color.", name_schema("color")).key("color"),
    ]);
    let mut got = Vec::new();
    for a in answers {
        match a {
            Ok(v) => got.push(v.to_string()),
            Err(ClientError::Unsupported(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(format!("answers: {}", got.join(", ")))
}

/// The suite's canonical JSON Schema 2020-12 fixture (SEP-1613, SEP-2106).
fn json_schema_2020_12_fixture() -> serde_json::Value {
    serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "$defs": {
            "address": {
                "$anchor": "addressDef",
                "type": "object",
                "properties": {
                    "street": {"type": "string"},
                    "city": {"type": "string"}
                }
            }
        },
        "properties": {
            "name": {"type": "string"},
            "address": {"$ref": "#/$defs/address"},
            "contactMethod": {"type": "string", "enum": ["phone", "email"]},
            "phone": {"type": "string"},
            "email": {"type": "string"}
        },
        "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
        "if": {
            "properties": {"contactMethod": {"const": "phone"}},
            "required": ["contactMethod"]
        },
        "then": {"required": ["phone"]},
        "else": {"required": ["email"]},
        "additionalProperties": false
    })
}

#[derive(Deserialize, JsonSchema)]
struct SamplingArgs {
    /// The prompt to send to the LLM.
    prompt: String,
}

fn sampling(a: SamplingArgs) -> Result<String, ToolError> {
    let r = toolhost_guest::request_client(
        "sampling/createMessage",
        &serde_json::json!({
            "messages": [{"role": "user", "content": {"type": "text", "text": a.prompt}}],
            "maxTokens": 100
        }),
    )?;
    let text = r["content"]["text"].as_str().unwrap_or_default();
    Ok(format!("LLM response: {text}"))
}

#[derive(Deserialize, JsonSchema)]
struct ElicitationArgs {
    /// The message to show the user.
    message: String,
}

fn elicit(message: &str, schema: serde_json::Value) -> Result<String, ToolError> {
    let r = toolhost_guest::request_client(
        "elicitation/create",
        &serde_json::json!({"mode": "form", "message": message, "requestedSchema": schema}),
    )?;
    Ok(format!(
        "User response: action={}, content={}",
        r["action"], r["content"]
    ))
}

fn elicitation(a: ElicitationArgs) -> Result<String, ToolError> {
    elicit(
        &a.message,
        serde_json::json!({
            "type": "object",
            "properties": {
                "username": {"type": "string", "description": "User's response"},
                "email": {"type": "string", "description": "User's email address"}
            },
            "required": ["username", "email"]
        }),
    )
}

fn elicitation_sep1034(_: NoArgs) -> Result<String, ToolError> {
    elicit(
        "Please review and update the form fields with defaults",
        serde_json::json!({
            "type": "object",
            "properties": {
                "name": {"type": "string", "description": "User name", "default": "John Doe"},
                "age": {"type": "integer", "description": "User age", "default": 30},
                "score": {"type": "number", "description": "User score", "default": 95.5},
                "status": {
                    "type": "string", "description": "User status",
                    "enum": ["active", "inactive", "pending"], "default": "active"
                },
                "verified": {"type": "boolean", "description": "Verification status", "default": true}
            },
            "required": []
        }),
    )
}

fn elicitation_sep1330(_: NoArgs) -> Result<String, ToolError> {
    elicit(
        "Please choose options",
        serde_json::json!({
            "type": "object",
            "properties": {
                "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
                "titledSingle": {"type": "string", "oneOf": [
                    {"const": "value1", "title": "First Option"},
                    {"const": "value2", "title": "Second Option"},
                    {"const": "value3", "title": "Third Option"}
                ]},
                "legacyEnum": {"type": "string", "enum": ["opt1", "opt2", "opt3"],
                    "enumNames": ["Option One", "Option Two", "Option Three"]},
                "untitledMulti": {"type": "array", "minItems": 1, "maxItems": 3,
                    "items": {"type": "string", "enum": ["option1", "option2", "option3"]}},
                "titledMulti": {"type": "array", "minItems": 1, "maxItems": 3,
                    "items": {"anyOf": [
                        {"const": "value1", "title": "First Choice"},
                        {"const": "value2", "title": "Second Choice"},
                        {"const": "value3", "title": "Third Choice"}
                    ]}}
            },
            "required": []
        }),
    )
}

// Component exports exist only in the wasm build: their symbol names break
// native cdylib linking, and native users (tests, benchmarks) call `tools()`.
#[cfg(target_arch = "wasm32")]
toolhost_guest::export!(tools);

/// No arguments (an absent `arguments` reaches the tool as `{}`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

fn decode(b64: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("constant is valid base64")
}

fn simple_text(_: NoArgs) -> Result<String, ToolError> {
    Ok("This is a simple text response for testing.".into())
}

fn image(_: NoArgs) -> Result<Output, ToolError> {
    Ok(Output::new().with(Content::image(decode(PNG), "image/png")))
}

fn audio(_: NoArgs) -> Result<Output, ToolError> {
    Ok(Output::new().with(Content::audio(decode(WAV), "audio/wav")))
}

fn embedded_resource(_: NoArgs) -> Result<Output, ToolError> {
    Ok(Output::new().with(Content::ResourceText {
        uri: "test://embedded-resource".into(),
        mime_type: Some("text/plain".into()),
        text: "This is an embedded resource content.".into(),
    }))
}

fn multiple_content_types(_: NoArgs) -> Result<Output, ToolError> {
    Ok(Output::new()
        .with(Content::text("Multiple content types test:"))
        .with(Content::image(decode(PNG), "image/png"))
        .with(Content::ResourceText {
            uri: "test://mixed-content-resource".into(),
            mime_type: Some("application/json".into()),
            text: r#"{"test":"data","value":123}"#.into(),
        }))
}

fn with_logging(_: NoArgs) -> Result<String, ToolError> {
    toolhost_guest::log(Level::Info, "Tool execution started");
    std::thread::sleep(STEP);
    toolhost_guest::log(Level::Info, "Tool processing data");
    std::thread::sleep(STEP);
    toolhost_guest::log(Level::Info, "Tool execution completed");
    Ok("Tool with logging executed successfully".into())
}

fn with_progress(_: NoArgs) -> Result<String, ToolError> {
    for (i, p) in [0.0, 50.0, 100.0].into_iter().enumerate() {
        if i > 0 {
            std::thread::sleep(STEP);
        }
        toolhost_guest::progress(p, Some(100.0), None);
    }
    Ok("Tool with progress executed successfully".into())
}

fn error_handling(_: NoArgs) -> Result<String, ToolError> {
    Err(ToolError::failed(
        "This tool intentionally returns an error for testing",
    ))
}

fn reconnection(_: NoArgs) -> Result<String, ToolError> {
    std::thread::sleep(2 * STEP);
    Ok("Reconnection test completed".into())
}

/// The arguments `json_schema_2020_12_tool`'s published schema describes.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "camelCase")]
pub struct SchemaArgs {
    pub name: Option<String>,
    pub address: Option<serde_json::Value>,
    pub contact_method: Option<String>,
    pub phone: Option<String>,
    pub email: Option<String>,
}

fn json_schema_2020_12(a: SchemaArgs) -> Result<String, ToolError> {
    Ok(format!(
        "name: {}, address: {}, contact: {} {}",
        a.name.as_deref().unwrap_or("(none)"),
        a.address.unwrap_or_default(),
        a.contact_method.as_deref().unwrap_or("(none)"),
        a.phone.or(a.email).unwrap_or_default()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_describes_an_object_schema_and_a_description() {
        let defs = tools().__describe();
        assert_eq!(defs.len(), 35);
        for d in defs {
            assert!(!d.description.is_empty(), "{}", d.name);
            let s: serde_json::Value = serde_json::from_str(&d.input_schema).unwrap();
            assert_eq!(s["type"], "object", "{}", d.name);
        }
    }

    #[test]
    fn media_constants_decode() {
        assert_eq!(&decode(PNG)[1..4], b"PNG");
        assert_eq!(&decode(WAV)[..4], b"RIFF");
    }

    // The tools that use host services, natively under a fake host.

    use serde_json::json;
    use toolhost_guest::testing::FakeHost;

    fn elicited(field: &str, value: &str) -> serde_json::Value {
        json!({"action": "accept", "content": {field: value}})
    }

    #[test]
    fn the_logging_tool_logs_at_every_level_in_order() {
        let run = FakeHost::new().call(&tools(), "test_logging_tool", json!({}));
        assert_eq!(run.output_text().as_deref(), Some("logged"));
        assert_eq!(
            run.logs(),
            [
                (Level::Debug, "a Level::Debug message"),
                (Level::Info, "a Level::Info message"),
                (Level::Warning, "a Level::Warning message"),
                (Level::Error, "a Level::Error message"),
            ]
        );
    }

    #[test]
    fn streaming_elicitation_reports_progress_then_asks() {
        let host = FakeHost::new().answer("elicitation/create", elicited("answer", "yes"));
        let run = host.call(&tools(), "test_streaming_elicitation", json!({}));
        assert_eq!(run.output_text().as_deref(), Some(r#"answer: "yes""#));
        assert_eq!(run.progress(), [(0.0, Some(1.0), Some("asking the user"))]);
        let (method, key, params) = run.asks()[0];
        assert_eq!((method, key), ("elicitation/create", Some("answer")));
        assert_eq!(params["message"], "Continue?");

        // A stateless client's first run: the question waits for a retry,
        // and the tool returns.
        let first_run = FakeHost::new()
            .answer_with("elicitation/create", |_| {
                Err(ClientError::InputRequired("input required".into()))
            })
            .call(&tools(), "test_streaming_elicitation", json!({}));
        assert!(first_run.result.is_err());
        assert_eq!(first_run.asks().len(), 1);
    }

    #[test]
    fn multiple_inputs_are_asked_in_one_round_and_answered_in_order() {
        let run = FakeHost::new()
            .answer("elicitation/create", elicited("name", "Ada"))
            .answer(
                "sampling/createMessage",
                json!({"role": "assistant", "content": {"type": "text", "text": "Hi"}}),
            )
            .answer("roots/list", json!({"roots": [{"uri": "file:///r"}]}))
            .call(
                &tools(),
                "test_input_required_result_multiple_inputs",
                json!({}),
            );
        assert_eq!(
            run.output_text().as_deref(),
            Some(r#"name: "Ada", greeting: "Hi", roots: [{"uri":"file:///r"}]"#)
        );
        let keys: Vec<_> = run.asks().iter().map(|a| a.1).collect();
        assert_eq!(
            keys,
            [Some("user_name"), Some("greeting"), Some("client_roots")]
        );
    }

    #[test]
    fn a_client_without_elicitation_gets_only_the_sampling_question_answered() {
        let sampled = json!({"role": "assistant", "content": {"type": "text", "text": "7"}});
        let run = FakeHost::new()
            .answer("sampling/createMessage", sampled.clone())
            .call(
                &tools(),
                "test_input_required_result_capabilities",
                json!({}),
            );
        assert_eq!(run.output_text(), Some(format!("answers: {sampled}")));
    }

    #[test]
    fn slow_compute_runs_as_a_task_and_stops_when_cancelled() {
        let args = json!({"seconds": 60.0});
        let run = FakeHost::new().accept_tasks(true).cancel_after(1).call(
            &tools(),
            "slow_compute",
            args.clone(),
        );
        assert!(run.ran_as_task());
        assert!(matches!(&run.result, Err(ToolError::Failed(m)) if m == "cancelled"));
        assert_eq!(run.cancel_checks, 2);
        // A caller that cannot follow a task keeps the call in the request.
        let run = FakeHost::new()
            .cancelled()
            .call(&tools(), "slow_compute", args);
        assert!(!run.ran_as_task());
    }
}
