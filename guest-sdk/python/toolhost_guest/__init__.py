"""Write toolhost tools in Python: typed functions in, WASI components out.

    from dataclasses import dataclass, field
    from toolhost_guest import Toolbox

    tools = Toolbox()

    @tools.tool(read_only=True, idempotent=True)
    def shout(text: str) -> str:
        '''Upper-case a text.

        Args:
            text: Text to shout.
        '''
        return text.upper()

    Tool = tools.export()

Build with `componentize-py -d wit -w toolhost componentize -p guest-sdk/python -p DIR app`
(see guest-sdk/LANGUAGES.md). The SDK owns the guest half of the `toolhost:tool`
contract for Python; it knows nothing of the host's policies, limits or transports.
"""

from .component import Level, cancelled, log, progress, request_client
from .schema import ArgumentError, Meta
from .toolbox import (
    Content,
    InvalidArguments,
    Output,
    ToolError,
    Toolbox,
    UnknownTool,
    audio,
    image,
    resource,
    text,
)

__all__ = [
    "ArgumentError",
    "Content",
    "InvalidArguments",
    "Level",
    "Meta",
    "Output",
    "ToolError",
    "Toolbox",
    "UnknownTool",
    "audio",
    "cancelled",
    "image",
    "log",
    "progress",
    "request_client",
    "resource",
    "text",
]
