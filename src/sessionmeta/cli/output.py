"""What the command line prints: aligned tables for people, JSON for scripts, a progress bar."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from sessionmeta.core.sealing import open_row
from sessionmeta.core.spec import ModelSpec
from sessionmeta.io.check import CheckReport, validate_session_rows

__all__ = [
    "ProgressBar",
    "ProgressLog",
    "cell_text",
    "json_or_text",
    "print_check_report",
    "print_json",
    "print_table",
    "session_view",
    "shorten",
]

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


class ProgressLog:
    """Rows read out of a total, as whole lines for a stream that is not a terminal.

    A line when the scan starts, then at most one every ``every`` seconds, and one
    when the total is reached: a CI log shows the scan is alive without a line per batch.
    """

    def __init__(
        self,
        total: int,
        stream: TextIO,
        every: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.stream = stream
        self.every = every
        self.clock = clock
        self._written_at = clock()
        self._finished = False
        self._write(f"checking {total:,} rows")

    def __call__(self, done: int) -> None:
        now = self.clock()
        finished = done >= self.total
        if (finished and self._finished) or (not finished and now - self._written_at < self.every):
            return
        self._written_at = now
        self._finished = finished
        percent = 100 if finished else 100 * done // self.total
        self._write(f"checked {done:,}/{self.total:,} rows ({percent}%)")

    def close(self) -> None:
        """Nothing to erase: every line stays in the log."""

    def _write(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()


def cell_text(value: Any) -> str:
    """A JSON value as a table shows it to people: text bare, lists of text joined by
    commas, nothing for null, anything else as compact JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return ",".join(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def json_or_text(text: str) -> Any:
    """Stored text as the JSON value it holds, or as itself when it is not JSON."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def session_view(
    spec: ModelSpec[Any] | None, session_id: str, rows: list[tuple[str, str]]
) -> tuple[list[list[str]], dict[str, Any]]:
    """Table rows and the JSON document that ``show`` prints for one session."""
    if spec is None:
        stored = {key: json_or_text(value) for key, value in rows}
        return [[key, value] for key, value in rows], {"session_id": session_id, "stored": stored}
    checked = validate_session_rows(spec, session_id, rows)
    # Encrypted values show decrypted (validate_session_rows decrypted them already).
    rows = [
        (key, open_row(spec, session_id, key, value) if key not in checked.invalid else value)
        for key, value in rows
    ]
    table: list[list[str]] = []
    for key, value in rows:
        if key in checked.invalid:
            table.append([key, value, "invalid: " + checked.invalid[key]])
        elif key in spec.fields:
            table.append([key, value, "stored"])
        else:
            table.append([key, value, "undeclared (ignored)"])
    dumped = checked.model.model_dump(mode="json", by_alias=True)
    stored_keys = {key for key, _ in rows}
    for key in spec.fields:
        if key not in stored_keys:
            table.append([key, json.dumps(dumped[key], ensure_ascii=False), "default"])
    document = {
        "session_id": session_id,
        "model": spec.name,
        "metadata": dumped,
        "stored_keys": sorted(checked.model.model_dump(by_alias=True, exclude_unset=True)),
        "invalid": {
            key: {"stored_text": dict(rows)[key], "reason": reason}
            for key, reason in checked.invalid.items()
        },
        "undeclared": {key: json_or_text(value) for key, value in rows if key not in spec.fields},
    }
    return table, document


def print_check_report(report: CheckReport, *, strict: bool, failed: bool) -> None:
    """``check``'s report for people: counts per key, failing values, undeclared keys."""
    print(
        f"checked {report.rows:,} rows of {report.sessions:,} sessions against {report.model_name}"
    )
    print_table(
        ["KEY", "DECLARED", "ROWS", "INVALID"],
        [
            [
                key,
                "yes" if stats.declared else "no",
                f"{stats.rows:,}",
                f"{stats.invalid:,}" if stats.declared else "-",
            ]
            for key, stats in sorted(report.keys.items())
        ],
    )
    if report.invalid:
        print(
            f"\nvalues the model would refuse (showing {len(report.invalid)} of "
            f"{report.invalid_total:,}):"
        )
        print_table(
            ["SESSION_ID", "KEY", "STORED", "REASON"],
            [[item.session_id, item.key, item.stored_text, item.reason] for item in report.invalid],
        )
    if report.stale:
        print(
            f"\nequality hashes made by an older rule (showing {len(report.stale)} of "
            f"{report.stale_total:,}): `find` by equality misses these rows until "
            "`sessionmeta rehash` recomputes them"
        )
        print_table(["SESSION_ID", "KEY"], [[item.session_id, item.key] for item in report.stale])
    for stats in report.undeclared:
        examples = ", ".join(stats.example_sessions[:3])
        print(
            f"\nkey {stats.key!r} is not declared by {report.model_name}: {stats.rows:,} rows "
            f"kept and ignored on read (e.g. {examples})"
        )
    if failed:
        plural = "" if report.invalid_total == 1 else "s"
        what = f"{report.invalid_total:,} stored value{plural} would not read"
        if report.stale_total:
            what += f"; {report.stale_total:,} stale equality hashes (run sessionmeta rehash)"
        if strict and report.undeclared:
            what += f"; {len(report.undeclared)} undeclared keys (--strict)"
        print(f"\nFAIL: {what}")
    else:
        print("\nOK: every stored value reads with this model")
