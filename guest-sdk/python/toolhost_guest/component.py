"""The component edge: the `toolhost:tool` world's exports (`describe`, `call`) and
imports (`log`, `progress`, `cancelled`, `request-client`), converting between the
SDK's Python values and the bindings componentize-py generates (`wit_world`).

Only this module imports `wit_world`, and only when running inside a component
(or being built into one), so the rest of the SDK runs under plain CPython.
"""

from __future__ import annotations

import enum
import json
import sys
from typing import Any

from .toolbox import Content, InvalidArguments, Output, ToolError, Toolbox, UnknownTool

__all__ = ["Level", "log", "progress", "cancelled", "request_client", "make_export"]


class Level(str, enum.Enum):
    """Log levels, as MCP defines them."""

    DEBUG = "debug"
    INFO = "info"
    NOTICE = "notice"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"
    ALERT = "alert"
    EMERGENCY = "emergency"


def _host():
    """The bindings of the `host` import, or None outside a component (plain
    CPython, e.g. unit tests): then `log` and `progress` go to stderr,
    `cancelled` is False and `request_client` fails."""
    try:
        from wit_world.imports import host
    except ImportError:
        return None
    return host


def log(level: Level | str, message: str) -> None:
    """Send a log message to the caller (MCP `notifications/message`)."""
    lv = Level(level.value if isinstance(level, Level) else str(level).lower())
    host = _host()
    if host is None:
        print(f"[{lv.value}] {message}", file=sys.stderr)
        return
    host.log(host.Level[lv.name], str(message))


def progress(done: float, total: float | None = None, message: str | None = None) -> None:
    """Report progress of the current call (MCP `notifications/progress`)."""
    host = _host()
    if host is None:
        print(f"[progress] {done}/{total} {message or ''}", file=sys.stderr)
        return
    host.progress(float(done), None if total is None else float(total), message)


def cancelled() -> bool:
    """Whether the caller has cancelled this call; long loops should poll it."""
    host = _host()
    return False if host is None else bool(host.cancelled())


def request_client(method: str, params: dict) -> dict:
    """Ask the calling MCP client (`sampling/createMessage`, `elicitation/create`);
    needs the manifest's `[client] requests` grant. Raises `ToolError` with the
    reason when there is no answer."""
    host = _host()
    if host is None:
        raise ToolError("no client to ask: not running inside a component")
    from componentize_py_types import Err

    try:
        answer = host.request_client(method, json.dumps(params))
    except Err as e:
        raise ToolError(str(e.value)) from None
    try:
        return json.loads(answer)
    except ValueError as e:
        raise ToolError(f"the client's answer to `{method}` is not JSON: {e}") from None


def _wit_content(c: Content, wit) -> Any:
    if c.kind == "text":
        return wit.Content_Text(c.text or "")
    if c.kind == "image":
        return wit.Content_Image(wit.Media(c.data or b"", c.mime_type or "application/octet-stream"))
    if c.kind == "audio":
        return wit.Content_Audio(wit.Media(c.data or b"", c.mime_type or "application/octet-stream"))
    contents = wit.ResourceContents_Text(c.text) if c.text is not None else wit.ResourceContents_Blob(c.data or b"")
    return wit.Content_Resource(wit.EmbeddedResource(c.uri or "", c.mime_type, contents))


def make_export(toolbox: Toolbox) -> type:
    class Tool:
        """`toolhost:tool/tool`, implemented by a `Toolbox`."""

        def describe(self):
            from wit_world.imports import types as wit

            defs = []
            for spec in toolbox.tools.values():
                a = spec.annotations
                out = spec.output_schema()
                defs.append(
                    wit.ToolDef(
                        name=spec.name,
                        title=spec.title,
                        description=spec.description,
                        input_schema=json.dumps(spec.input_schema(), ensure_ascii=False),
                        output_schema=None if out is None else json.dumps(out, ensure_ascii=False),
                        annotations=wit.Annotations(a.title, a.read_only, a.destructive, a.idempotent, a.open_world),
                    )
                )
            return defs

        def call(self, name: str, arguments: str):
            from componentize_py_types import Err
            from wit_world.imports import types as wit

            try:
                out: Output = toolbox.call(name, arguments)
            except UnknownTool:
                raise Err(wit.ToolError_UnknownTool(name)) from None
            except InvalidArguments as e:
                raise Err(wit.ToolError_InvalidArguments(str(e))) from None
            except ToolError as e:
                raise Err(wit.ToolError_Failed(str(e))) from None
            except MemoryError:
                # Out of linear memory (the manifest's `memory` limit): let the
                # call trap so the host reports the limit, not a tool error.
                raise
            except Exception as e:  # a bug in the tool: report it, don't trap
                raise Err(wit.ToolError_Failed(f"{type(e).__name__}: {e}")) from None
            structured = None
            if out.structured is not None:
                structured = json.dumps(out.structured, ensure_ascii=False, separators=(",", ":"))
            return wit.CallResult([_wit_content(c, wit) for c in out.content], structured)

    return Tool
