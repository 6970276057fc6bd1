"""Unit tests of the Python guest SDK under plain CPython (no component):
schemas derived from type hints, decoding with precise errors, results.
Run: python3 -m unittest discover -s guest-sdk/python/tests"""

import enum
import sys
import unittest
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal, NotRequired, Optional, TypedDict

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))



from toolhost_guest import (  # noqa: E402
    InvalidArguments,
    Meta,
    Output,
    ToolError,
    Toolbox,
    UnknownTool,
    image,
    text,
)


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass
class Point:
    """A point.

    Attributes:
        x: Horizontal.
    """

    x: int
    y: Annotated[float, "Vertical."] = 0.0


@dataclass
class Shape:
    name: str = field(metadata={"description": "What to call it."})
    points: list[Point] = field(default_factory=list)
    color: Color = Color.RED
    kind: Literal["open", "closed"] = "closed"
    tags: dict[str, int] = field(default_factory=dict)
    note: Optional[str] = None
    size: Annotated[int, Meta(minimum=1, maximum=10)] = 1


class Opts(TypedDict):
    a: str
    b: NotRequired[bool]


@dataclass
class Area:
    name: str
    area: float
    corners: list[Point]


tools = Toolbox()


@tools.tool(read_only=True, title="Shape")
def shape(args: Shape) -> Area:
    """Measure a shape."""
    return Area(args.name, float(len(args.points)) * args.size, args.points)


@tools.tool
def opts(args: Opts) -> str:
    return f"{args['a']}:{args.get('b')}"


@tools.tool(destructive=True)
def params(items: list[int], scale: float = 2.0) -> dict[str, float]:
    """Sum.

    Args:
        items: Numbers
            to add.
        scale: Factor.
    """
    if not items:
        raise InvalidArguments("no items")
    return {"sum": sum(items) * scale}


@tools.tool
def blocks() -> Output:
    return Output([text("a"), image(b"\x89PNG", "image/png")], {"k": 1})


@tools.tool
def fails() -> str:
    raise ToolError("nope")


class SchemaTest(unittest.TestCase):
    def test_dataclass_schema(self):
        s = tools.tools["shape"].input_schema()
        self.assertEqual(s["type"], "object")
        self.assertEqual(s["required"], ["name"])
        self.assertFalse(s["additionalProperties"])
        p = s["properties"]
        self.assertEqual(p["name"], {"type": "string", "description": "What to call it."})
        pt = p["points"]["items"]
        self.assertEqual(pt["description"], "A point.")
        self.assertEqual(pt["properties"]["x"], {"type": "integer", "description": "Horizontal."})
        self.assertEqual(pt["properties"]["y"], {"type": "number", "description": "Vertical.", "default": 0.0})
        self.assertEqual(p["color"], {"type": "string", "enum": ["red", "blue"], "default": "red"})
        self.assertEqual(p["kind"], {"type": "string", "enum": ["open", "closed"], "default": "closed"})
        self.assertEqual(p["tags"]["additionalProperties"], {"type": "integer"})
        self.assertEqual(p["note"], {"type": ["string", "null"]})
        self.assertEqual(p["size"], {"type": "integer", "minimum": 1, "maximum": 10, "default": 1})

    def test_output_schema_and_annotations(self):
        spec = tools.tools["shape"]
        o = spec.output_schema()
        self.assertEqual(o["required"], ["name", "area", "corners"])
        self.assertEqual(o["properties"]["corners"]["items"]["required"], ["x", "y"])
        self.assertEqual((spec.annotations.read_only, spec.annotations.destructive), (True, False))
        self.assertEqual(spec.description, "Measure a shape.")
        p = tools.tools["params"]
        self.assertEqual((p.annotations.read_only, p.annotations.destructive), (False, True))

    def test_typeddict_and_params(self):
        s = tools.tools["opts"].input_schema()
        self.assertEqual(s["required"], ["a"])
        self.assertEqual(s["properties"]["b"], {"type": "boolean"})
        s = tools.tools["params"].input_schema()
        self.assertEqual(s["properties"]["items"]["description"], "Numbers to add.")
        self.assertEqual(s["properties"]["scale"], {"type": "number", "description": "Factor.", "default": 2.0})
        self.assertEqual(tools.tools["params"].description, "Sum.")

    def test_unsupported_types_are_refused_at_registration(self):
        t = Toolbox()
        with self.assertRaisesRegex(TypeError, "tool `f`: .*set"):

            @t.tool
            def f(x: set) -> str:
                return ""

        with self.assertRaisesRegex(TypeError, "needs a type hint"):

            @t.tool
            def g(x) -> str:
                return ""


class CallTest(unittest.TestCase):
    def test_decodes_into_typed_values(self):
        out = tools.call("shape", '{"name": "t", "points": [{"x": 1}, {"x": 2, "y": 3}], "size": 2, "color": "blue"}')
        self.assertEqual(out.structured, {"name": "t", "area": 4.0, "corners": [{"x": 1, "y": 0.0}, {"x": 2, "y": 3.0}]})
        self.assertEqual(out.content[0].text, '{"name":"t","area":4.0,"corners":[{"x":1,"y":0.0},{"x":2,"y":3.0}]}')
        self.assertEqual(tools.call("opts", {"a": "x"}).content[0].text, "x:None")

    def test_precise_errors(self):
        with self.assertRaises(InvalidArguments) as e:
            tools.call("params", {"items": [1, 2, "x", True, 2.5, 4.0]})
        self.assertEqual(
            str(e.exception),
            'arguments of `params`: /items/2: expected integer, got string "x"; '
            "/items/3: expected integer, got boolean true; /items/4: expected integer, got number 2.5",
        )
        with self.assertRaises(InvalidArguments) as e:
            tools.call("shape", {"points": [{"x": 1, "z": 0}], "kind": "half", "size": 0, "note": 3})
        msg = str(e.exception)
        for part in [
            "/points/0/z: unknown field (the fields are: x, y)",
            '/kind: expected one of "open", "closed", got string "half"',
            "/size: must be >= 1, got 0",
            "/note: expected string, got integer 3",
            "/name: missing required field of type string",
        ]:
            self.assertIn(part, msg)
        with self.assertRaisesRegex(InvalidArguments, "arguments are not JSON"):
            tools.call("params", "{")
        with self.assertRaisesRegex(InvalidArguments, "^no items$"):
            tools.call("params", {"items": []})

    def test_results_and_errors(self):
        self.assertEqual(tools.call("params", {"items": [1, 2]}).structured, {"sum": 6.0})
        out = tools.call("blocks", {})
        self.assertEqual([c.kind for c in out.content], ["text", "image"])
        self.assertEqual(out.structured, {"k": 1})
        with self.assertRaisesRegex(ToolError, "nope"):
            tools.call("fails", {})
        with self.assertRaises(UnknownTool):
            tools.call("nope", {})


if __name__ == "__main__":
    unittest.main()
