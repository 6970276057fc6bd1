// @ts-check
/**
 * Argument schemas for toolhost tools in JavaScript: a small zod-like builder
 * (`s.object({ text: s.string().describe("...") })`) that produces plain JSON
 * Schema, and a validator that checks a JSON value against such a schema
 * (built or hand-written), collecting every problem with the JSON Pointer of
 * the value at fault (`/items/2: expected integer, got string "x"`) and filling
 * in declared defaults.
 *
 * The validator covers the keywords the builder emits: type, enum, const,
 * properties, required, additionalProperties, items, anyOf/oneOf, minimum,
 * maximum, exclusiveMinimum, exclusiveMaximum, minLength, maxLength, pattern,
 * minItems, maxItems, default. Other keywords in a hand-written schema are not
 * checked here; the host checks every argument against the full schema before
 * the tool runs anyway.
 *
 * Pure JavaScript: no component bindings, so it runs under Node for tests.
 */

/** @typedef {Record<string, any>} JsonSchema */

/** A schema under construction; `.json` is the JSON Schema it stands for. */
export class Schema {
  /** @param {JsonSchema} json @param {boolean} [optional] */
  constructor(json, optional = false) {
    /** @type {JsonSchema} */
    this.json = json;
    this.isOptional = optional;
  }
  /** A copy with `description` set. @param {string} text */
  describe(text) {
    return new Schema({ ...this.json, description: text }, this.isOptional);
  }
  /** The field may be left out of its object. */
  optional() {
    return new Schema(this.json, true);
  }
  /** The field may be left out; it then takes `value`. @param {any} value */
  default(value) {
    return new Schema({ ...this.json, default: value }, true);
  }
  /** Also accept `null`. */
  nullable() {
    const t = this.json.type;
    if (typeof t === "string" && Object.keys(this.json).every((k) => ["type", "description"].includes(k))) {
      return new Schema({ ...this.json, type: [t, "null"] }, this.isOptional);
    }
    const { description, ...rest } = this.json;
    const out = { anyOf: [rest, { type: "null" }] };
    return new Schema(description ? { ...out, description } : out, this.isOptional);
  }
  toJSON() {
    return this.json;
  }
}

/** @param {Schema | JsonSchema} x @returns {JsonSchema} */
export function toJsonSchema(x) {
  return x instanceof Schema ? x.json : x;
}

/** @param {Record<string, any>} o */
function defined(o) {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
}

/** The schema builder. */
export const s = {
  /** @param {{minLength?: number, maxLength?: number, pattern?: string, format?: string}} [o] */
  string: (o = {}) => new Schema(defined({ type: "string", ...o })),
  /** @param {{minimum?: number, maximum?: number}} [o] */
  integer: (o = {}) => new Schema(defined({ type: "integer", ...o })),
  /** @param {{minimum?: number, maximum?: number, exclusiveMinimum?: number, exclusiveMaximum?: number}} [o] */
  number: (o = {}) => new Schema(defined({ type: "number", ...o })),
  boolean: () => new Schema({ type: "boolean" }),
  null: () => new Schema({ type: "null" }),
  /** Anything JSON. */
  any: () => new Schema({}),
  /** @param {Schema | JsonSchema} item @param {{minItems?: number, maxItems?: number}} [o] */
  array: (item, o = {}) => new Schema(defined({ type: "array", items: toJsonSchema(item), ...o })),
  /**
   * An object with these fields; unknown fields are errors unless
   * `additional` is true or a schema for the extra values.
   * @param {Record<string, Schema | JsonSchema>} shape
   * @param {{additional?: boolean | Schema | JsonSchema}} [o]
   */
  object: (shape, o = {}) => {
    /** @type {Record<string, JsonSchema>} */
    const properties = {};
    const required = [];
    for (const [k, v] of Object.entries(shape)) {
      properties[k] = toJsonSchema(v);
      if (!(v instanceof Schema && v.isOptional)) required.push(k);
    }
    const additional = o.additional === undefined ? false : typeof o.additional === "boolean" ? o.additional : toJsonSchema(o.additional);
    return new Schema(defined({ type: "object", properties, required: required.length ? required : undefined, additionalProperties: additional }));
  },
  /** An object with any keys, each value matching `value`. @param {Schema | JsonSchema} value */
  record: (value) => new Schema({ type: "object", additionalProperties: toJsonSchema(value) }),
  /** One of these values. @param {Array<string | number | boolean | null>} values */
  enum: (values) => {
    const kinds = new Set(values.map(jsonType));
    return new Schema(kinds.size === 1 ? { type: [...kinds][0], enum: values } : { enum: values });
  },
  /** Exactly this value. @param {string | number | boolean | null} value */
  literal: (value) => new Schema({ const: value }),
  /** Any of these. @param {...(Schema | JsonSchema)} options */
  union: (...options) => new Schema({ anyOf: options.map(toJsonSchema) }),
};

/** The JSON type name of a value. @param {any} v */
export function jsonType(v) {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  if (typeof v === "number") return Number.isInteger(v) ? "integer" : "number";
  if (typeof v === "object") return "object";
  return typeof v; // string, boolean
}

/** @param {any} v */
function got(v) {
  const t = jsonType(v);
  if (t === "string" && v.length <= 32) return `string ${JSON.stringify(v)}`;
  if (t === "integer" || t === "number" || t === "boolean") return `${t} ${v}`;
  return t;
}

/** @param {string} path @param {string | number} key */
function ptr(path, key) {
  return `${path}/${String(key).replace(/~/g, "~0").replace(/\//g, "~1")}`;
}

/** @param {string} t @param {any} v */
function isType(t, v) {
  const actual = jsonType(v);
  if (t === "number") return actual === "number" || actual === "integer";
  return actual === t;
}

/** @param {JsonSchema} schema */
function describeType(schema) {
  if (typeof schema.type === "string") return schema.type;
  if (Array.isArray(schema.type)) return schema.type.join(" or ");
  if ("const" in schema) return JSON.stringify(schema.const);
  if (Array.isArray(schema.enum)) return `one of ${schema.enum.map((x) => JSON.stringify(x)).join(", ")}`;
  return "a value matching the schema";
}

/** A problem with the arguments, by JSON Pointer. */
export class ArgumentError extends Error {
  /** @param {Array<[string, string]>} errors */
  constructor(errors) {
    const shown = errors.slice(0, 8).map(([p, m]) => `${p || "/"}: ${m}`);
    if (errors.length > 8) shown.push(`... and ${errors.length - 8} more`);
    super(shown.join("; "));
    this.name = "ArgumentError";
    this.errors = errors;
  }
}

/**
 * Check `value` against `schema`; returns the value with declared defaults
 * filled in, or throws an `ArgumentError` listing every problem.
 * @param {Schema | JsonSchema} schema @param {any} value
 */
export function parse(schema, value) {
  /** @type {Array<[string, string]>} */
  const errors = [];
  const out = check(toJsonSchema(schema), value, "", errors);
  if (errors.length) throw new ArgumentError(errors);
  return out;
}

/**
 * @param {JsonSchema} sc @param {any} v @param {string} path
 * @param {Array<[string, string]>} errors @returns {any}
 */
function check(sc, v, path, errors) {
  if (sc === true || sc === undefined) return v;
  if (sc === false) {
    errors.push([path, "no value is allowed here"]);
    return v;
  }
  if (Array.isArray(sc.anyOf) || Array.isArray(sc.oneOf)) {
    const options = sc.anyOf ?? sc.oneOf;
    // `T | null`: report T's own errors.
    const nonNull = options.filter((/** @type {JsonSchema} */ o) => o.type !== "null");
    if (v === null && nonNull.length < options.length) return v;
    if (nonNull.length === 1) return check(nonNull[0], v, path, errors);
    for (const o of options) {
      /** @type {Array<[string, string]>} */
      const errs = [];
      const out = check(o, v, path, errs);
      if (!errs.length) return out;
    }
    errors.push([path, `expected ${[...new Set(options.map(describeType))].join(" or ")}, got ${got(v)}`]);
    return v;
  }
  if ("const" in sc && JSON.stringify(sc.const) !== JSON.stringify(v)) {
    errors.push([path, `expected ${JSON.stringify(sc.const)}, got ${got(v)}`]);
    return v;
  }
  if (Array.isArray(sc.enum) && !sc.enum.some((/** @type {any} */ x) => x === v)) {
    errors.push([path, `expected one of ${sc.enum.map((/** @type {any} */ x) => JSON.stringify(x)).join(", ")}, got ${got(v)}`]);
    return v;
  }
  if (sc.type !== undefined) {
    const types = Array.isArray(sc.type) ? sc.type : [sc.type];
    if (!types.some((/** @type {string} */ t) => isType(t, v))) {
      errors.push([path, `expected ${types.join(" or ")}, got ${got(v)}`]);
      return v;
    }
  }
  switch (jsonType(v)) {
    case "integer":
    case "number":
      if (sc.minimum !== undefined && v < sc.minimum) errors.push([path, `must be >= ${sc.minimum}, got ${v}`]);
      if (sc.maximum !== undefined && v > sc.maximum) errors.push([path, `must be <= ${sc.maximum}, got ${v}`]);
      if (sc.exclusiveMinimum !== undefined && v <= sc.exclusiveMinimum) errors.push([path, `must be > ${sc.exclusiveMinimum}, got ${v}`]);
      if (sc.exclusiveMaximum !== undefined && v >= sc.exclusiveMaximum) errors.push([path, `must be < ${sc.exclusiveMaximum}, got ${v}`]);
      return v;
    case "string": {
      const n = [...v].length;
      if (sc.minLength !== undefined && n < sc.minLength) errors.push([path, `must be at least ${sc.minLength} characters long, got ${n}`]);
      if (sc.maxLength !== undefined && n > sc.maxLength) errors.push([path, `must be at most ${sc.maxLength} characters long, got ${n}`]);
      if (sc.pattern !== undefined && !new RegExp(sc.pattern, "u").test(v)) errors.push([path, `must match the pattern ${JSON.stringify(sc.pattern)}`]);
      return v;
    }
    case "array": {
      if (sc.minItems !== undefined && v.length < sc.minItems) errors.push([path, `must have at least ${sc.minItems} items, got ${v.length}`]);
      if (sc.maxItems !== undefined && v.length > sc.maxItems) errors.push([path, `must have at most ${sc.maxItems} items, got ${v.length}`]);
      if (sc.items === undefined) return v;
      return v.map((/** @type {any} */ x, /** @type {number} */ i) => check(sc.items, x, ptr(path, i), errors));
    }
    case "object": {
      const props = sc.properties ?? {};
      /** @type {Record<string, any>} */
      const out = {};
      for (const [k, x] of Object.entries(v)) {
        if (Object.prototype.hasOwnProperty.call(props, k)) {
          out[k] = check(props[k], x, ptr(path, k), errors);
        } else if (sc.additionalProperties === false) {
          const names = Object.keys(props).join(", ") || "none";
          errors.push([ptr(path, k), `unknown field (the fields are: ${names})`]);
        } else {
          out[k] = sc.additionalProperties && sc.additionalProperties !== true ? check(sc.additionalProperties, x, ptr(path, k), errors) : x;
        }
      }
      for (const k of sc.required ?? []) {
        if (!Object.prototype.hasOwnProperty.call(v, k)) {
          errors.push([ptr(path, k), `missing required field of type ${describeType(props[k] ?? {})}`]);
        }
      }
      for (const [k, p] of Object.entries(props)) {
        if (!(k in out) && p && typeof p === "object" && "default" in p) out[k] = JSON.parse(JSON.stringify(p.default));
      }
      return out;
    }
    default:
      return v;
  }
}
