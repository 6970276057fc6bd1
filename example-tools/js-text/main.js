// `js-text`: a richer JavaScript tool: select, sort and page JSON records,
// with a structured result. Shows nested schemas, enums, defaults, bounds,
// optional fields, an output schema, logging and progress. Needs no grants.
import { InvalidArguments, Toolbox, log, progress, s } from "../../guest-sdk/js/toolhost.js";

const Row = s.record(s.any()).describe("One record: an object of any fields.");

const tools = new Toolbox().tool({
  name: "js_table",
  title: "Table query (JavaScript)",
  description: "Filter, sort and page a list of JSON records, keeping only the selected fields.",
  input: s.object({
    rows: s.array(Row, { maxItems: 10000 }).describe("The records."),
    select: s.array(s.string({ minLength: 1 })).optional().describe("Fields to keep (default: all)."),
    where: s
      .object({
        field: s.string({ minLength: 1 }).describe("Field to compare."),
        op: s.enum(["eq", "ne", "lt", "gt", "contains"]).default("eq").describe("Comparison."),
        value: s.union(s.string(), s.number(), s.boolean(), s.null()).describe("Value to compare with."),
      })
      .optional()
      .describe("Keep only the records matching this condition."),
    sort_by: s.string().optional().describe("Field to sort by."),
    descending: s.boolean().default(false),
    limit: s.integer({ minimum: 1, maximum: 1000 }).default(100).describe("At most this many records."),
  }),
  output: s.object({
    rows: s.array(Row),
    matched: s.integer().describe("Records matching `where`, before `limit`."),
  }),
  annotations: { readOnly: true, idempotent: true, openWorld: false },
  run: ({ rows, select, where, sort_by, descending, limit }) => {
    if (select && new Set(select).size !== select.length) throw new InvalidArguments("`select` names a field twice");
    let out = rows;
    if (where) {
      const { field, op, value } = where;
      out = out.filter((r) => {
        const x = r[field];
        switch (op) {
          case "eq": return x === value;
          case "ne": return x !== value;
          case "lt": return x < value;
          case "gt": return x > value;
          default: return typeof x === "string" && x.includes(String(value));
        }
      });
    }
    progress(1, 2, "filtered");
    if (sort_by !== undefined) {
      out = [...out].sort((a, b) => {
        const [x, y] = [a[sort_by], b[sort_by]];
        const c = x === y ? 0 : x === undefined ? 1 : y === undefined ? -1 : x < y ? -1 : 1;
        return descending ? -c : c;
      });
    }
    const matched = out.length;
    out = out.slice(0, limit);
    if (select) out = out.map((r) => Object.fromEntries(select.filter((k) => k in r).map((k) => [k, r[k]])));
    progress(2, 2, "done");
    log("debug", `${matched} of ${rows.length} records matched`);
    return { rows: out, matched };
  },
});

export const tool = tools.export();
