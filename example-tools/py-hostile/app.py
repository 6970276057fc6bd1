"""`py-hostile`: Python tools that misbehave on purpose, the test fixtures proving
that CPython inside a component is held by the same fuel, deadline and memory
limits as a Rust tool. Never deploy it: tests write its manifest themselves.
"""

import time

from toolhost_guest import Toolbox, cancelled

tools = Toolbox()


@tools.tool
def py_spin() -> str:
    """Loop forever in Python bytecode, never checking for cancellation."""
    n = 0
    while True:
        n += 1


@tools.tool
def py_spin_checked() -> str:
    """Loop until the call is cancelled, then return "cancelled"."""
    n = 0
    while not cancelled():
        for _ in range(10_000):
            n += 1
    return "cancelled"


@tools.tool
def py_alloc(mib: int) -> str:
    """Allocate `mib` MiB in 1 MiB blocks, touching every page, then return "allocated N MiB".

    Args:
        mib: How many MiB to allocate.
    """
    blocks = []
    for _ in range(mib):
        blocks.append(bytearray(b"x" * (1 << 20)))
    return f"allocated {len(blocks)} MiB"


@tools.tool
def py_sleep(ms: int) -> str:
    """Sleep `ms` milliseconds, then return "slept"."""
    time.sleep(ms / 1000)
    return "slept"


@tools.tool
def py_raise(message: str) -> str:
    """Raise an uncaught exception (a bug in the tool): reported as a tool error."""
    raise ValueError(message)


Tool = tools.export()
