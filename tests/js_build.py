"""Builds the classic-script copy of the browser client from its ES module.

``websocketbridge.classic.js`` is ``websocketbridge.js`` with its ``export`` keywords
removed, wrapped in a function that puts the exported names on ``window.geventchannels``
(and ``window.channels.WebSocketBridge`` when free, the global of Channels 1.x). No tool
beyond Python is needed; tests/test_js_client.py fails when the copy is out of date.

    python -m tests.js_build
"""

from __future__ import annotations

import re
from pathlib import Path

JS_DIR = (
    Path(__file__).resolve().parent.parent / "geventchannels" / "static" / "geventchannels" / "js"
)
MODULE = JS_DIR / "websocketbridge.js"
CLASSIC = JS_DIR / "websocketbridge.classic.js"

_EXPORT = re.compile(r"^export (const|let|function|class) (\w+)", re.MULTILINE)

HEADER = """\
/* Built from websocketbridge.js by tests/js_build.py: edit that file, then run
 * `python -m tests.js_build`. A classic script: window.geventchannels.WebSocketBridge. */
(function (global) {
"use strict";

"""


def build(module_text: str) -> str:
    """The classic script for the ES module's text."""
    names = [name for _, name in _EXPORT.findall(module_text)]
    if not names or re.search(r"^\s*(import|export)\b", _EXPORT.sub(r"\1 \2", module_text), re.M):
        raise ValueError("the module must export only const/let/function/class declarations")
    body = _EXPORT.sub(r"\1 \2", module_text)
    footer = (
        "\nglobal.geventchannels = { %s };\n"
        "if (global.channels === undefined) global.channels = { WebSocketBridge: WebSocketBridge };\n"
        '})(typeof window !== "undefined" ? window : this);\n'
    ) % ", ".join(f"{name}: {name}" for name in names)
    return HEADER + body + footer


def main() -> None:
    CLASSIC.write_text(build(MODULE.read_text()))
    print(f"wrote {CLASSIC}")


if __name__ == "__main__":
    main()
