"""`py-text`: a richer Python tool: word statistics with a typed, structured result.

Shows nested dataclasses, Literal, Optional, lists with constraints, defaults,
docstring descriptions, structured output (with a derived output schema),
logging and progress. Needs no grants.
"""

from __future__ import annotations

# componentize-py bundles the modules imported while the component is built:
# `Counter.most_common` imports `heapq` lazily, so import it here.
import heapq  # noqa: F401
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Annotated, Literal, Optional

from toolhost_guest import InvalidArguments, Level, Meta, Toolbox, log, progress

tools = Toolbox()


@dataclass
class Options:
    """How words are counted.

    Attributes:
        case: "fold" counts "The" and "the" as one word; "keep" does not.
        min_length: Ignore words shorter than this.
    """

    case: Literal["fold", "keep"] = "fold"
    min_length: Annotated[int, Meta(minimum=1, maximum=64)] = 1


@dataclass
class WordCountArgs:
    """Arguments of `py_word_count`.

    Attributes:
        text: The text to analyse.
        top: How many of the most frequent words to return.
        stopwords: Words to leave out of the ranking.
        options: Counting options.
    """

    text: str
    top: Annotated[int, Meta(minimum=0, maximum=100)] = 5
    stopwords: list[str] = field(default_factory=list)
    options: Optional[Options] = None


@dataclass
class Frequency:
    word: str
    count: int


@dataclass
class WordCount:
    """Statistics of a text."""

    words: int
    distinct: int
    lines: int
    characters: int
    top: list[Frequency]


WORD = re.compile(r"[\w'-]+", re.UNICODE)


@tools.tool(title="Word count (Python)", read_only=True, idempotent=True, open_world=False)
def py_word_count(args: WordCountArgs) -> WordCount:
    """Count the words, lines and characters of a text and rank its most frequent words."""
    opts = args.options or Options()
    words = WORD.findall(args.text)
    if opts.case == "fold":
        words = [w.lower() for w in words]
    words = [w for w in words if len(w) >= opts.min_length]
    stop = {s.lower() if opts.case == "fold" else s for s in args.stopwords}
    counts = Counter(w for w in words if w not in stop)
    progress(1, 1, "counted")
    log(Level.DEBUG, f"{len(words)} words, {len(counts)} distinct")
    return WordCount(
        words=len(words),
        distinct=len(set(words)),
        lines=args.text.count("\n") + (1 if args.text and not args.text.endswith("\n") else 0),
        characters=len(args.text),
        top=[Frequency(w, c) for w, c in counts.most_common(args.top)],
    )


@tools.tool(read_only=True, idempotent=True, open_world=False)
def py_sum(items: list[int], scale: float = 1.0) -> dict[str, float]:
    """Add up integers.

    Args:
        items: The integers to add up (at least one).
        scale: Multiply the sum by this.
    """
    if not items:
        raise InvalidArguments("`items` must not be empty")
    return {"sum": sum(items) * scale}


Tool = tools.export()
