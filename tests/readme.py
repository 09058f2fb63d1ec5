"""The README's command blocks, as the tests run them: read from README.md, never copied.

A block is a fenced ```bash block; its commands are its lines with `\\` continuations joined and
`#` comments dropped. A ```python block is run whole, as its text. Blocks are found by the
heading they sit under ("" for the text before the first heading).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"

_FENCE = r"^```{language}\n(.*?)^```"


def fenced(language: str, text: str | None = None) -> dict[str, list[str]]:
    """Heading -> the text of each ```<language> block under it."""
    text = README.read_text() if text is None else text
    found: dict[str, list[str]] = {}
    heading = ""
    position = 0
    for match in re.finditer(_FENCE.format(language=language), text, re.MULTILINE | re.DOTALL):
        for line in text[position : match.start()].splitlines():
            if line.startswith("#"):
                heading = line.lstrip("#").strip()
        position = match.end()
        found.setdefault(heading, []).append(match.group(1))
    return found


def blocks(text: str | None = None) -> dict[str, list[list[str]]]:
    """Heading -> the bash blocks under it, each a list of commands."""
    found = fenced("bash", text)
    return {heading: [commands(block) for block in texts] for heading, texts in found.items()}


def python_block(heading: str, index: int = 0) -> str:
    return fenced("python")[heading][index]


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
