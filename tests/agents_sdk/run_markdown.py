"""Run the Python blocks of a Markdown file, offline: ``python run_markdown.py FILE.md``.

The blocks run in order, in one namespace, as a reader would paste them. A
``text`` block right after a Python block is what that block prints. The SDK's
default model is served locally (its answer echoes the last user message as
``Echo: <text>``), so the documentation calls ``Runner.run`` exactly as a user
would, without network or API key. Prints, as JSON, one entry per Python block:
its line, what it printed, and the output it documents (or null).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import sys
from pathlib import Path
from typing import Any

import httpx2
from agents import set_default_openai_client, set_tracing_disabled
from openai import AsyncOpenAI

FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.MULTILINE | re.DOTALL)


def python_blocks(markdown: str) -> list[tuple[int, str, str | None]]:
    """Each Python block's first line number, code, and the text block right after it."""
    fences = list(FENCE.finditer(markdown))
    blocks: list[tuple[int, str, str | None]] = []
    for index, fence in enumerate(fences):
        if fence.group(1) != "python":
            continue
        expected = None
        if index + 1 < len(fences):
            following = fences[index + 1]
            between = markdown[fence.end() : following.start()]
            if following.group(1) == "text" and not between.strip():
                expected = following.group(2)
        line = markdown.count("\n", 0, fence.start()) + 2
        blocks.append((line, fence.group(2), expected))
    return blocks


def last_user_text(body: dict[str, Any]) -> str:
    items = body.get("input")
    if isinstance(items, str):
        return items
    for item in reversed(items or []):
        if item.get("role") == "user":
            content = item.get("content")
            if isinstance(content, str):
                return content
            return " ".join(str(part.get("text", "")) for part in content)
    return ""


def respond(request: httpx2.Request) -> httpx2.Response:
    """OpenAI's Responses API, answered locally."""
    if not request.url.path.endswith("/responses"):
        return httpx2.Response(404, json={"error": {"message": f"offline: {request.url.path}"}})
    body = json.loads(request.content)
    message = {
        "type": "message",
        "id": "msg_offline",
        "role": "assistant",
        "status": "completed",
        "content": [
            {"type": "output_text", "text": f"Echo: {last_user_text(body)}", "annotations": []}
        ],
    }
    usage = {
        "input_tokens": 1,
        "output_tokens": 1,
        "total_tokens": 2,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens_details": {"reasoning_tokens": 0},
    }
    return httpx2.Response(
        200,
        json={
            "id": "resp_offline",
            "object": "response",
            "created_at": 0,
            "model": body.get("model", "offline"),
            "status": "completed",
            "output": [message],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "usage": usage,
        },
    )


def main() -> None:
    set_tracing_disabled(True)
    transport = httpx2.MockTransport(respond)
    client = AsyncOpenAI(api_key="sk-offline", http_client=httpx2.AsyncClient(transport=transport))
    set_default_openai_client(client, use_for_tracing=False)

    path = Path(sys.argv[1])
    namespace: dict[str, Any] = {"__name__": "__main__"}
    results: list[dict[str, Any]] = []
    for line, code, expected in python_blocks(path.read_text(encoding="utf-8")):
        printed = io.StringIO()
        # Blank lines keep the reported line numbers those of the Markdown file.
        # dont_inherit: the blocks run as a file of their own would, without this
        # module's `from __future__ import annotations`.
        compiled = compile("\n" * (line - 1) + code, str(path), "exec", dont_inherit=True)
        with contextlib.redirect_stdout(printed):
            exec(compiled, namespace)
        results.append({"line": line, "printed": printed.getvalue(), "expected": expected})
    asyncio.run(client.close())
    print(json.dumps(results))


if __name__ == "__main__":
    main()
