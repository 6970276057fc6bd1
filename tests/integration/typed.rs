//! Typed-WIT components: a component exporting plain WIT functions (the
//! `typed-kitchen-sink` fixture, every WIT type kind) is served one tool per
//! function, with exact schemas, exact JSON round trips, precise argument
//! errors, `err` results as tool errors, and the same limits and grants as
//! any tool. Hostile shapes (resources, no exports, deep types) are written
//! as WAT here and refused at load with a clear error.

use crate::support::*;
use serde_json::{Value, json};
use std::time::Duration;
use toolhost::{CallError, CallErrorKind, Core, Scope};

/// The kitchen sink as tool file `sink`, under `manifest` (extra TOML).
async fn sink(manifest: &str) -> (ToolDir, Core) {
    let d = ToolDir::new();
    d.add("sink", "typed-kitchen-sink", manifest);
    let core = core(d.path()).await;
    (d, core)
}

/// Call and return the structured result (`{"result": ..}`'s value),
/// checking the text block says the same.
async fn result(core: &Core, tool: &str, args: Value) -> Value {
    let out = call(core, tool, args.clone())
        .await
        .unwrap_or_else(|e| panic!("{tool}({args}): {e}"));
    let structured = out.structured.clone().expect("structured content");
    let value = structured["result"].clone();
    assert_eq!(structured, json!({"result": value}), "{tool}");
    let text = match &value {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    assert_eq!(out.text(), text, "{tool}: the text block is the value");
    value
}

fn snapshot(path: &str, actual: &Value) {
    let file = root().join(path);
    let pretty = serde_json::to_string_pretty(actual).unwrap() + "\n";
    if std::env::var_os("TOOLHOST_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&file, &pretty).unwrap();
        return;
    }
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (TOOLHOST_UPDATE_SNAPSHOTS=1 writes it)",
                file.display()
            )
        }))
        .unwrap();
    assert!(
        &expected == actual,
        "{} differs (TOOLHOST_UPDATE_SNAPSHOTS=1 rewrites it after an intended change):\n{pretty}",
        file.display()
    );
}

#[tokio::test]
async fn every_exported_function_is_a_tool_with_its_docs_and_schemas() {
    let (_d, core) = sink("").await;
    let tools = core.tools(&Scope::default());
    let listed: Vec<Value> = tools
        .iter()
        .map(|t| {
            json!({
                "name": &*t.name,
                "description": t.description,
                "inputSchema": &*t.input_schema,
                "outputSchema": t.output_schema.as_deref(),
            })
        })
        .collect();
    snapshot(
        "tests/integration/snapshots/typed-kitchen-sink.json",
        &Value::Array(listed),
    );

    let by_name = |n: &str| {
        tools
            .iter()
            .find(|t| &*t.name == n)
            .unwrap_or_else(|| panic!("no tool {n}"))
    };
    // Interface functions are `iface_func`, world functions their own name;
    // docs come from the WIT doc comments.
    assert_eq!(
        by_name("compound_echo-person").description,
        "Return the person unchanged."
    );
    assert_eq!(
        by_name("divide").description,
        "Divide `a` by `b`; dividing by zero is an error."
    );
    assert_eq!(
        by_name("undocumented").description,
        "Calls `undocumented`: func(x: u8) -> u8"
    );
    assert_eq!(tools.len(), 25);
}

#[tokio::test]
async fn every_kind_round_trips_exactly() {
    let (_d, core) = sink("").await;
    let ints = json!({
        "a": 255, "b": 65535, "c": 4294967295u64, "d": "18446744073709551615",
        "e": -128, "f": -32768, "g": -2147483648, "h": "-9223372036854775808",
    });
    assert_eq!(
        result(&core, "scalars_echo-ints", ints).await,
        json!([
            255,
            65535,
            4294967295u64,
            "18446744073709551615",
            -128,
            -32768,
            -2147483648,
            "-9223372036854775808"
        ])
    );
    // 64-bit integers within ±(2^53 - 1) are numbers, beyond it strings,
    // whichever way they came in.
    let small = json!({"a": 0, "b": 0, "c": 0, "d": "9007199254740991", "e": 0, "f": 0, "g": 0, "h": -9007199254740992i64});
    assert_eq!(
        result(&core, "scalars_echo-ints", small).await,
        json!([0, 0, 0, 9007199254740991u64, 0, 0, 0, "-9007199254740992"])
    );

    for (x, y) in [
        (json!(0.1), json!(0.1)),
        (json!("NaN"), json!("-Infinity")),
        (json!(-0.0), json!(-0.0)),
        (json!(3.4028234663852886e38), json!(1.7976931348623157e308)),
        (json!(1.401298464324817e-45), json!(5e-324)),
    ] {
        let out = result(&core, "scalars_echo-floats", json!({"x": x, "y": y})).await;
        let expect_x = match &x {
            // An f32 comes back as its exact value.
            Value::Number(n) => json!(f64::from(n.as_f64().unwrap() as f32)),
            other => other.clone(),
        };
        assert_eq!(out, json!([expect_x, y]));
        if x == json!(-0.0) {
            assert!(
                out[0].as_f64().unwrap().is_sign_negative(),
                "-0.0 keeps its sign"
            );
        }
    }
    assert_eq!(
        result(
            &core,
            "scalars_echo-text",
            json!({"c": "🦀", "s": "héllo\n\u{0}\"", "b": true})
        )
        .await,
        json!(["🦀", "héllo\n\u{0}\"", true])
    );

    let bytes: Vec<u8> = (0..=255).collect();
    assert_eq!(
        result(&core, "compound_echo-bytes", json!({"data": bytes})).await,
        json!(bytes)
    );
    let items = json!([
        {"id": 0, "name": "", "tags": []},
        {"id": 65535, "name": "ünïcode", "tags": ["a", "b"]},
    ]);
    assert_eq!(
        result(&core, "compound_echo-items", json!({"items": items})).await,
        items
    );
    assert_eq!(
        result(&core, "compound_echo-tuple", json!({"t": ["x", 7, false]})).await,
        json!(["x", 7, false])
    );

    // Records: kebab-case names; option fields may be left out and come back null.
    assert_eq!(
        result(
            &core,
            "compound_echo-person",
            json!({"p": {"first-name": "Ada", "age": 36}})
        )
        .await,
        json!({"first-name": "Ada", "age": 36, "email": null, "nickname": null})
    );
    for nickname in [json!(null), json!({"some": null}), json!({"some": "ada"})] {
        let p = json!({"first-name": "A", "age": 1, "email": "a@b.c", "nickname": nickname});
        assert_eq!(
            result(&core, "compound_echo-person", json!({"p": p})).await,
            p
        );
    }

    for s in [
        json!({"circle": 1.5}),
        json!({"rect": [{"x": -1, "y": 2}, {"x": 3, "y": -4}]}),
        json!("dot"),
    ] {
        assert_eq!(
            result(&core, "compound_echo-shape", json!({"s": s})).await,
            s
        );
    }
    assert_eq!(
        result(
            &core,
            "compound_area",
            json!({"s": {"rect": [{"x": 0, "y": 0}, {"x": 3, "y": 2}]}})
        )
        .await,
        json!(6.0)
    );
    assert_eq!(
        result(&core, "compound_echo-color", json!({"c": "green"})).await,
        json!("green")
    );
    // Flags come back in declaration order.
    assert_eq!(
        result(
            &core,
            "compound_echo-permissions",
            json!({"p": ["exec", "read"]})
        )
        .await,
        json!(["read", "exec"])
    );
    assert_eq!(
        result(&core, "compound_echo-permissions", json!({"p": []})).await,
        json!([])
    );
    assert_eq!(
        result(&core, "compound_echo-option", json!({"o": 4294967295u64})).await,
        json!(4294967295u64)
    );
    assert_eq!(
        result(&core, "compound_echo-option", json!({})).await,
        json!(null)
    );
    for o in [json!(null), json!({"some": null}), json!({"some": "x"})] {
        assert_eq!(
            result(&core, "compound_echo-nested-option", json!({"o": o})).await,
            o
        );
    }
    for o in [
        json!({"full": {"ok": 1}, "no-ok": {"ok": null}, "no-err": {"ok": 2}, "bare": {"ok": null}}),
        json!({"full": {"err": "e"}, "no-ok": {"err": "f"}, "no-err": {"err": null}, "bare": {"err": null}}),
    ] {
        assert_eq!(
            result(&core, "compound_echo-outcomes", json!({"o": o})).await,
            o
        );
    }
    let everything = json!({
        "people": [{"first-name": "B", "age": 255, "email": null, "nickname": {"some": null}}],
        "shapes": [null, "dot", {"circle": "Infinity"}],
        "palette": ["blue", ["read", "write", "exec"]],
        "matrix": [[], [1, "-9223372036854775808"], [9007199254740991i64]],
        "outcomes": {"full": {"ok": 0}, "no-ok": {"err": ""}, "no-err": {"err": null}, "bare": {"ok": null}},
        "blob": [0, 255],
        "maybe-items": [{"id": 1, "name": "n", "tags": ["t"]}],
    });
    assert_eq!(
        result(&core, "compound_echo-everything", json!({"e": everything})).await,
        everything
    );
    assert_eq!(result(&core, "noop", json!({})).await, json!(null));
}

#[tokio::test]
async fn malformed_arguments_name_the_json_pointer_and_the_expectation() {
    let (_d, core) = sink("").await;
    let item = |id: Value| json!({"id": id, "name": "n", "tags": []});
    let cases = [
        (
            "compound_echo-items",
            json!({"items": [item(json!(1)), item(json!(2)), item(json!(70000))]}),
            "/items/2/id: expected u16 ≤ 65535, got 70000",
        ),
        (
            "compound_echo-items",
            json!({"items": [{"id": 1, "name": "n"}]}),
            "/items/0/tags: missing field (expected list<string> (an array))",
        ),
        (
            "compound_echo-items",
            json!({"items": [{"id": 1, "name": "n", "tags": [], "colour": 1}]}),
            "/items/0/colour: unexpected field (record fields: id, name, tags)",
        ),
        (
            "scalars_echo-ints",
            json!({"a": -1, "b": 0, "c": 0, "d": 0, "e": 0, "f": 0, "g": 0, "h": 0}),
            "/a: expected u8 ≥ 0, got -1",
        ),
        (
            "scalars_echo-ints",
            json!({"a": 0, "b": 0, "c": 0, "d": "18446744073709551616", "e": 0, "f": 0, "g": 0, "h": 0}),
            "/d: expected u64 ≤ 18446744073709551615, got 18446744073709551616",
        ),
        (
            "scalars_echo-floats",
            json!({"x": 1e39, "y": 0}),
            "/x: expected f32, got 1e+39: beyond the f32 range (±3.4028235e38)",
        ),
        (
            "scalars_echo-text",
            json!({"c": "ab", "s": "", "b": "yes"}),
            "/c: expected char (a string of exactly one Unicode character), got \"ab\" (2 characters); \
             /b: expected bool (true or false), got \"yes\"",
        ),
        (
            "compound_echo-shape",
            json!({"s": {"triangle": 1}}),
            "/s/triangle: unknown case (cases: circle(..), rect(..), dot)",
        ),
        (
            "compound_echo-shape",
            json!({"s": {"rect": [{"x": 0, "y": 0}]}}),
            "/s/rect: expected a tuple of 2 items, got 1",
        ),
        (
            "compound_echo-color",
            json!({"c": "purple"}),
            "/c: unknown case \"purple\" (cases: red, green, blue)",
        ),
        (
            "compound_echo-permissions",
            json!({"p": ["read", "read"]}),
            "/p/1: flag \"read\" is given twice",
        ),
        (
            "compound_echo-nested-option",
            json!({"o": "x"}),
            "/o: expected option (null, or {\"some\": value}), got \"x\"",
        ),
        (
            "compound_echo-outcomes",
            json!({"o": {"full": {"ok": 1}, "no-ok": {"ok": 5}, "no-err": {"ok": 1}, "bare": {"ok": null}}}),
            "/o/no-ok/ok: expected null (`ok` carries no value), got 5",
        ),
        (
            "divide",
            json!({"a": 1, "b": 2, "c": 3}),
            "/c: unexpected argument (parameters: a, b)",
        ),
        (
            "noop",
            json!({"x": 1}),
            "/x: unexpected argument (this function takes none)",
        ),
    ];
    for (tool, args, expected) in cases {
        let err = call(&core, tool, args.clone()).await.unwrap_err();
        assert_eq!(err.tool(), tool);
        match err.kind() {
            CallErrorKind::InvalidArguments { details } => {
                assert_eq!(details, expected, "{tool}({args})");
            }
            other => panic!("{tool}({args}): expected invalid arguments, got {other:?}"),
        }
        assert_eq!(
            err.to_string(),
            format!("invalid arguments for tool `{tool}`: {expected}")
        );
    }
}

#[tokio::test]
async fn an_err_result_is_a_tool_error_carrying_the_error_value() {
    let (_d, core) = sink("").await;
    assert_eq!(
        result(&core, "divide", json!({"a": 7, "b": 2})).await,
        json!(3)
    );
    assert_eq!(
        result(&core, "check", json!({"ok": true})).await,
        json!(null)
    );
    assert_eq!(
        result(&core, "validate", json!({"code": 0})).await,
        json!("valid")
    );
    let failed = |r: Result<toolhost::ToolOutput, CallError>| match r {
        Err(e) => match e.kind() {
            CallErrorKind::ToolFailed { message } => (e.tool().to_string(), message.clone()),
            other => panic!("expected a tool error, got {other:?}"),
        },
        Ok(out) => panic!("expected a tool error, got {out:?}"),
    };
    assert_eq!(
        failed(call(&core, "divide", json!({"a": 1, "b": 0})).await),
        ("divide".into(), "cannot divide 1 by 0".into())
    );
    assert_eq!(
        failed(call(&core, "validate", json!({"code": 3})).await),
        ("validate".into(), "[3,\"rule 3 failed\"]".into())
    );
    assert_eq!(
        failed(call(&core, "check", json!({"ok": false})).await).1,
        "`check` returned an error (without details)"
    );
}

#[tokio::test]
async fn a_runaway_typed_function_hits_the_deadline_and_the_next_call_succeeds() {
    let (_d, core) = sink("[limits]\ntimeout = \"300ms\"").await;
    let err = call(&core, "spin", json!({})).await.unwrap_err();
    assert!(
        matches!(err.kind(), CallErrorKind::Timeout { after } if err.tool() == "spin" && *after == Duration::from_millis(300)),
        "{err:?}"
    );
    assert_eq!(
        result(&core, "spin", json!({"iterations": 1000})).await,
        json!(1000)
    );
}

#[tokio::test]
async fn a_runaway_typed_function_runs_out_of_fuel_and_the_next_call_succeeds() {
    let (_d, core) = sink("[limits]\ntimeout = \"30s\"\nfuel = 50_000_000").await;
    let err = call(&core, "spin", json!({})).await.unwrap_err();
    assert!(
        matches!(
            err.kind(),
            CallErrorKind::FuelExhausted { fuel: 50_000_000 }
        ),
        "{err:?}"
    );
    assert_eq!(
        result(&core, "spin", json!({"iterations": 1000})).await,
        json!(1000)
    );
}

#[tokio::test]
async fn a_trapping_typed_function_reports_its_panic() {
    let (_d, core) = sink("").await;
    let err = call(&core, "crash", json!({"message": "boom at line 9"}))
        .await
        .unwrap_err();
    assert_eq!(err.tool(), "crash");
    match err.kind() {
        CallErrorKind::Trap { message } => {
            assert!(message.contains("boom at line 9"), "{message}");
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    assert_eq!(
        result(&core, "divide", json!({"a": 9, "b": 3})).await,
        json!(3)
    );
}

#[tokio::test]
async fn typed_results_are_bounded_by_max_output_and_by_what_the_host_lifts() {
    let (_d, core) = sink("[limits]\nmax-output = \"64 KiB\"").await;
    assert_eq!(
        result(&core, "big", json!({"n": 3})).await,
        json!([7, 7, 7])
    );
    let err = call(&core, "big", json!({"n": 100_000})).await.unwrap_err();
    assert!(
        matches!(err.kind(), CallErrorKind::OutputTooLarge { limit: 65536, size } if *size > 65536),
        "{err:?}"
    );
    // 8M one-byte elements would cost the host ~320 MB as component values:
    // the per-transfer lifting budget (here the call's 64 MiB of memory,
    // not wasmtime's default 128 MiB) refuses it before allocating, and
    // the error names it.
    let err = call(&core, "big", json!({"n": 8_000_000}))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.kind(),
            CallErrorKind::ResourceExhausted { limit, .. } if *limit == 64 << 20
        ),
        "expected the lift to be refused, got {err:?}"
    );
    assert!(
        err.to_string()
            .contains("host memory for one transfer from the guest"),
        "{err}"
    );
    assert_eq!(result(&core, "big", json!({"n": 1})).await, json!([7]));
}

/// A review's case: a typed result's JSON was bounded by its text
/// (`max-output`), but a list of records builds a map node of 632 bytes a
/// record, a hundred times its text. The JSON is charged to the call's
/// memory while it is made: a result whose JSON would not fit is refused
/// before it is built, one that fits is served.
#[tokio::test]
async fn a_typed_results_json_is_charged_to_the_calls_memory() {
    let (_d, core) = sink("[limits]\nmemory = \"4 MiB\"").await;
    let items = |n: usize| {
        (0..n)
            .map(|i| json!({"id": i % 1000, "name": "", "tags": []}))
            .collect::<Vec<_>>()
    };
    let out = result(&core, "compound_echo-items", json!({"items": items(100)})).await;
    assert_eq!(out.as_array().unwrap().len(), 100);
    // 150 KB of text, about 7 MB as JSON.
    let err = call(&core, "compound_echo-items", json!({"items": items(5_000)}))
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), CallErrorKind::MemoryExhausted { limit } if *limit == 4 << 20),
        "{err:?}"
    );
    assert_eq!(result(&core, "big", json!({"n": 1})).await, json!([7]));
}

#[tokio::test]
async fn typed_components_get_exactly_the_granted_wasi() {
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("note.txt"), "granted text\n").unwrap();
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), "TOP SECRET").unwrap();
    let grants = format!(
        "[[fs]]\nguest = \"/data\"\nhost = \"{}\"\nmode = \"ro\"\n\n[env]\nset = {{ GREETING = \"hi\" }}\n",
        data.path().display()
    );
    let (_d, core) = sink(&grants).await;
    assert_eq!(
        result(&core, "read-file", json!({"path": "/data/note.txt"})).await,
        json!("granted text\n")
    );
    for path in [
        secret.path().display().to_string(),
        "/data/../note.txt".into(),
        "/etc/passwd".into(),
    ] {
        let err = call(&core, "read-file", json!({"path": path}))
            .await
            .unwrap_err();
        match err.kind() {
            CallErrorKind::ToolFailed { message } => {
                assert!(message.starts_with("cannot read"), "{message}");
                assert!(!message.contains("SECRET"));
            }
            other => panic!("{path}: expected a refusal, got {other:?}"),
        }
    }
    assert_eq!(
        result(&core, "get-env", json!({"name": "GREETING"})).await,
        json!("hi")
    );
    assert_eq!(
        result(&core, "get-env", json!({"name": "HOME"})).await,
        json!(null)
    );

    // Without grants, nothing.
    let (_d, bare) = sink("").await;
    assert!(
        call(&bare, "read-file", json!({"path": "/data/note.txt"}))
            .await
            .is_err()
    );
    assert_eq!(
        result(&bare, "get-env", json!({"name": "GREETING"})).await,
        json!(null)
    );
}

/// Write the component `wat` into `d` as `NAME.wasm`, with a manifest
/// pinning its digest and `extra` after it (`[limits]`, say).
fn add_wat(d: &ToolDir, name: &str, wat: &str, extra: &str) {
    d.add_bytes(
        name,
        &wat::parse_str(wat).expect("fixture WAT parses"),
        extra,
    );
}

/// Load a WAT component as tool `bad` next to echo; its single load error.
async fn load_error(wat: &str) -> String {
    load_error_with(wat, "").await
}

/// [`load_error`] with `extra` in the component's manifest.
async fn load_error_with(wat: &str, extra: &str) -> String {
    let d = ToolDir::new();
    d.add("echo", "echo", "");
    add_wat(&d, "bad", wat, extra);
    let core = Core::builder()
        .config(test_config())
        .source(Scope::default(), d.path())
        .build()
        .await
        .unwrap();
    assert_eq!(
        call(&core, "echo", json!({"text": "ok"}))
            .await
            .unwrap()
            .text(),
        "ok",
        "the other tools still load"
    );
    let errors = core.load_errors();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    errors[0].to_string()
}

#[tokio::test]
async fn a_component_with_gc_subtypes_is_refused_at_load_before_it_can_abort_the_host() {
    // GHSA-rc4p-x33f-vpr2: a `call_indirect` through a non-final function
    // type aborts a wasmtime 48.0.8 host built without the `gc` feature.
    // The GC proposal is off, so such a module never compiles, never runs.
    let e = load_error(
        r#"(component
            (core module $m
              (type $t (sub (func)))
              (table 1 funcref)
              (func $f (type $t))
              (elem (i32.const 0) func $f)
              (func (export "run") i32.const 0 call_indirect (type $t)))
            (core instance (instantiate $m)))"#,
    )
    .await;
    assert!(e.contains("bad.toml"), "{e}");
    assert!(e.to_lowercase().contains("gc"), "{e}");
}

#[tokio::test]
async fn a_component_exporting_nothing_is_not_a_tool() {
    let e = load_error("(component)").await;
    assert!(
        e.contains("bad.toml") && e.contains("bad.wasm is not a tool component"),
        "{e}"
    );
    assert!(
        e.contains("it exports neither toolhost's world (the `toolhost:tool/tool@0.1.0` interface) nor any plain WIT function"),
        "{e}"
    );
}

#[tokio::test]
async fn resource_handles_are_refused_at_load() {
    let e = load_error(
        r#"(component
            (core module $m (func (export "f") (param i32)))
            (core instance $i (instantiate $m))
            (type $r (resource (rep i32)))
            (export $r2 "counter" (type $r))
            (func $f (param "c" (own $r2)) (canon lift (core func $i "f")))
            (export "consume" (func $f))
        )"#,
    )
    .await;
    assert!(
        e.ends_with(
            "bad.wasm exports typed WIT functions toolhost cannot serve: function `consume` cannot be a tool: \
             parameter `c`: a resource handle cannot be passed as JSON: toolhost serves only functions \
             whose parameters and results are plain data"
        ),
        "{e}"
    );
}

#[tokio::test]
async fn types_nested_too_deep_are_refused_at_load() {
    let mut types = String::from("(type $t0 (list u8))\n");
    for i in 1..40 {
        types.push_str(&format!("(type $t{i} (list $t{}))\n", i - 1));
    }
    let e = load_error(&format!(
        r#"(component
            (core module $m
                (memory (export "mem") 1)
                (func (export "realloc") (param i32 i32 i32 i32) (result i32) i32.const 0)
                (func (export "f") (param i32 i32)))
            (core instance $i (instantiate $m))
            {types}
            (func $f (param "x" $t39) (canon lift (core func $i "f") (memory $i "mem") (realloc (func $i "realloc"))))
            (export "deep" (func $f))
        )"#
    ))
    .await;
    assert!(
        e.contains("function `deep` cannot be a tool: parameter `x` > list element"),
        "{e}"
    );
    assert!(
        e.ends_with("types nest more than 32 levels deep; toolhost refuses deeper types"),
        "{e}"
    );
}

#[tokio::test]
async fn a_typed_component_importing_what_the_host_lacks_is_refused() {
    let e = load_error(
        r#"(component
            (import "acme:secret/vault@1.0.0" (instance $v (export "get" (func (result u32)))))
            (core func $get (canon lower (func $v "get")))
            (core module $m
                (import "v" "get" (func (result i32)))
                (func (export "f") (result i32) call 0))
            (core instance $vi (export "get" (func $get)))
            (core instance $i (instantiate $m (with "v" (instance $vi))))
            (func $f (result u32) (canon lift (core func $i "f")))
            (export "peek" (func $f))
        )"#,
    )
    .await;
    assert!(
        e.contains("exports typed WIT functions toolhost cannot serve: it cannot be linked"),
        "{e}"
    );
    assert!(e.contains("acme:secret/vault@1.0.0"), "{e}");
}

/// SECURITY M1: a component with four memories a call, asking for 64 calls
/// at once, must not take every memory permit of the pool. Before the fix
/// its calls (bounded only by a share of the *slots*) held all 16 memory
/// permits of an 8-instance pool, and `echo` (1 s timeout) waited for one
/// until its deadline; now they hold at most half, and echo runs at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_with_many_memories_cannot_take_every_memory_permit() {
    let d = ToolDir::new();
    d.add("echo", "echo", "[limits]\ntimeout = \"1s\"\n");
    add_wat(
        &d,
        "heavy",
        // Four core instances of one memory each (the pool allows one
        // memory per core instance, four per component).
        r#"(component
            (core module $a (memory 1))
            (core module $m
                (memory 1)
                (func (export "spin") (result i32) (loop $l (br $l)) i32.const 0))
            (core instance (instantiate $a))
            (core instance (instantiate $a))
            (core instance (instantiate $a))
            (core instance $i (instantiate $m))
            (func $spin (result u32) (canon lift (core func $i "spin")))
            (export "spin" (func $spin)))"#,
        "[limits]\ntimeout = \"30s\"\nmax-concurrency = 64\n",
    );
    let core = Core::builder()
        .config(test_config().with_max_instances(8))
        .source(Scope::default(), d.path())
        .build()
        .await
        .unwrap();
    assert!(core.load_errors().is_empty(), "{:#?}", core.load_errors());
    // Eight runaway calls: before the fix, four of them ran (four of the
    // eight slots) and held all sixteen memory permits.
    let spinning: Vec<_> = (0..8)
        .map(|_| {
            let core = core.clone();
            tokio::spawn(async move { call(&core, "spin", json!({})).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let echoed = call(&core, "echo", json!({"text": "still served"})).await;
    for s in &spinning {
        s.abort();
    }
    assert_eq!(
        echoed.expect("echo gets a memory permit").text(),
        "still served"
    );
}

/// A guest's tables are memory it can make resident (`table.fill`), so a
/// call's table growth is charged to its memory limit like its linear
/// memory (found by the review of the automatic pool: before, 160 KiB a
/// table, eight a sandbox, were charged nowhere). Growing a table by
/// 19,000 elements (152 KiB) fails inside a 128 KiB limit, which the
/// call's one 64 KiB page of linear memory leaves 64 KiB of, and succeeds
/// inside 1 MiB.
#[tokio::test]
async fn a_calls_tables_count_against_its_memory_limit() {
    let wat = r#"(component
        (core module $m
            (memory 1)
            (table $t 1 20000 funcref)
            (func (export "grow") (result i32)
                (table.grow $t (ref.null func) (i32.const 19000))))
        (core instance $i (instantiate $m))
        (func $grow (result s32) (canon lift (core func $i "grow")))
        (export "grow" (func $grow)))"#;
    for (limit, grown) in [("128 KiB", json!(-1)), ("1 MiB", json!(1))] {
        let d = ToolDir::new();
        add_wat(
            &d,
            "tables",
            wat,
            &format!("[limits]\nmemory = \"{limit}\"\n"),
        );
        let core = core(d.path()).await;
        assert_eq!(
            result(&core, "grow", json!({})).await,
            grown,
            "limit {limit}"
        );
    }
}

/// A review's case: a guest's own resources (`resource.new`) take host
/// memory in its store's handle tables, outside its memory limit, and
/// wasmtime allows 100,000 of them. A call holds at most four times its
/// `handles` (16,384 by default); past that, it traps.
#[tokio::test]
async fn a_guests_own_resources_are_bounded_by_its_handles() {
    let wat = r#"(component
        (type $r (resource (rep i32)))
        (core func $new (canon resource.new $r))
        (core module $m
            (import "" "new" (func $new (param i32) (result i32)))
            (func (export "make") (param $n i32) (result i32)
                (local $i i32)
                (block $done
                    (loop $next
                        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
                        (drop (call $new (local.get $i)))
                        (local.set $i (i32.add (local.get $i) (i32.const 1)))
                        (br $next)))
                (local.get $i)))
        (core instance $i (instantiate $m (with "" (instance (export "new" (func $new))))))
        (func $make (param "n" u32) (result u32) (canon lift (core func $i "make")))
        (export "make" (func $make)))"#;
    let d = ToolDir::new();
    add_wat(&d, "resources", wat, "");
    let core = core(d.path()).await;
    assert_eq!(
        result(&core, "make", json!({"n": 10_000})).await,
        json!(10_000)
    );
    let e = call(&core, "make", json!({"n": 50_000})).await.unwrap_err();
    assert!(matches!(e.kind(), CallErrorKind::Trap { .. }), "{e:#}");
    // Each call's store is its own: the next call starts from none.
    assert_eq!(
        result(&core, "make", json!({"n": 10_000})).await,
        json!(10_000)
    );
}

/// A component whose tables alone start over its memory limit would fail
/// every call once instantiated (its tables are charged from their
/// initial size on): it is refused at load, saying why.
#[tokio::test]
async fn a_component_whose_tables_start_over_its_memory_limit_is_refused_at_load() {
    let e = load_error_with(
        r#"(component
            (core module $m
                (table 20000 funcref)
                (func (export "one") (result i32) i32.const 1))
            (core instance $i (instantiate $m))
            (func $one (result s32) (canon lift (core func $i "one")))
            (export "one" (func $one)))"#,
        "[limits]\nmemory = \"128 KiB\"\n",
    )
    .await;
    assert!(
        e.contains("bad.toml") && e.contains("tables' initial 156 KiB"),
        "{e}"
    );
}

/// A component whose one export `NAME` loops for ever.
fn spinner(d: &ToolDir, name: &str) {
    add_wat(
        d,
        name,
        &format!(
            r#"(component
                (core module $m
                    (memory 1)
                    (func (export "spin") (result i32) (loop $l (br $l)) i32.const 0))
                (core instance $i (instantiate $m))
                (func $spin (result u32) (canon lift (core func $i "spin")))
                (export "{name}" (func $spin)))"#
        ),
        "[limits]\ntimeout = \"30s\"\nmax-concurrency = 64\n",
    );
}

/// The config of [`fill_the_pool`]'s core: an 8-sandbox pool, and no
/// compile cache, so that no record of a `describe` answer from an earlier
/// run answers for a component these tests need asked (or answered by its
/// previous load alone).
fn full_pool_config() -> toolhost::HostConfig {
    test_config().with_max_instances(8).with_cache_dir(None)
}

/// Reconfigure `core` over `d` with `config`; what it answered, and the
/// tools the default scope lists after.
async fn reconfigure_and_list(
    core: &Core,
    config: toolhost::HostConfig,
    d: &ToolDir,
) -> (toolhost::Reconfigured, Vec<String>) {
    let r = core
        .reconfigure(
            config,
            vec![toolhost::Source::new(Scope::default(), d.path())],
        )
        .await;
    let listed = core
        .tools(&Scope::default())
        .iter()
        .map(|t| t.name.to_string())
        .collect();
    (r, listed)
}

/// A core over `d` plus three runaway components, and twelve runaway calls
/// (four per component) that hold all eight of its sandboxes; abort them
/// to end the test.
async fn fill_the_pool(
    d: &ToolDir,
) -> (
    Core,
    Vec<tokio::task::JoinHandle<Result<toolhost::ToolOutput, CallError>>>,
) {
    for name in ["spin-a", "spin-b", "spin-c"] {
        spinner(d, name);
    }
    let core = Core::builder()
        .config(full_pool_config())
        .source(Scope::default(), d.path())
        .build()
        .await
        .unwrap();
    assert!(core.load_errors().is_empty(), "{:#?}", core.load_errors());
    let spinning = ["spin-a", "spin-b", "spin-c"]
        .iter()
        .flat_map(|t| std::iter::repeat_n(*t, 4))
        .map(|t| {
            let core = core.clone();
            let req = toolhost::CallRequest::new(Scope::default(), t, None);
            tokio::spawn(async move { core.call(req).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    (core, spinning)
}

/// A reload that must prepare a component again (the operator's caps
/// changed) used to ask it to `describe` again, which takes a pool slot:
/// under a full pool that timed out and the tool dropped out of the
/// catalog until the next reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_under_a_full_pool_keeps_a_component_prepared_again() {
    let d = ToolDir::new();
    d.add("echo", "echo", "[limits]\ntimeout = \"1s\"\n");
    let (core, spinning) = fill_the_pool(&d).await;
    let mut caps = toolhost::caps::Caps::default();
    caps.fs.max_open = Some(100);
    let (r, listed) = reconfigure_and_list(&core, full_pool_config().with_caps(caps), &d).await;
    for s in &spinning {
        s.abort();
    }
    assert!(r.load_errors.is_empty(), "{:#?}", r.load_errors);
    assert!(listed.iter().any(|n| n == "echo"), "{listed:?}");
}

/// A component added by a reload must `describe` itself, which takes a
/// sandbox. Under a full pool it used to wait past its deadline and fail
/// to load; `describe` now has a sandbox of its own beside the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_added_under_a_full_pool_still_loads() {
    let d = ToolDir::new();
    let (core, spinning) = fill_the_pool(&d).await;
    // The pool is full: a call of another component waits past its 1 s.
    d.add("echo", "echo", "[limits]\ntimeout = \"1s\"\n");
    let (r, listed) = reconfigure_and_list(&core, full_pool_config(), &d).await;
    let call = core
        .call(toolhost::CallRequest::new(
            Scope::default(),
            "echo",
            json!({"text": "queued"}).as_object().cloned(),
        ))
        .await;
    for s in &spinning {
        s.abort();
    }
    assert!(r.load_errors.is_empty(), "{:#?}", r.load_errors);
    assert!(listed.iter().any(|n| n == "echo"), "{listed:?}");
    // `describe`'s sandbox is for `describe` only: calls still share the
    // eight, so this one waited for them and timed out.
    let err = call.expect_err("the pool is full for calls");
    assert!(
        err.to_string().contains("timed out") || err.to_string().contains("within"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scope_with_many_components_cannot_fill_the_pool() {
    // The attacker's scope serves three runaway components, each within
    // its own share of an 8-sandbox pool (half of it); together they
    // would hold every sandbox. The victim's scope serves `echo`.
    let attacker = ToolDir::new();
    for name in ["spin-a", "spin-b", "spin-c"] {
        spinner(&attacker, name);
    }
    let victim = ToolDir::new();
    victim.add("echo", "echo", "[limits]\ntimeout = \"1s\"\n");
    let core = Core::builder()
        .config(test_config().with_max_instances(8))
        .source(Scope::new("attacker"), attacker.path())
        .source(Scope::new("victim"), victim.path())
        .build()
        .await
        .unwrap();
    assert!(core.load_errors().is_empty(), "{:#?}", core.load_errors());
    let in_scope = |scope: &str, tool: &str, args: Value| {
        let core = core.clone();
        let req = toolhost::CallRequest::new(Scope::new(scope), tool, args.as_object().cloned());
        async move { core.call(req).await }
    };
    let spinning: Vec<_> = ["spin-a", "spin-b", "spin-c"]
        .iter()
        .flat_map(|t| std::iter::repeat_n(*t, 4))
        .map(|t| tokio::spawn(in_scope("attacker", t, json!({}))))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Before the scope's share, the twelve runaways took all eight
    // sandboxes and `echo` waited past its 1 s deadline.
    let echoed = in_scope("victim", "echo", json!({"text": "still served"})).await;
    for s in &spinning {
        s.abort();
    }
    assert_eq!(echoed.expect("echo gets a sandbox").text(), "still served");
}
