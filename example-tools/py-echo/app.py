"""`py-echo`: the Python twin of the Rust `echo` tool (and the benchmark's Python case).

Built into a component by `make tools` with componentize-py; needs no grants.
"""

from dataclasses import dataclass, field

from toolhost_guest import Toolbox

tools = Toolbox()


@dataclass
class EchoArgs:
    text: str = field(metadata={"description": "The text to return, unchanged."})


@tools.tool(title="Echo (Python)", read_only=True, idempotent=True, open_world=False)
def py_echo(args: EchoArgs) -> str:
    """Return `text` unchanged. Useful to check that the tool path works end to end."""
    return args.text


# componentize-py looks for the class implementing the `tool` export here.
Tool = tools.export()
