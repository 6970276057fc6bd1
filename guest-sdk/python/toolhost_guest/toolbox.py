"""Tools as typed Python functions: registration, argument decoding, results.

`Toolbox.tool` reads a function's type hints and docstring once, when the tool
is registered, and derives the tool's input schema (and, for a typed structured
result, its output schema). A call decodes the JSON arguments against the same
types, with every mismatch reported by JSON Pointer, runs the function and turns
what it returns into content blocks and structured JSON.

This module is plain Python and never touches the component bindings: the
adapter in `component.py` does. It must not import `wit_world`.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import typing
from typing import Any, Callable

from .schema import ArgumentError, Field, Node, ObjectNode, _is_typeddict, compile_type, doc_sections

__all__ = [
    "Toolbox",
    "ToolError",
    "InvalidArguments",
    "UnknownTool",
    "Content",
    "Output",
    "text",
    "image",
    "audio",
    "resource",
]


class ToolError(Exception):
    """A failed call, reported to the client as a tool error (`isError: true`)."""


class InvalidArguments(ToolError):
    """The arguments decoded but make no sense to the tool."""


class UnknownTool(ToolError):
    """No tool of that name here."""


@dataclasses.dataclass(frozen=True)
class Content:
    """One block of a tool's output: build it with `text`, `image`, `audio` or `resource`."""

    kind: str  # "text" | "image" | "audio" | "resource"
    text: str | None = None
    data: bytes | None = None
    mime_type: str | None = None
    uri: str | None = None


def text(s: str) -> Content:
    return Content("text", text=s)


def image(data: bytes, mime_type: str) -> Content:
    return Content("image", data=bytes(data), mime_type=mime_type)


def audio(data: bytes, mime_type: str) -> Content:
    return Content("audio", data=bytes(data), mime_type=mime_type)


def resource(uri: str, contents: str | bytes, mime_type: str | None = None) -> Content:
    """An embedded resource: text (`str`) or a blob (`bytes`)."""
    if isinstance(contents, str):
        return Content("resource", text=contents, uri=uri, mime_type=mime_type)
    return Content("resource", data=bytes(contents), uri=uri, mime_type=mime_type)


@dataclasses.dataclass
class Output:
    """A free-form result: content blocks plus optional structured JSON (an object)."""

    content: list[Content] = dataclasses.field(default_factory=list)
    structured: dict | None = None


@dataclasses.dataclass
class Annotations:
    title: str | None = None
    read_only: bool | None = None
    destructive: bool | None = None
    idempotent: bool | None = None
    open_world: bool | None = None


@dataclasses.dataclass
class ToolSpec:
    """A registered tool, as `describe` reports it."""

    name: str
    title: str | None
    description: str
    input: ObjectNode
    output: ObjectNode | Node | None
    annotations: Annotations
    run: Callable[[Any], Output]

    def input_schema(self) -> dict:
        return self.input.full_schema()

    def output_schema(self) -> dict | None:
        if self.output is None:
            return None
        if isinstance(self.output, ObjectNode):
            return self.output.output_schema()
        return self.output.schema()


def _result_kind(ret) -> tuple[str, Node | None]:
    """How a return annotation is turned into output: ("text"|"structured"|"output"|"auto", node)."""
    if ret is inspect.Signature.empty or ret is Any:
        return "auto", None
    if ret is str:
        return "text", None
    if ret is Output:
        return "output", None
    if isinstance(ret, type) and (dataclasses.is_dataclass(ret) or _is_typeddict(ret)):
        return "structured", compile_type(ret)
    origin = typing.get_origin(ret)
    if origin is dict or ret is dict:
        return "structured", compile_type(ret)
    return "auto", None


def _to_output(value: Any, kind: str, node: Node | None) -> Output:
    if isinstance(value, Output):
        return value
    if isinstance(value, Content):
        return Output([value])
    if kind == "text" or isinstance(value, str):
        return Output([text(str(value))])
    if isinstance(value, list) and value and all(isinstance(c, Content) for c in value):
        return Output(list(value))
    if node is not None:
        structured = node.encode(value)
    else:
        from .schema import _encode_any

        structured = _encode_any(value)
    body = json.dumps(structured, ensure_ascii=False, separators=(",", ":"))
    if isinstance(structured, dict):
        return Output([text(body)], structured)
    return Output([text(body)])


class Toolbox:
    """The tools one component offers.

        tools = Toolbox()

        @tools.tool(read_only=True)
        def shout(text: str) -> str:
            '''Upper-case a text.

            Args:
                text: Text to shout.
            '''
            return text.upper()

        Tool = tools.export()   # what componentize-py looks for in the app module
    """

    def __init__(self) -> None:
        self.tools: dict[str, ToolSpec] = {}

    def tool(
        self,
        fn: Callable | None = None,
        *,
        name: str | None = None,
        title: str | None = None,
        description: str | None = None,
        read_only: bool | None = None,
        destructive: bool | None = None,
        idempotent: bool | None = None,
        open_world: bool | None = None,
    ):
        """Register `fn` as a tool (usable as `@tools.tool` or `@tools.tool(...)`).

        Its arguments are either one parameter typed as a dataclass or TypedDict,
        or plain typed parameters (each a field; defaults make them optional).
        Its docstring is the description; an `Args:` section describes the fields.
        """

        def register(f: Callable) -> Callable:
            spec = self._spec(f, name, title, description)
            a = spec.annotations
            if read_only is not None:
                a.read_only = read_only
                if read_only and destructive is None:
                    a.destructive = False
            if destructive is not None:
                a.destructive = destructive
                if destructive and read_only is None:
                    a.read_only = False
            a.idempotent = idempotent
            a.open_world = open_world
            if spec.name in self.tools:
                raise ValueError(f"tool `{spec.name}` is defined twice")
            self.tools[spec.name] = spec
            return f

        return register(fn) if fn is not None else register

    def _spec(self, f: Callable, name, title, description) -> ToolSpec:
        tool_name = name or f.__name__
        summary, docs = doc_sections(f.__doc__)
        hints = typing.get_type_hints(f, include_extras=True)
        params = [p for p in inspect.signature(f).parameters.values()]
        for p in params:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise TypeError(f"tool `{tool_name}`: *args/**kwargs parameters cannot be described")
            if p.name not in hints:
                raise TypeError(f"tool `{tool_name}`: parameter `{p.name}` needs a type hint")
        where = f"tool `{tool_name}`"
        try:
            single = len(params) == 1 and _is_record(hints[params[0].name])
            if single:
                node = compile_type(hints[params[0].name])
                if not isinstance(node, ObjectNode):
                    raise TypeError("arguments must be an object")
                input_node = node

                def call(args, f=f):
                    return f(args)
            else:
                fields = []
                for p in params:
                    n = compile_type(hints[p.name])
                    has_default = p.default is not inspect.Parameter.empty
                    fields.append(
                        Field(
                            p.name,
                            n,
                            required=not has_default,
                            default=p.default if has_default else dataclasses.MISSING,
                            description=n.description or docs.get(p.name),
                        )
                    )
                input_node = ObjectNode(fields, lambda d: d)

                def call(args, f=f):
                    return f(**args)

            kind, out_node = _result_kind(hints.get("return", inspect.Signature.empty))
        except TypeError as e:
            raise TypeError(f"{where}: {e}") from None

        def run(arguments: Any) -> Output:
            errors: list = []
            decoded = input_node.decode(arguments, "", errors)
            if errors:
                raise ArgumentError(errors)
            return _to_output(call(decoded), kind, out_node)

        return ToolSpec(
            name=tool_name,
            title=title,
            description=description or summary or tool_name,
            input=input_node,
            output=out_node,
            annotations=Annotations(title=title),
            run=run,
        )

    def call(self, name: str, arguments: str | dict) -> Output:
        """Run tool `name`; raises `UnknownTool`, `InvalidArguments` (with every
        argument error) or `ToolError`. Plain Python: usable in tests."""
        spec = self.tools.get(name)
        if spec is None:
            raise UnknownTool(name)
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except ValueError as e:
                raise InvalidArguments(f"arguments are not JSON: {e}") from None
        try:
            return spec.run(arguments)
        except ArgumentError as e:
            raise InvalidArguments(f"arguments of `{name}`: {e}") from None

    def export(self) -> type:
        """The class componentize-py instantiates for the `toolhost:tool/tool` export:
        bind it as `Tool` at the top level of the app module."""
        from .component import make_export

        return make_export(self)


def _is_record(tp) -> bool:
    if typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return isinstance(tp, type) and (dataclasses.is_dataclass(tp) or _is_typeddict(tp))
