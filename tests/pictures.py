"""Reading back the pictures a markdown artifact shows inline (Prefect's UI renders data-URI PNGs)."""

from __future__ import annotations

import base64
import re

DATA_URI = re.compile(r"!\[[^\]]*\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def inline_pngs(markdown: str) -> list[bytes]:
    """The PNGs a markdown artifact shows inline."""
    return [base64.b64decode(m, validate=True) for m in DATA_URI.findall(markdown)]
