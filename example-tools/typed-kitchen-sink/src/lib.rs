//! `typed-kitchen-sink`: a typed-WIT component. It exports plain WIT
//! functions (`wit/kitchen-sink.wit`) instead of toolhost's world, the way
//! other wasm MCP hosts expect tools, and covers every WIT type kind, so the
//! typed loader's schemas and JSON conversions can be tested end to end.
//! `spin`, `crash` and `big` misbehave on purpose, to prove that the limits
//! apply to typed components too.
//!
//! A test fixture: deployed to `build/test-tools/` without a manifest.

use std::hint::black_box;

wit_bindgen::generate!({
    path: "wit",
    world: "kitchen-sink",
});

use exports::toolhost::kitchen_sink::compound::{
    self, Color, Everything, Item, Outcomes, Permissions, Person, Shape,
};
use exports::toolhost::kitchen_sink::scalars;

/// The WIT docs, as the `package-docs` custom section toolhost reads
/// descriptions from (encoded by `build.rs`).
#[used]
#[unsafe(link_section = "package-docs")]
static PACKAGE_DOCS: [u8; include_bytes!(concat!(env!("OUT_DIR"), "/package-docs.bin")).len()] =
    *include_bytes!(concat!(env!("OUT_DIR"), "/package-docs.bin"));

struct KitchenSink;

impl scalars::Guest for KitchenSink {
    #[allow(clippy::too_many_arguments)]
    fn echo_ints(
        a: u8,
        b: u16,
        c: u32,
        d: u64,
        e: i8,
        f: i16,
        g: i32,
        h: i64,
    ) -> (u8, u16, u32, u64, i8, i16, i32, i64) {
        (a, b, c, d, e, f, g, h)
    }

    fn echo_floats(x: f32, y: f64) -> (f32, f64) {
        (x, y)
    }

    fn echo_text(c: char, s: String, b: bool) -> (char, String, bool) {
        (c, s, b)
    }
}

impl compound::Guest for KitchenSink {
    fn echo_bytes(data: Vec<u8>) -> Vec<u8> {
        data
    }
    fn echo_items(items: Vec<Item>) -> Vec<Item> {
        items
    }
    fn echo_tuple(t: (String, u32, bool)) -> (String, u32, bool) {
        t
    }
    fn echo_person(p: Person) -> Person {
        p
    }
    fn echo_shape(s: Shape) -> Shape {
        s
    }
    fn echo_color(c: Color) -> Color {
        c
    }
    fn echo_permissions(p: Permissions) -> Permissions {
        p
    }
    fn echo_option(o: Option<u32>) -> Option<u32> {
        o
    }
    fn echo_nested_option(o: Option<Option<String>>) -> Option<Option<String>> {
        o
    }
    fn echo_outcomes(o: Outcomes) -> Outcomes {
        o
    }
    fn echo_everything(e: Everything) -> Everything {
        e
    }
    fn area(s: Shape) -> f64 {
        match s {
            Shape::Circle(r) => std::f64::consts::PI * r * r,
            Shape::Rect((a, b)) => {
                (f64::from(b.x) - f64::from(a.x)).abs() * (f64::from(b.y) - f64::from(a.y)).abs()
            }
            Shape::Dot => 0.0,
        }
    }
}

impl Guest for KitchenSink {
    fn divide(a: i32, b: i32) -> Result<i32, String> {
        a.checked_div(b)
            .ok_or_else(|| format!("cannot divide {a} by {b}"))
    }

    fn check(ok: bool) -> Result<(), ()> {
        if ok { Ok(()) } else { Err(()) }
    }

    fn validate(code: u16) -> Result<String, (u16, String)> {
        match code {
            0 => Ok("valid".into()),
            c => Err((c, format!("rule {c} failed"))),
        }
    }

    fn noop() {}

    fn crash(message: String) {
        panic!("{message}");
    }

    fn spin(iterations: Option<u64>) -> u64 {
        let mut n = 0u64;
        loop {
            if iterations.is_some_and(|i| n >= i) {
                return n;
            }
            n = black_box(n + 1);
        }
    }

    fn big(n: u32) -> Vec<u8> {
        vec![7; n as usize]
    }

    fn read_file(path: String) -> Result<String, String> {
        std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))
    }

    fn get_env(name: String) -> Option<String> {
        std::env::var(name).ok()
    }

    fn undocumented(x: u8) -> u8 {
        x
    }
}

export!(KitchenSink);
