// `js-hostile`: JavaScript tools that misbehave on purpose, the test fixtures
// proving that SpiderMonkey inside a component is held by the same fuel,
// deadline and memory limits as a Rust tool. Never deploy it: tests write its
// manifest themselves.
import { Toolbox, cancelled, s } from "../../guest-sdk/js/toolhost.js";

const tools = new Toolbox()
  .tool({
    name: "js_spin",
    description: "Loop forever, never checking for cancellation.",
    run: () => {
      let n = 0;
      for (;;) n++;
    },
  })
  .tool({
    name: "js_spin_checked",
    description: 'Loop until the call is cancelled, then return "cancelled".',
    run: () => {
      let n = 0;
      while (!cancelled()) for (let i = 0; i < 10000; i++) n++;
      return "cancelled";
    },
  })
  .tool({
    name: "js_alloc",
    description: 'Allocate `mib` MiB in 1 MiB arrays, touching every page, then return "allocated N MiB".',
    input: s.object({ mib: s.integer({ minimum: 0 }) }),
    run: ({ mib }) => {
      const blocks = [];
      for (let i = 0; i < mib; i++) blocks.push(new Uint8Array(1 << 20).fill(120));
      return `allocated ${blocks.length} MiB`;
    },
  })
  .tool({
    name: "js_throw",
    description: "Throw an uncaught error (a bug in the tool): reported as a tool error.",
    input: s.object({ message: s.string() }),
    run: ({ message }) => {
      throw new TypeError(message);
    },
  });

export const tool = tools.export();
