"""Progress bars only on a terminal: ``--progress`` / ``--no-progress`` force them."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from nautilus_dsm.cli.progress import progress_enabled


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


class _Closed(io.StringIO):
    def isatty(self) -> bool:
        raise ValueError("I/O operation on closed file")


@pytest.mark.parametrize(
    ("hide", "stream", "expected"),
    [
        (None, io.StringIO(), False),
        (None, _Tty(), True),
        (None, _Closed(), False),
        (None, object(), False),
        (True, _Tty(), False),
        (False, io.StringIO(), True),
    ],
)
def test_progress_is_drawn_on_a_terminal_unless_forced(
    hide: bool | None, stream: object, expected: bool
) -> None:
    assert progress_enabled(hide, stream) is expected


def _fetch_cmd(srv: object, cache_dir: Path, out: Path, *extra: str) -> list[str]:
    url = srv.url  # type: ignore[attr-defined]
    return [
        sys.executable,
        "-m",
        "nautilus_dsm.cli",
        "fetch",
        "BTCUSDT-PERP.BINANCE",
        "--interval",
        "1m",
        "--start",
        "2024-01-01",
        "--end",
        "2024-01-03",
        *["--base-url-http", url, "--base-url-vision", url, "--cache-dir", str(cache_dir)],
        "--out",
        str(out),
        *extra,
    ]


def test_a_pipe_gets_no_bar_unless_progress_is_forced(
    imitation: object, cache_dir: Path, tmp_path: Path
) -> None:
    plain = subprocess.run(
        _fetch_cmd(imitation, cache_dir, tmp_path / "a.parquet"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    forced = subprocess.run(
        _fetch_cmd(imitation, cache_dir, tmp_path / "b.parquet", "--progress"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert (plain.returncode, plain.stderr) == (0, "")
    assert forced.returncode == 0
    assert "BTCUSDT-PERP.BINANCE" in forced.stderr and "period" in forced.stderr


def _run_with_tty_stderr(cmd: list[str]) -> tuple[int, str]:
    leader, follower = pty.openpty()
    # A real terminal has a size; tqdm draws nothing on a 0-column one.
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=follower)
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        return proc.wait(timeout=60), b"".join(chunks).decode(errors="replace")
    finally:
        os.close(leader)


def test_a_terminal_gets_the_bar_unless_no_progress(
    imitation: object, cache_dir: Path, tmp_path: Path
) -> None:
    code, shown = _run_with_tty_stderr(_fetch_cmd(imitation, cache_dir, tmp_path / "a.parquet"))
    hidden_code, hidden = _run_with_tty_stderr(
        _fetch_cmd(imitation, cache_dir, tmp_path / "b.parquet", "--no-progress")
    )

    assert code == 0
    assert "BTCUSDT-PERP.BINANCE" in shown and "period" in shown
    assert (hidden_code, hidden) == (0, "")
