"""Extract the ```python blocks of a Markdown page and make them runnable against the imitation.

The convention, documented in the README's "Python API" section: blocks are written for real
Binance with ``base_url_http=None``, ``base_url_vision=None`` and ``cache_dir=None``; the runner
substitutes the imitation's URL for the first two and a temporary folder for the third, nothing
else. A block preceded by ``<!-- no-run -->`` (on the line before its fence) is skipped.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

_FENCE = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
NO_RUN = "<!-- no-run -->"


def python_blocks(page: Path) -> list[str]:
    """Return the runnable ```python blocks of ``page`` in order (``<!-- no-run -->`` skipped)."""
    text = page.read_text(encoding="utf-8")
    blocks = []
    for match in _FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        if before == NO_RUN:
            continue
        blocks.append(match.group(1))
    return blocks


def inject(block: str, url: str, cache_dir: Path) -> str:
    """Substitute the imitation ``url`` and ``cache_dir`` for the documented ``None`` placeholders."""
    return (
        block.replace("base_url_http=None", f"base_url_http={url!r}")
        .replace("base_url_vision=None", f"base_url_vision={url!r}")
        .replace("cache_dir=None", f"cache_dir={str(cache_dir)!r}")
    )


def script(blocks: list[str], url: str, cache_dir: Path) -> str:
    """Return one script running ``blocks`` in order in one namespace, like a reader pasting them."""
    parts = []
    for i, block in enumerate(blocks):
        parts.append(f"print('-- block {i} --', flush=True)\n{inject(block, url, cache_dir)}")
    parts.append("print('-- all blocks ran --', flush=True)\n")
    return "\n".join(parts)


def run_page(page: Path, tmp_path: Path, timeout_s: float) -> subprocess.CompletedProcess[str]:
    """Run ``page``'s blocks in one fresh Python against a fresh imitation; return the process."""
    from nautilus_dsm.testing import BinanceImitation

    path = tmp_path / f"{page.stem.lower()}_blocks.py"
    with BinanceImitation() as srv:
        path.write_text(script(python_blocks(page), srv.url, tmp_path / "cache"), encoding="utf-8")
        return subprocess.run(
            [sys.executable, str(path)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
