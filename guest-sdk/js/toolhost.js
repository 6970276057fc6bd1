// @ts-check
/**
 * Write toolhost tools in JavaScript: schema-checked functions in, WASI
 * components out (built with componentize-js; see ../LANGUAGES.md).
 *
 *   import { Toolbox, s } from "toolhost-guest";
 *   const tools = new Toolbox().tool({
 *     name: "shout",
 *     description: "Upper-case a text.",
 *     input: s.object({ text: s.string().describe("Text to shout.") }),
 *     annotations: { readOnly: true },
 *     run: ({ text }) => text.toUpperCase(),
 *   });
 *   export const tool = tools.export();
 *
 * This module adds the host's imports (`log`, `progress`, `cancelled`,
 * `requestClient`) to the pure parts (toolbox.js, schema.js); it owns the
 * guest half of the `toolhost:tool` contract for JavaScript and knows nothing
 * of the host's policies, limits or transports.
 */

import * as host from "toolhost:tool/host@0.1.0";
import { ToolError } from "./toolbox.js";

export { Schema, s, parse, ArgumentError, toJsonSchema } from "./schema.js";
export { Toolbox, ToolError, InvalidArguments, UnknownTool, Output, text, image, audio, resource } from "./toolbox.js";

/** @typedef {"debug" | "info" | "notice" | "warning" | "error" | "critical" | "alert" | "emergency"} Level */

/** Send a log message to the caller (MCP `notifications/message`). @param {Level} level @param {string} message */
export function log(level, message) {
  host.log(level, String(message));
}

/**
 * Report progress of the current call (MCP `notifications/progress`).
 * @param {number} done @param {number} [total] @param {string} [message]
 */
export function progress(done, total, message) {
  host.progress(done, total, message);
}

/** Whether the caller has cancelled this call; long loops should poll it. */
export function cancelled() {
  return host.cancelled();
}

/**
 * Ask the calling MCP client (`sampling/createMessage`, `elicitation/create`);
 * needs the manifest's `[client] requests` grant. Throws a `ToolError` with
 * the reason when there is no answer.
 * @param {string} method @param {Record<string, any>} params @returns {Record<string, any>}
 */
export function requestClient(method, params) {
  let answer;
  try {
    answer = host.requestClient(method, JSON.stringify(params));
  } catch (e) {
    const reason = /** @type {any} */ (e)?.payload ?? /** @type {any} */ (e)?.message ?? String(e);
    throw new ToolError(String(reason));
  }
  try {
    return JSON.parse(answer);
  } catch (e) {
    throw new ToolError(`the client's answer to \`${method}\` is not JSON: ${/** @type {Error} */ (e).message}`);
  }
}
