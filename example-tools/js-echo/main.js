// `js-echo`: the JavaScript twin of the Rust `echo` tool (and the benchmark's
// JavaScript case). Built into a component by `make tools` with
// componentize-js; needs no grants.
import { Toolbox, s } from "../../guest-sdk/js/toolhost.js";

const tools = new Toolbox().tool({
  name: "js_echo",
  title: "Echo (JavaScript)",
  description: "Return `text` unchanged. Useful to check that the tool path works end to end.",
  input: s.object({ text: s.string().describe("The text to return, unchanged.") }),
  annotations: { readOnly: true, idempotent: true, openWorld: false },
  run: ({ text }) => text,
});

// componentize-js binds this to the world's `toolhost:tool/tool` export.
export const tool = tools.export();
