"""What the command line prints: aligned tables for people, JSON for scripts, a progress bar."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

__all__ = ["ProgressBar", "print_json", "print_table", "shorten"]

MAX_CELL = 60


def shorten(text: str, width: int = MAX_CELL) -> str:
    """``text`` on one line, cut to ``width`` characters with an ellipsis."""
    text = text.replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")
    return text if len(text) <= width else text[: width - 1] + "…"


def print_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], out: TextIO | None = None
) -> None:
    """Columns aligned to their widest cell; long cells are shortened, the last one less."""
    out = out or sys.stdout
    # The last column is not padded, so it need not be cut either.
    last = len(headers) - 1
    cells = [
        [
            shorten(str(cell), 10_000 if index == last else MAX_CELL)
            for index, cell in enumerate(row)
        ]
        for row in rows
    ]
    widths = [len(header) for header in headers]
    for row in cells:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]
    lines = [headers, *cells]
    for line in lines:
        padded = (cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        out.write("  ".join(padded).rstrip())
        out.write("\n")


def print_json(data: Any, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    out.write(json.dumps(data, ensure_ascii=False, indent=2, default=str))
    out.write("\n")


class ProgressBar:
    """Rows read out of a total, redrawn in place on stderr at most 10 times a second."""

    def __init__(self, total: int, stream: TextIO, width: int = 30) -> None:
        self.total = max(total, 1)
        self.stream = stream
        self.width = width
        self._drawn_at = 0.0

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if now - self._drawn_at < 0.1 and done < self.total:
            return
        self._drawn_at = now
        fraction = min(done / self.total, 1.0)
        filled = int(fraction * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\rchecking [{bar}] {done:,}/{self.total:,} rows")
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\r\033[K")
        self.stream.flush()
