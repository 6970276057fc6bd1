// @ts-check
/**
 * Tools as JavaScript functions with schema-checked arguments: registration,
 * argument validation (see schema.js), results as content blocks and
 * structured JSON, and the component's `describe` / `call` exports in the
 * shapes componentize-js expects (records with camelCase fields, variants as
 * `{ tag, val }`, a thrown value for `result`'s error case).
 *
 * Pure JavaScript: the host's imports are handed in by toolhost.js, so this
 * module runs under Node for tests.
 */

import { ArgumentError, parse, toJsonSchema } from "./schema.js";

/** A failed call, reported to the client as a tool error (`isError: true`). */
export class ToolError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = "ToolError";
  }
}

/** The arguments decoded but make no sense to the tool. */
export class InvalidArguments extends ToolError {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = "InvalidArguments";
  }
}

/** @typedef {{ tag: "text", val: string } | { tag: "image" | "audio", val: { data: Uint8Array, mimeType: string } } | { tag: "resource", val: { uri: string, mimeType?: string, contents: { tag: "text", val: string } | { tag: "blob", val: Uint8Array } } }} Content */

/** A text block. @param {string} s @returns {Content} */
export const text = (s) => ({ tag: "text", val: String(s) });
/** An image block. @param {Uint8Array} data @param {string} mimeType @returns {Content} */
export const image = (data, mimeType) => ({ tag: "image", val: { data: Uint8Array.from(data), mimeType } });
/** An audio block. @param {Uint8Array} data @param {string} mimeType @returns {Content} */
export const audio = (data, mimeType) => ({ tag: "audio", val: { data: Uint8Array.from(data), mimeType } });
/**
 * An embedded resource: text (a string) or a blob (bytes).
 * @param {string} uri @param {string | Uint8Array} contents @param {string} [mimeType] @returns {Content}
 */
export const resource = (uri, contents, mimeType) => ({
  tag: "resource",
  val: {
    uri,
    mimeType,
    contents: typeof contents === "string" ? { tag: "text", val: contents } : { tag: "blob", val: Uint8Array.from(contents) },
  },
});

/** A free-form result: content blocks plus optional structured JSON (an object). */
export class Output {
  /** @param {Content[]} [content] @param {Record<string, any>} [structured] */
  constructor(content = [], structured = undefined) {
    this.content = content;
    this.structured = structured;
  }
}

/**
 * @typedef {object} ToolSpec
 * @property {string} name  unique within a host scope; [A-Za-z0-9_.-]{1,64}
 * @property {string} description
 * @property {string} [title]
 * @property {import("./schema.js").Schema | Record<string, any>} [input]  the arguments (an object schema); default: no arguments
 * @property {import("./schema.js").Schema | Record<string, any>} [output]  the structured result's schema, if the tool returns one
 * @property {{ readOnly?: boolean, destructive?: boolean, idempotent?: boolean, openWorld?: boolean }} [annotations]
 * @property {(args: any) => string | Output | Content | Content[] | Record<string, any>} run
 */

const EMPTY = { type: "object", properties: {}, additionalProperties: false };

/** The tools one component offers. */
export class Toolbox {
  constructor() {
    /** @type {Map<string, ToolSpec & { inputSchema: Record<string, any>, outputSchema?: Record<string, any> }>} */
    this.tools = new Map();
  }

  /** Add a tool. @param {ToolSpec} spec @returns {this} */
  tool(spec) {
    if (this.tools.has(spec.name)) throw new Error(`tool \`${spec.name}\` is defined twice`);
    const inputSchema = spec.input ? toJsonSchema(spec.input) : EMPTY;
    if (inputSchema.type !== "object") throw new Error(`tool \`${spec.name}\`: its input schema must have "type": "object"`);
    this.tools.set(spec.name, {
      ...spec,
      inputSchema,
      outputSchema: spec.output ? toJsonSchema(spec.output) : undefined,
    });
    return this;
  }

  /**
   * Run tool `name` on `args` (JSON text or a value). Returns an `Output`;
   * throws `InvalidArguments` (every argument error, by JSON Pointer),
   * `ToolError`, or whatever the tool threw.
   * @param {string} name @param {string | any} args @returns {Output}
   */
  call(name, args) {
    const tool = this.tools.get(name);
    if (!tool) throw new UnknownTool(name);
    let value = args;
    if (typeof args === "string") {
      try {
        value = JSON.parse(args);
      } catch (e) {
        throw new InvalidArguments(`arguments are not JSON: ${/** @type {Error} */ (e).message}`);
      }
    }
    let decoded;
    try {
      decoded = parse(tool.inputSchema, value);
    } catch (e) {
      if (e instanceof ArgumentError) throw new InvalidArguments(`arguments of \`${name}\`: ${e.message}`);
      throw e;
    }
    return toOutput(tool.run(decoded), tool.outputSchema !== undefined);
  }

  /**
   * The `toolhost:tool/tool` export for componentize-js:
   * `export const tool = tools.export();` in the component's main module.
   */
  export() {
    return {
      describe: () =>
        [...this.tools.values()].map((t) => ({
          name: t.name,
          title: t.title,
          description: t.description,
          inputSchema: JSON.stringify(t.inputSchema),
          outputSchema: t.outputSchema ? JSON.stringify(t.outputSchema) : undefined,
          annotations: {
            title: t.title,
            readOnly: t.annotations?.readOnly,
            destructive: t.annotations?.destructive ?? (t.annotations?.readOnly ? false : undefined),
            idempotent: t.annotations?.idempotent,
            openWorld: t.annotations?.openWorld,
          },
        })),
      /** @param {string} name @param {string} args */
      call: (name, args) => {
        let out;
        try {
          out = this.call(name, args);
        } catch (e) {
          // Out of linear memory (the manifest's `memory` limit): SpiderMonkey
          // throws the bare string "out of memory". Let it escape as is, so the
          // call traps and the host reports the limit, not a tool error.
          if (e === "out of memory") throw e;
          throw witError(e);
        }
        return {
          content: out.content,
          structured: out.structured === undefined ? undefined : JSON.stringify(out.structured),
        };
      },
    };
  }
}

/** No tool of that name here. */
export class UnknownTool extends ToolError {
  /** @param {string} name */
  constructor(name) {
    super(name);
    this.name = "UnknownTool";
  }
}

/** The `tool-error` variant for a thrown value. @param {any} e */
function witError(e) {
  if (e instanceof UnknownTool) return { tag: "unknown-tool", val: e.message };
  if (e instanceof InvalidArguments) return { tag: "invalid-arguments", val: e.message };
  if (e instanceof ToolError) return { tag: "failed", val: e.message };
  // A bug in the tool: report it rather than trap.
  const msg = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  return { tag: "failed", val: msg };
}

/** @param {any} v @param {boolean} structured @returns {Output} */
function toOutput(v, structured) {
  if (v instanceof Output) return v;
  if (typeof v === "string") return new Output([text(v)]);
  if (isContent(v)) return new Output([v]);
  if (Array.isArray(v) && v.length && v.every(isContent)) return new Output(v);
  const body = JSON.stringify(v ?? null);
  if (structured || (v !== null && typeof v === "object" && !Array.isArray(v))) {
    return new Output([text(body)], v);
  }
  return new Output([text(body)]);
}

/** @param {any} v */
function isContent(v) {
  return v !== null && typeof v === "object" && ["text", "image", "audio", "resource"].includes(v.tag) && "val" in v && Object.keys(v).length === 2;
}
