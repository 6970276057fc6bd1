// Unit tests of the JavaScript guest SDK under Node (no component): schemas
// from the builder, validation with precise errors, results, the export's
// shapes. Run: node --test guest-sdk/js/test/
import assert from "node:assert/strict";
import { test } from "node:test";
import { parse, s } from "../schema.js";
import { InvalidArguments, Output, ToolError, Toolbox, image, text } from "../toolbox.js";

const tools = new Toolbox()
  .tool({
    name: "sum",
    description: "Sum.",
    input: s.object({
      items: s.array(s.integer(), { minItems: 1 }).describe("Numbers."),
      scale: s.number().default(2),
      mode: s.enum(["fast", "exact"]).optional(),
      opt: s.object({ x: s.string({ pattern: "^[a-z]+$" }) }).nullable().optional(),
    }),
    output: s.object({ sum: s.number() }),
    annotations: { readOnly: true },
    run: ({ items, scale }) => ({ sum: items.reduce((a, b) => a + b, 0) * scale }),
  })
  .tool({ name: "blocks", description: "b", run: () => new Output([text("a"), image(new Uint8Array([1, 2]), "image/png")], { k: 1 }) })
  .tool({ name: "fails", description: "f", run: () => { throw new ToolError("nope"); } })
  .tool({ name: "bug", description: "b", run: () => { throw new RangeError("oops"); } })
  .tool({ name: "oom", description: "o", run: () => { throw "out of memory"; } })
  .tool({ name: "picky", description: "p", run: () => { throw new InvalidArguments("bad combination"); } });

test("the builder emits JSON Schema", () => {
  const [def] = tools.export().describe();
  assert.deepEqual(JSON.parse(def.inputSchema), {
    type: "object",
    properties: {
      items: { type: "array", items: { type: "integer" }, minItems: 1, description: "Numbers." },
      scale: { type: "number", default: 2 },
      mode: { type: "string", enum: ["fast", "exact"] },
      opt: {
        anyOf: [
          { type: "object", properties: { x: { type: "string", pattern: "^[a-z]+$" } }, required: ["x"], additionalProperties: false },
          { type: "null" },
        ],
      },
    },
    required: ["items"],
    additionalProperties: false,
  });
  assert.deepEqual(JSON.parse(def.outputSchema).required, ["sum"]);
  assert.deepEqual(def.annotations, { title: undefined, readOnly: true, destructive: false, idempotent: undefined, openWorld: undefined });
});

test("validation fills defaults and reports every error by JSON Pointer", () => {
  assert.deepEqual(tools.call("sum", '{"items":[1,2]}').structured, { sum: 6 });
  assert.throws(
    () => tools.call("sum", { items: [1, 2, "x", 2.5], mode: "slow", opt: { x: "A1" }, extra: true }),
    (e) =>
      e instanceof InvalidArguments &&
      e.message ===
        'arguments of `sum`: /items/2: expected integer, got string "x"; /items/3: expected integer, got number 2.5; ' +
          '/mode: expected one of "fast", "exact", got string "slow"; /opt/x: must match the pattern "^[a-z]+$"; ' +
          "/extra: unknown field (the fields are: items, scale, mode, opt)",
  );
  assert.throws(() => tools.call("sum", {}), /\/items: missing required field of type array/);
  assert.throws(() => tools.call("sum", "{"), /arguments are not JSON/);
  assert.equal(parse({ type: "object", properties: { a: { type: ["string", "null"] } } }, { a: null }).a, null);
});

test("the export maps results and errors to the WIT shapes", () => {
  const t = tools.export();
  const out = t.call("blocks", "{}");
  assert.deepEqual(out.content[0], { tag: "text", val: "a" });
  assert.equal(out.content[1].tag, "image");
  assert.equal(out.structured, '{"k":1}');
  const err = (name) => {
    try {
      t.call(name, "{}");
    } catch (e) {
      return e;
    }
    assert.fail(`${name} did not throw`);
  };
  assert.deepEqual(err("fails"), { tag: "failed", val: "nope" });
  assert.deepEqual(err("bug"), { tag: "failed", val: "RangeError: oops" });
  assert.deepEqual(err("picky"), { tag: "invalid-arguments", val: "bad combination" });
  assert.deepEqual(err("nope"), { tag: "unknown-tool", val: "nope" });
  // SpiderMonkey's out-of-memory escapes as is: the call traps, and the host
  // reports the manifest's memory limit.
  assert.equal(err("oom"), "out of memory");
});
