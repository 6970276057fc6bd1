"""JSON Schemas from Python type hints, and decoding of JSON values against them.

A type is compiled once (when a tool is registered, which for a component is at
build time: componentize-py snapshots the module after import) into a `Node`
that can both describe itself as JSON Schema and decode a JSON value into the
Python value the tool function expects (dataclasses, enums, lists, ...),
collecting every mismatch with the JSON Pointer of the offending value.

Supported: str, int, float, bool, None, Any, list[T], tuple[T, ...], dict[str, T],
Optional[T] / T | None, Union[...], Literal[...], Enum subclasses, dataclasses
and TypedDicts (nested), Annotated[T, "description"] and Annotated[T, Meta(...)].

This module knows nothing of components or of the host: it runs under plain
CPython too, which is how its unit tests run.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import enum
import re
import types
import typing
from typing import Any

__all__ = ["ArgumentError", "Meta", "Node", "compile_type", "object_from_fields", "Field", "doc_sections"]

_MISSING = dataclasses.MISSING


@dataclasses.dataclass(frozen=True)
class Meta:
    """Constraints and a description for a field, used as `Annotated[int, Meta(minimum=1)]`
    or in a dataclass field's metadata (`field(metadata={"meta": Meta(...)})`)."""

    description: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    min_items: int | None = None
    max_items: int | None = None


class ArgumentError(Exception):
    """Arguments that do not match the tool's types: every problem, each with the
    JSON Pointer of the value at fault (``/items/2: expected integer, got string``)."""

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = errors
        super().__init__(str(self))

    def __str__(self) -> str:
        shown = [f"{path or '/'}: {msg}" for path, msg in self.errors[:8]]
        more = len(self.errors) - len(shown)
        if more > 0:
            shown.append(f"... and {more} more")
        return "; ".join(shown)


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


def _ptr(path: str, key: str | int) -> str:
    k = str(key).replace("~", "~0").replace("/", "~1")
    return f"{path}/{k}"


class Node:
    """A compiled type: its JSON Schema and its decoder."""

    description: str | None = None

    def schema(self) -> dict:
        raise NotImplementedError

    def decode(self, v: Any, path: str, errors: list) -> Any:
        raise NotImplementedError

    def encode(self, v: Any) -> Any:
        """The JSON value of a Python value of this type (for results)."""
        return _encode_any(v)

    def full_schema(self) -> dict:
        s = self.schema()
        if self.description and "description" not in s:
            s = {**s, "description": self.description}
        return s


def _encode_any(v: Any) -> Any:
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: _encode_any(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, enum.Enum):
        return v.value
    if isinstance(v, dict):
        return {str(k): _encode_any(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_encode_any(x) for x in v]
    return v


class _Constrained(Node):
    def __init__(self, meta: Meta | None):
        self.meta = meta or Meta()
        self.description = self.meta.description
        self._re = re.compile(self.meta.pattern) if self.meta.pattern else None

    def _check(self, v: Any, path: str, errors: list) -> None:
        m = self.meta
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if m.minimum is not None and v < m.minimum:
                errors.append((path, f"must be >= {_num(m.minimum)}, got {_num(v)}"))
            if m.maximum is not None and v > m.maximum:
                errors.append((path, f"must be <= {_num(m.maximum)}, got {_num(v)}"))
        if isinstance(v, str):
            if m.min_length is not None and len(v) < m.min_length:
                errors.append((path, f"must be at least {m.min_length} characters long, got {len(v)}"))
            if m.max_length is not None and len(v) > m.max_length:
                errors.append((path, f"must be at most {m.max_length} characters long, got {len(v)}"))
            if self._re is not None and not self._re.search(v):
                errors.append((path, f"must match the pattern {m.pattern!r}"))
        if isinstance(v, list):
            if m.min_items is not None and len(v) < m.min_items:
                errors.append((path, f"must have at least {m.min_items} items, got {len(v)}"))
            if m.max_items is not None and len(v) > m.max_items:
                errors.append((path, f"must have at most {m.max_items} items, got {len(v)}"))

    def _constraints(self) -> dict:
        m = self.meta
        out = {}
        for key, val in [
            ("minimum", m.minimum),
            ("maximum", m.maximum),
            ("minLength", m.min_length),
            ("maxLength", m.max_length),
            ("pattern", m.pattern),
            ("minItems", m.min_items),
            ("maxItems", m.max_items),
        ]:
            if val is not None:
                out[key] = val
        return out


def _num(x: float) -> str:
    return str(int(x)) if isinstance(x, float) and x.is_integer() else str(x)


def _got(v: Any) -> str:
    t = _json_type(v)
    if t in ("string",) and len(v) <= 32:
        return f'string "{v}"'
    if t in ("integer", "number", "boolean"):
        return f"{t} {str(v).lower() if t == 'boolean' else v}"
    return t


class Primitive(_Constrained):
    def __init__(self, kind: str, meta: Meta | None = None):
        super().__init__(meta)
        self.kind = kind

    def schema(self) -> dict:
        return {"type": self.kind, **self._constraints()}

    def decode(self, v, path, errors):
        k = self.kind
        ok = False
        if k == "string":
            ok = isinstance(v, str)
        elif k == "boolean":
            ok = isinstance(v, bool)
        elif k == "integer":
            if isinstance(v, float) and v.is_integer():
                v = int(v)
            ok = isinstance(v, int) and not isinstance(v, bool)
        elif k == "number":
            ok = isinstance(v, (int, float)) and not isinstance(v, bool)
            if ok:
                v = float(v)
        if not ok:
            errors.append((path, f"expected {k}, got {_got(v)}"))
            return None
        self._check(v, path, errors)
        return v


class NoneNode(Node):
    def schema(self):
        return {"type": "null"}

    def decode(self, v, path, errors):
        if v is not None:
            errors.append((path, f"expected null, got {_got(v)}"))
        return None


class AnyNode(Node):
    def __init__(self, description=None):
        self.description = description

    def schema(self):
        return {}

    def decode(self, v, path, errors):
        return v


class ListNode(_Constrained):
    def __init__(self, item: Node, meta: Meta | None = None, as_tuple: bool = False):
        super().__init__(meta)
        self.item = item
        self.as_tuple = as_tuple

    def schema(self):
        return {"type": "array", "items": self.item.full_schema(), **self._constraints()}

    def decode(self, v, path, errors):
        if not isinstance(v, list):
            errors.append((path, f"expected array, got {_got(v)}"))
            return None
        out = [self.item.decode(x, _ptr(path, i), errors) for i, x in enumerate(v)]
        self._check(v, path, errors)
        return tuple(out) if self.as_tuple else out

    def encode(self, v):
        return [self.item.encode(x) for x in v]


class DictNode(_Constrained):
    def __init__(self, value: Node, meta: Meta | None = None):
        super().__init__(meta)
        self.value = value

    def schema(self):
        s = {"type": "object"}
        vs = self.value.full_schema()
        if vs != {}:
            s["additionalProperties"] = vs
        return s

    def decode(self, v, path, errors):
        if not isinstance(v, dict):
            errors.append((path, f"expected object, got {_got(v)}"))
            return None
        return {k: self.value.decode(x, _ptr(path, k), errors) for k, x in v.items()}

    def encode(self, v):
        return {str(k): self.value.encode(x) for k, x in v.items()}


class LiteralNode(Node):
    def __init__(self, values: list, enum_cls: type | None = None, description: str | None = None):
        self.values = values
        self.enum_cls = enum_cls
        self.description = description

    def schema(self):
        s: dict = {"enum": list(self.values)}
        kinds = {_json_type(x) for x in self.values}
        if len(kinds) == 1:
            s = {"type": kinds.pop(), **s}
        return s

    def decode(self, v, path, errors):
        for x in self.values:
            if v == x and type(v) is type(x):
                return self.enum_cls(v) if self.enum_cls else v
        shown = ", ".join(_literal(x) for x in self.values)
        errors.append((path, f"expected one of {shown}, got {_got(v)}"))
        return None

    def encode(self, v):
        return v.value if isinstance(v, enum.Enum) else v


def _literal(x) -> str:
    if isinstance(x, str):
        return f'"{x}"'
    if x is None:
        return "null"
    return str(x).lower() if isinstance(x, bool) else str(x)


class UnionNode(Node):
    def __init__(self, options: list[Node], description: str | None = None):
        self.options = options
        self.description = description

    def schema(self):
        simple = [o.schema() for o in self.options]
        # `T | None` with T a plain typed schema: {"type": [T, "null"]}.
        if all(set(s) == {"type"} and isinstance(s["type"], str) for s in simple):
            return {"type": [s["type"] for s in simple]}
        return {"anyOf": [o.full_schema() for o in self.options]}

    def decode(self, v, path, errors):
        nullable = [o for o in self.options if isinstance(o, NoneNode)]
        rest = [o for o in self.options if not isinstance(o, NoneNode)]
        if v is None and nullable:
            return None
        if len(rest) == 1:
            # Optional[T]: report T's own precise errors.
            return rest[0].decode(v, path, errors)
        for o in rest:
            errs: list = []
            out = o.decode(v, path, errs)
            if not errs:
                return out
        kinds = ", ".join(sorted({_describe(o) for o in self.options}))
        errors.append((path, f"expected {kinds}, got {_got(v)}"))
        return None

    def encode(self, v):
        for o in self.options:
            if isinstance(o, NoneNode) and v is None:
                return None
        return _encode_any(v)


def _describe(n: Node) -> str:
    s = n.schema()
    t = s.get("type")
    if isinstance(t, str):
        return t
    if "enum" in s:
        return "one of " + ", ".join(_literal(x) for x in s["enum"])
    return "a value matching the schema"


class Field:
    """A field of an object: its JSON name, type, whether it is required, its default."""

    def __init__(self, name: str, node: Node, required: bool = True, default: Any = _MISSING,
                 default_factory: Any = _MISSING, description: str | None = None):
        self.name = name
        self.node = node
        self.required = required
        self.default = default
        self.default_factory = default_factory
        self.description = description

    def default_value(self):
        if self.default_factory is not _MISSING:
            return self.default_factory()
        return self.default


class ObjectNode(Node):
    """An object with named fields: a dataclass, a TypedDict or a function's parameters.
    Unknown fields are errors (`additionalProperties: false`)."""

    def __init__(self, fields: list[Field], build, description: str | None = None, title: str | None = None):
        self.fields = fields
        self.by_name = {f.name: f for f in fields}
        self.build = build  # dict of decoded fields -> Python value
        self.description = description
        self.title = title

    def schema(self):
        props = {}
        for f in self.fields:
            s = f.node.full_schema()
            if f.description and "description" not in s:
                s = {**s, "description": f.description}
            if not f.required:
                d = f.default_value()
                if d is not _MISSING and d is not None:
                    try:
                        s = {**s, "default": f.node.encode(d)}
                    except Exception:  # an exotic default: leave it out of the schema
                        pass
            props[f.name] = s
        out: dict = {"type": "object", "properties": props}
        req = [f.name for f in self.fields if f.required]
        if req:
            out["required"] = req
        out["additionalProperties"] = False
        return out

    def output_schema(self) -> dict:
        """The schema of what `encode` produces: every field present."""
        props = {}
        for f in self.fields:
            n = f.node
            s = n.output_schema() if isinstance(n, ObjectNode) else _output_schema(n)
            if f.description and "description" not in s:
                s = {**s, "description": f.description}
            props[f.name] = s
        out = {"type": "object", "properties": props, "required": [f.name for f in self.fields]}
        if self.description:
            out["description"] = self.description
        return out

    def decode(self, v, path, errors):
        if not isinstance(v, dict):
            errors.append((path, f"expected object, got {_got(v)}"))
            return None
        before = len(errors)
        out = {}
        for k in v:
            if k not in self.by_name:
                names = ", ".join(f.name for f in self.fields) or "none"
                errors.append((_ptr(path, k), f"unknown field (the fields are: {names})"))
        for f in self.fields:
            if f.name in v:
                out[f.name] = f.node.decode(v[f.name], _ptr(path, f.name), errors)
            elif f.required:
                errors.append((_ptr(path, f.name), f"missing required field of type {_describe(f.node)}"))
            else:
                d = f.default_value()
                if d is not _MISSING:
                    out[f.name] = d
        if len(errors) > before:
            return None
        return self.build(out)

    def encode(self, v):
        if isinstance(v, dict):
            get = v.get
        else:
            def get(name, _v=v):
                return getattr(_v, name)
        return {f.name: f.node.encode(get(f.name)) for f in self.fields}


def _output_schema(n: Node) -> dict:
    if isinstance(n, ListNode):
        item = n.item
        s = item.output_schema() if isinstance(item, ObjectNode) else _output_schema(item)
        return {"type": "array", "items": s}
    if isinstance(n, DictNode):
        return n.schema()
    if isinstance(n, UnionNode):
        parts = [o.output_schema() if isinstance(o, ObjectNode) else _output_schema(o) for o in n.options]
        if all(set(p) == {"type"} and isinstance(p["type"], str) for p in parts):
            return {"type": [p["type"] for p in parts]}
        return {"anyOf": parts}
    s = n.full_schema()
    return {k: v for k, v in s.items() if k != "default"}


# --- docstrings ---------------------------------------------------------------

_SECTION = re.compile(r"^\s*(Args|Arguments|Parameters|Attributes|Fields|Returns|Raises)\s*:\s*$")
_ITEM = re.compile(r"^(\s*)(\*{0,2}[A-Za-z_][A-Za-z0-9_]*)\s*(\([^)]*\))?\s*:\s*(.*)$")


def doc_sections(doc: str | None) -> tuple[str, dict[str, str]]:
    """Split a Google-style docstring into its summary text (everything outside
    `Args:`/`Attributes:`/... sections) and the per-name descriptions those
    sections give."""
    if not doc:
        return "", {}
    import inspect

    lines = inspect.cleandoc(doc).splitlines()
    summary: list[str] = []
    items: dict[str, str] = {}
    section = None
    current = None
    item_indent = None
    for line in lines:
        m = _SECTION.match(line)
        if m:
            section = m.group(1)
            current = None
            item_indent = None
            continue
        if section is None:
            summary.append(line)
            continue
        if not line.strip():
            current = None
            continue
        if not line.startswith((" ", "\t")):
            # Dedented text ends the section.
            section = None
            summary.append(line)
            continue
        im = _ITEM.match(line)
        indent = len(line) - len(line.lstrip())
        if im and section in ("Args", "Arguments", "Parameters", "Attributes", "Fields") and (
            item_indent is None or indent <= item_indent
        ):
            item_indent = indent
            current = im.group(2)
            items[current] = im.group(4).strip()
        elif current is not None:
            items[current] = (items[current] + " " + line.strip()).strip()
    return "\n".join(summary).strip(), items


# --- compiling type hints -------------------------------------------------------

_NoneType = type(None)


def _is_typeddict(tp) -> bool:
    return isinstance(tp, type) and issubclass(tp, dict) and hasattr(tp, "__annotations__") and hasattr(
        tp, "__total__"
    )


def _class_doc(cls) -> str | None:
    doc = cls.__doc__
    if not doc:
        return None
    # A dataclass without a docstring gets a generated one: `Name(a: int, ...)`.
    if dataclasses.is_dataclass(cls) and doc.startswith(cls.__name__ + "("):
        return None
    if _is_typeddict(cls) and doc.strip() == "":
        return None
    return doc


def compile_type(tp, meta: Meta | None = None, _seen: tuple = ()) -> Node:
    """Compile a type hint into a `Node`. Raises TypeError on what it cannot describe."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    if origin is typing.Annotated:
        base, *extra = args
        desc = None
        for e in extra:
            if isinstance(e, Meta):
                meta = e if meta is None else dataclasses.replace(e, description=e.description or meta.description)
            elif isinstance(e, str):
                desc = e
        node = compile_type(base, meta, _seen)
        if desc:
            node.description = desc
        return node
    if origin in (typing.Required, typing.NotRequired):
        return compile_type(args[0], meta, _seen)

    if tp is str:
        return Primitive("string", meta)
    if tp is bool:
        return Primitive("boolean", meta)
    if tp is int:
        return Primitive("integer", meta)
    if tp is float:
        return Primitive("number", meta)
    if tp is None or tp is _NoneType:
        return NoneNode()
    if tp is Any or tp is object:
        return AnyNode(meta.description if meta else None)

    if origin in (list, tuple, collections.abc.Sequence) or tp in (list, tuple):
        if origin is tuple or tp is tuple:
            if not args or (len(args) == 2 and args[1] is Ellipsis):
                item = compile_type(args[0], None, _seen) if args else AnyNode()
                return ListNode(item, meta, as_tuple=True)
            raise TypeError(f"fixed-length tuples are not supported ({tp}); use list[T] or a dataclass")
        item = compile_type(args[0], None, _seen) if args else AnyNode()
        return ListNode(item, meta)
    if origin in (dict, collections.abc.Mapping) or tp is dict:
        if args and args[0] is not str:
            raise TypeError(f"JSON object keys are strings: use dict[str, ...], not {tp}")
        value = compile_type(args[1], None, _seen) if args else AnyNode()
        return DictNode(value, meta)
    if origin is typing.Literal:
        return LiteralNode(list(args), description=meta.description if meta else None)
    if origin is typing.Union or origin is types.UnionType:
        node = UnionNode([compile_type(a, None, _seen) for a in args])
        if meta:
            node.description = meta.description
        return node
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        desc, _ = doc_sections(tp.__doc__) if tp.__doc__ and tp.__doc__ != enum.Enum.__doc__ else ("", {})
        return LiteralNode([m.value for m in tp], enum_cls=tp, description=desc or (meta and meta.description))
    if isinstance(tp, type) and (dataclasses.is_dataclass(tp) or _is_typeddict(tp)):
        if tp in _seen:
            raise TypeError(f"recursive type {tp.__name__} cannot be described as a JSON Schema here")
        node = _compile_class(tp, _seen + (tp,))
        if meta and meta.description:
            node.description = meta.description
        return node
    if isinstance(tp, str):
        raise TypeError(f"unresolved forward reference {tp!r}: define the type before the tool")
    raise TypeError(f"type {tp!r} cannot be described as a JSON Schema (use str, int, float, bool, list, dict, "
                    "Optional, Literal, an Enum, a dataclass or a TypedDict)")


def _hints(obj) -> dict:
    return typing.get_type_hints(obj, include_extras=True)


def _compile_class(cls, seen) -> ObjectNode:
    summary, docs = doc_sections(_class_doc(cls))
    hints = _hints(cls)
    fields: list[Field] = []
    if dataclasses.is_dataclass(cls):
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            meta = f.metadata.get("meta") if f.metadata else None
            desc = (f.metadata.get("description") if f.metadata else None) or (meta.description if meta else None)
            node = compile_type(hints[f.name], meta, seen)
            has_default = f.default is not _MISSING or f.default_factory is not _MISSING
            fields.append(
                Field(
                    f.name,
                    node,
                    required=not has_default,
                    default=f.default,
                    default_factory=f.default_factory,
                    description=desc or node.description or docs.get(f.name),
                )
            )

        def build(d, cls=cls):
            return cls(**d)
    else:
        required = getattr(cls, "__required_keys__", set(hints))
        for name, hint in hints.items():
            node = compile_type(hint, None, seen)
            fields.append(Field(name, node, required=name in required, description=node.description or docs.get(name)))

        def build(d):
            return d
    return ObjectNode(fields, build, description=summary or None, title=cls.__name__)


def object_from_fields(fields: list[Field], build, description: str | None = None) -> ObjectNode:
    return ObjectNode(fields, build, description=description)
