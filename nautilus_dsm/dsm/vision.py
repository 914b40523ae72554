"""Binance Vision bulk kline files: daily and monthly zips, verified against their CHECKSUM.

A file is accepted only when the SHA-256 of the downloaded zip equals the published one; a
mismatch is re-downloaded and, if it persists, refused (the period then comes from REST). A
verified file is then validated (its member's name, 12 fields, numbers, the interval's grid and
length, the file's period, at least one row); one that fails is refused at once with
:class:`InvalidResponse` (re-downloading what Vision publishes cannot help). The
zip is inflated in a worker thread with a hard size cap, so a hostile or broken archive can
neither block the event loop nor exhaust memory.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import io
import re
import zipfile
import zlib
from dataclasses import dataclass

import polars as pl

from nautilus_dsm.common import (
    DEFAULT_VISION_URL,
    ENDPOINTS,
    Interval,
    MarketType,
    check_binance_symbol,
    to_ms,
)
from nautilus_dsm.constants import DAY_MS
from nautilus_dsm.dsm.bounds import VISION_DEADLINE_S, VISION_MAX_RETRIES, VISION_TIMEOUT_S
from nautilus_dsm.dsm.http import HttpTransport, Reply
from nautilus_dsm.dsm.retry_policy import RetryPolicy, backoff_delay
from nautilus_dsm.dsm.schema import parse_vision_csv
from nautilus_dsm.dsm.validate import Expect
from nautilus_dsm.errors import ChecksumMismatch, InvalidInput, InvalidResponse, SourceError

# A published SHA-256: 64 hex digits.
_SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class VisionStats:
    """
    What a Vision client did so far.

    ``files`` verified and parsed, ``bytes`` of zips downloaded, ``checksum_failures`` zips
    whose SHA-256 differed, ``retries`` re-downloads and HTTP retries, ``not_found`` 404s.
    """

    files: int
    bytes: int
    checksum_failures: int
    retries: int
    not_found: int


class _CorruptZip(Exception):
    pass


def parse_checksum(text: str, name: str) -> str:
    r"""Return the lower-case SHA-256 of a ``.CHECKSUM`` body (``"<sha256>  <name>\n"``)."""
    fields = text.split()
    if not fields or not _SHA256_RE.match(fields[0]):
        raise SourceError(
            f"Vision checksum file of {name} is malformed ({text[:100]!r}); expected "
            "'<sha256>  <file name>', so the file cannot be verified and the period will come "
            "from REST"
        )
    return fields[0].lower()


def extract_csv(data: bytes, name: str, max_decompressed_bytes: int) -> bytes:
    """
    Return the CSV member of a Vision zip, inflated in chunks under a hard size cap.

    Raises :class:`SourceError` when the member's declared or actual size exceeds the cap
    (before inflating it all) and ``_CorruptZip`` when the archive is unreadable.
    """
    return extract_member(data, name, max_decompressed_bytes)[1]


def extract_member(data: bytes, name: str, max_decompressed_bytes: int) -> tuple[str, bytes]:
    """Return the file name and the bytes of a Vision zip's CSV member (see :func:`extract_csv`)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = [info for info in archive.infolist() if not info.is_dir()]
            csvs = [info for info in members if info.filename.lower().endswith(".csv")]
            if len(csvs) != 1:
                raise _CorruptZip(
                    f"expected one CSV member, found {[info.filename for info in members]}"
                )
            info = csvs[0]
            if info.file_size > max_decompressed_bytes:
                raise SourceError(
                    f"Vision file {name}: member {info.filename} declares {info.file_size} bytes, "
                    f"which exceeds the cap of {max_decompressed_bytes} bytes; raise "
                    "max_decompressed_bytes if the file is genuine"
                )
            out = bytearray()
            with archive.open(info) as member:
                while chunk := member.read(_CHUNK):
                    out += chunk
                    if len(out) > max_decompressed_bytes:
                        raise SourceError(
                            f"Vision file {name}: member {info.filename} inflates beyond "
                            f"{max_decompressed_bytes} bytes, which exceeds the cap; raise "
                            "max_decompressed_bytes if the file is genuine"
                        )
            return info.filename, bytes(out)
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError) as exc:
        raise _CorruptZip(f"{type(exc).__name__}: {exc}") from exc


def file_period_ms(kind: str, stamp: str) -> tuple[int, int]:
    """``[start_ms, end_ms)`` of a ``daily`` (``YYYY-MM-DD``) or ``monthly`` (``YYYY-MM``) file."""
    if kind == "daily":
        start = to_ms(dt.datetime.strptime(stamp, "%Y-%m-%d").replace(tzinfo=dt.UTC))
        return start, start + DAY_MS
    start = to_ms(dt.datetime.strptime(stamp, "%Y-%m").replace(tzinfo=dt.UTC))
    return start, Interval.MONTH_1.next_open_ms(start)


def _decode(data: bytes, name: str, max_decompressed_bytes: int, expect: Expect) -> pl.DataFrame:
    """Decode a verified zip into its validated bars; :class:`InvalidResponse` when they fail.

    The zip's checksum matched, so a file that fails here is what Vision publishes: a
    re-download cannot help, and the caller takes the period from the next source.
    """
    member, csv = extract_member(data, name, max_decompressed_bytes)
    wanted = name[: -len(".zip")] + ".csv"
    if member.rsplit("/", 1)[-1].lower() != wanted.lower():
        # The member's name is the one place a Vision payload says its symbol, interval and
        # date: another series served under this URL is refused, whatever its rows look like.
        raise InvalidResponse(
            f"{expect.what} holds {member}, not {wanted}: another symbol, interval or date "
            "was served under this name; the file is refused"
        )
    try:
        frame = parse_vision_csv(csv, expect)
    except pl.exceptions.PolarsError as exc:  # defence in depth: the parser wraps its own
        raise InvalidResponse(f"{expect.what} could not be parsed as klines ({exc})") from exc
    if frame.is_empty():
        raise InvalidResponse(
            f"{expect.what} has no data rows; Binance Vision does not publish empty kline "
            "files, so the file is refused"
        )
    return frame


class VisionClient:
    """
    Daily and monthly kline files of one market from Binance Vision.

    Parameters
    ----------
    market_type : MarketType
        The market (``data/spot``, ``data/futures/um`` or ``data/futures/cm``).
    base_url_vision : str, optional
        Host override (mirrors, the local imitation); ``https://data.binance.vision`` when None.
    concurrency : int, default 4
        Requests in flight at once (one limit per client).
    max_retries : int, default 3
        Downloads of a file whose checksum fails or whose zip is corrupt, and tries per HTTP
        request for 5xx / transport failures.
    timeout_s : float, default 10.0
        Inactivity timeout: the longest wait for a connection or for the next bytes (a host
        silent that long is hanging; its circuit opens after a few such tries).
    deadline_s : float, default 300.0
        Total deadline of one try (connect + headers + the whole zip), generous for the
        biggest monthly files.
    max_decompressed_bytes : int, default 1 GiB
        Hard cap on an inflated CSV.
    verify_tls : bool, default True
        TLS certificate verification.
    backoff_base_s, backoff_max_s : float
        Full-jitter exponential backoff between retries.

    """

    def __init__(
        self,
        market_type: MarketType,
        base_url_vision: str | None = None,
        *,
        concurrency: int = 4,
        max_retries: int = VISION_MAX_RETRIES,
        timeout_s: float = VISION_TIMEOUT_S,
        deadline_s: float = VISION_DEADLINE_S,
        max_decompressed_bytes: int = 1 << 30,
        verify_tls: bool = True,
        backoff_base_s: float = 0.25,
        backoff_max_s: float = 8.0,
    ) -> None:
        self.market_type = MarketType.parse(market_type)
        host = (base_url_vision or DEFAULT_VISION_URL).rstrip("/")
        self.base_url = f"{host}/{ENDPOINTS[self.market_type].vision_prefix}"
        self.max_retries = max_retries
        self.max_decompressed_bytes = max_decompressed_bytes
        self._policy = RetryPolicy(max_retries, backoff_base_s, backoff_max_s)
        self._transport = HttpTransport(
            name=f"Binance Vision {self.market_type.name}",
            policy=self._policy,
            timeout_s=timeout_s,
            deadline_s=deadline_s,
            concurrency=concurrency,
            verify_tls=verify_tls,
        )
        self._files = 0
        self._bytes = 0
        self._checksum_failures = 0
        self._retries = 0
        self._not_found = 0

    @property
    def stats(self) -> VisionStats:
        """A snapshot of the download counters."""
        return VisionStats(
            files=self._files,
            bytes=self._bytes,
            checksum_failures=self._checksum_failures,
            retries=self._retries + self._transport.counters.retries,
            not_found=self._not_found,
        )

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._transport.aclose()

    def file_url(self, symbol: str, interval: Interval | str, kind: str, stamp: str) -> str:
        """URL of a kline zip; ``kind`` is ``daily`` or ``monthly``, ``stamp`` its date."""
        interval = Interval.parse(interval)
        label = interval.path_label
        name = f"{symbol}-{label}-{stamp}.zip"
        return f"{self.base_url}/{kind}/klines/{symbol}/{label}/{name}"

    async def daily(
        self, symbol: str, interval: Interval | str, day: dt.date
    ) -> pl.DataFrame | None:
        """Fetch the bars of one UTC day's file; None when Vision has no such file (404)."""
        return await self._file(symbol, interval, "daily", day.strftime("%Y-%m-%d"))

    async def monthly(
        self, symbol: str, interval: Interval | str, year: int, month: int
    ) -> pl.DataFrame | None:
        """Fetch the bars of one calendar month's file; None when Vision has no such file (404)."""
        if not 1 <= month <= 12:
            raise InvalidInput(f"month {month} is not 1..12; pass a calendar month")
        return await self._file(symbol, interval, "monthly", f"{year:04d}-{month:02d}")

    async def _file(
        self, symbol: str, interval: Interval | str, kind: str, stamp: str
    ) -> pl.DataFrame | None:
        interval = Interval.parse(interval)
        interval.check_market(self.market_type)
        check_binance_symbol(symbol)
        url = self.file_url(symbol, interval, kind, stamp)
        name = url.rsplit("/", 1)[1]
        start_ms, end_ms = file_period_ms(kind, stamp)
        expect = Expect(
            interval, start_ms, end_ms, f"Vision file {name}", period_word="the file's period"
        )
        mismatch: tuple[str, str] | None = None
        corrupt = ""
        for attempt in range(1, self.max_retries + 1):
            if attempt > 1:
                self._retries += 1
                await asyncio.sleep(
                    backoff_delay(
                        attempt - 1, self._policy.backoff_base_s, self._policy.backoff_max_s
                    )
                )
            reply = await self._transport.get(url)
            if reply.status == 404:
                self._not_found += 1
                return None
            self._check_ok(reply, name)
            data = reply.response.content
            self._bytes += len(data)
            published = await self._published_sha256(url, name)
            actual = hashlib.sha256(data).hexdigest()
            if actual != published:
                self._checksum_failures += 1
                mismatch, corrupt = (published, actual), ""
                continue
            try:
                frame = await asyncio.to_thread(
                    _decode, data, name, self.max_decompressed_bytes, expect
                )
            except _CorruptZip as exc:
                mismatch, corrupt = None, str(exc)
                continue
            self._files += 1
            return frame
        if mismatch is not None:
            raise ChecksumMismatch(
                f"Vision file {name}: SHA-256 {mismatch[1]} of the download differs from the "
                f"published {mismatch[0]} after {self.max_retries} downloads; the file is refused "
                "and the period will come from REST"
            )
        raise SourceError(
            f"Vision file {name} is corrupt after {self.max_retries} downloads ({corrupt}); "
            "the period will come from REST"
        )

    async def _published_sha256(self, url: str, name: str) -> str:
        reply = await self._transport.get(url + ".CHECKSUM")
        if reply.status == 404:
            raise SourceError(
                f"Vision file {name} has no .CHECKSUM, so it cannot be verified and is refused; "
                "the period will come from REST"
            )
        self._check_ok(reply, name + ".CHECKSUM")
        return parse_checksum(reply.response.text, name)

    def _check_ok(self, reply: Reply[None], name: str) -> None:
        if 200 <= reply.status < 300:
            return
        raise SourceError(
            f"Binance Vision {reply.response.url.path} answered HTTP {reply.status} for {name}; "
            "check base_url_vision, or the period will come from REST"
        )
