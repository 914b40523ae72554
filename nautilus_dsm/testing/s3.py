"""A local S3-compatible server for tests: moto's ``ThreadedMotoServer`` in a child process.

The server runs in its own process, not in a thread of the test's: NautilusTrader's Rust
catalog reader holds the GIL while it waits for S3, so a server thread in the same process
would never answer it (``catalog.bars()`` hangs). The child binds an ephemeral port on
127.0.0.1, prints it, and exits when its stdin closes (so it never outlives the test run).
Needs the ``moto[server]`` and ``s3fs`` packages (the dev group).
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

_CHILD = """
import sys
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()  # until the parent closes it (or dies)
server.stop()
"""

KEY = "testing"
SECRET = "testing"
REGION = "us-east-1"


class LocalS3:
    """
    An S3-compatible server on 127.0.0.1 (moto), in a child process.

    Examples
    --------
    >>> with LocalS3() as s3:  # doctest: +SKIP
    ...     s3.create_bucket("catalogs")
    ...     ingest_universe("s3://catalogs/binance", ..., storage_options=s3.storage_options)
    """

    def __init__(self) -> None:
        self._proc: subprocess.Popen[str] | None = None
        self.port = 0

    def start(self) -> LocalS3:
        """Start the server and wait for its port."""
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError(
                "the local S3 server (moto) did not start; install the dev group "
                "(uv sync) which brings moto[server] and s3fs"
            )
        self.port = int(line)
        return self

    def stop(self) -> None:
        """Stop the server (its stdin closes, it exits)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> LocalS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def storage_options(self) -> dict[str, str]:
        """Options for :func:`nautilus_dsm.catalog.storage.catalog_location` (our names)."""
        return {
            "endpoint_url": self.endpoint_url,
            "key": KEY,
            "secret": SECRET,
            "region": REGION,
        }

    def filesystem(self) -> Any:
        """Return a fresh ``s3fs.S3FileSystem`` on this server (no instance cache)."""
        import s3fs

        return s3fs.S3FileSystem(
            key=KEY,
            secret=SECRET,
            endpoint_url=self.endpoint_url,
            client_kwargs={"region_name": REGION},
            skip_instance_cache=True,
        )

    def create_bucket(self, name: str) -> None:
        """Create a bucket (idempotent)."""
        fs = self.filesystem()
        if not fs.exists(name):
            # Not fs.mkdir: it sends us-east-1 as a location constraint, which S3 refuses.
            fs.call_s3("create_bucket", Bucket=name)
