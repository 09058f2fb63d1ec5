"""The README's command blocks, as the tests run them: read from README.md, never copied.

A block is a fenced ```bash block; its commands are its lines with `\\` continuations joined and
`#` comments dropped. Blocks are found by the heading they sit under ("" for the text before
the first heading).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"

_FENCE = re.compile(r"^```bash\n(.*?)^```", re.MULTILINE | re.DOTALL)


def blocks(text: str | None = None) -> dict[str, list[list[str]]]:
    """Heading -> the bash blocks under it, each a list of commands."""
    text = README.read_text() if text is None else text
    found: dict[str, list[list[str]]] = {}
    heading = ""
    position = 0
    for match in _FENCE.finditer(text):
        for line in text[position : match.start()].splitlines():
            if line.startswith("#"):
                heading = line.lstrip("#").strip()
        position = match.end()
        found.setdefault(heading, []).append(commands(match.group(1)))
    return found


def commands(block: str) -> list[str]:
    """The commands of one block: continuations joined, comments and blank lines dropped."""
    joined = block.replace("\\\n", " ")
    out = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        if words:
            # keep the command's own text (quotes included), without its trailing comment
            out.append(_strip_comment(line).strip())
    return out


def _strip_comment(line: str) -> str:
    """`line` up to its first `#` that shell would read as a comment (outside quotes)."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def block(heading: str, index: int = 0) -> list[str]:
    return blocks()[heading][index]
