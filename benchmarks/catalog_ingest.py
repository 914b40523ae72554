"""Benchmark: kline frame -> ParquetDataCatalog, our direct writer vs ``write_data``; ingest RSS.

Run: ``uv run python benchmarks/catalog_ingest.py [--bars 1000000] [--reps 3]`` (offline;
about a minute).

1. The same ``--bars`` 1m BTCUSDT-PERP bars (the imitation's deterministic klines) written to a
   fresh catalog three ways, alternating, median of ``--reps``:
   - ours: ``frame_to_catalog_table`` + one parquet file in the catalog's layout, written the way
     ``nautilus_dsm.catalog.ingest`` writes each chunk (temp name + rename);
   - ``ParquetDataCatalog.write_data(bars)`` with the bars already built (its cost alone);
   - ``frame_to_bars`` + ``write_data`` (the whole classic path from the same frame).
   The two files must be equal (``pyarrow`` table and schema metadata) and the catalog must read
   back the same bars from both. Targets: ours >= 2 M bars/s and >= 8x ``write_data``.
2. One year of 1m bars of one symbol through ``nautilus_dsm.catalog.ingest`` in a child process,
   peak RSS as the child's own ``VmHWM`` (``/proc/self/status``; see :func:`run_child` for
   why not ``ru_maxrss``). The cache is warmed first by
   writing its daily files straight from the imitation's truth (faster than downloading them),
   so the child measures ingestion (cache read, quality report, conversion, parquet writes), not
   the network; a second child that only imports and sets up gives the baseline. Target: peak
   RSS <= 400 MB. The catalog written must hold exactly the truth's bars.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
from nautilus_trader.model.data import Bar
from nautilus_trader.model.instruments import Instrument
from nautilus_trader.persistence.catalog.parquet import (
    ParquetDataCatalog,
    _timestamps_to_filename,
)

from nautilus_dsm.bars import bar_type_for, frame_to_bars, frame_to_catalog_table
from nautilus_dsm.catalog.files import write_file_atomic
from nautilus_dsm.common import MarketType, to_ms
from nautilus_dsm.dsm.cache import KlineCache
from nautilus_dsm.parsing import parse_instruments
from nautilus_dsm.testing import BinanceImitation
from nautilus_dsm.testing.symbols import exchange_info

INSTRUMENT = "BTCUSDT-PERP.BINANCE"
SYMBOL = "BTCUSDT"
MARKET = MarketType.FUTURES_USDT
RATE_TARGET = 2_000_000
RATIO_TARGET = 8.0
RSS_TARGET_MB = 400.0
DAY_MS = 86_400_000


def instrument_of(srv: BinanceImitation) -> Instrument:
    info = exchange_info(MARKET, list(srv.symbols(MARKET).values()), srv.now_ms())
    [instrument] = [i for i in parse_instruments(MARKET, info, 0) if i.id.value == INSTRUMENT]
    return instrument


def new_catalog(root: Path, name: str) -> ParquetDataCatalog:
    path = root / name
    path.mkdir()
    return ParquetDataCatalog(str(path))


def bar_files(catalog: ParquetDataCatalog, bar_type: str) -> list[str]:
    return sorted(catalog.fs.glob(f"{catalog.path}/data/bar/{bar_type}/*.parquet"))


def frame_vs_write_data(srv: BinanceImitation, n_bars: int, reps: int) -> None:
    start = datetime(2022, 1, 1, tzinfo=UTC)
    start_ms = to_ms(start)
    frame = srv.expected(MARKET, SYMBOL, "1m", start_ms, start_ms + n_bars * 60_000)
    instrument = instrument_of(srv)
    bar_type = bar_type_for(instrument.id, "1m")
    key = str(bar_type)
    print(f"\n== Catalog write: {frame.height:,} bars of {key} from one kline frame ==")
    frame_to_bars(frame.head(10), bar_type, instrument)  # one-time layout probe, untimed

    ours_s: list[float] = []
    wd_s: list[float] = []
    classic_s: list[float] = []
    for rep in range(reps):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            ours = new_catalog(root, "ours")
            theirs = new_catalog(root, "theirs")

            t0 = time.perf_counter()
            table = frame_to_catalog_table(frame, bar_type, instrument)
            ts = table.column("ts_init")
            name = _timestamps_to_filename(ts[0].as_py(), ts[-1].as_py())
            write_file_atomic(ours, ours._make_path(Bar, key), name, table)
            ours_s.append(time.perf_counter() - t0)
            del table

            t0 = time.perf_counter()
            bars = frame_to_bars(frame, bar_type, instrument)
            t1 = time.perf_counter()
            theirs.write_data(bars)
            t2 = time.perf_counter()
            wd_s.append(t2 - t1)
            classic_s.append(t2 - t0)

            if rep == 0:
                read_ours, read_theirs, mb_ours, mb_theirs = check_same_files(
                    ours, theirs, key, bars
                )
            del bars

    n = frame.height
    ours_m, wd_m, classic_m = (statistics.median(v) for v in (ours_s, wd_s, classic_s))
    rate = n / ours_m
    ratio = wd_m / ours_m
    print(f"ours (frame -> table -> parquet) s: {', '.join(f'{v:.3f}' for v in ours_s)}")
    print(f"write_data(bars) alone           s: {', '.join(f'{v:.3f}' for v in wd_s)}")
    print(f"frame_to_bars + write_data       s: {', '.join(f'{v:.3f}' for v in classic_s)}")
    print(
        f"ours {rate / 1e6:.2f} M bars/s (target >= {RATE_TARGET / 1e6:.0f} M: "
        f"{'MET' if rate >= RATE_TARGET else 'MISSED'}); write_data {n / wd_m / 1e6:.2f} M bars/s; "
        f"frame_to_bars + write_data {n / classic_m / 1e6:.2f} M bars/s"
    )
    print(
        f"ratio vs write_data alone {ratio:.1f}x (target >= {RATIO_TARGET:.0f}x: "
        f"{'MET' if ratio >= RATIO_TARGET else 'MISSED'}); vs frame_to_bars + write_data "
        f"{classic_m / ours_m:.1f}x; equality checks (file table + metadata, bars read back): OK"
    )
    print(
        f"catalog.bars() read back: ours {n / read_ours / 1e6:.2f} M bars/s "
        f"({mb_ours:.1f} MB file), write_data's {n / read_theirs / 1e6:.2f} M bars/s "
        f"({mb_theirs:.1f} MB file)"
    )


def check_same_files(
    ours: ParquetDataCatalog, theirs: ParquetDataCatalog, key: str, bars: list[Bar]
) -> tuple[float, float, float, float]:
    """Same file name, Arrow table and metadata, and bars read back by the catalog.

    Returns the read seconds of ``catalog.bars`` and the file MB, ours then theirs.
    """
    [a] = bar_files(ours, key)
    [b] = bar_files(theirs, key)
    if Path(a).name != Path(b).name:
        raise AssertionError(f"file names differ: {a} vs {b}")
    ta, tb = pq.read_table(a), pq.read_table(b)
    if not (ta.schema.equals(tb.schema, check_metadata=True) and ta.equals(tb)):
        raise AssertionError("our parquet file differs from write_data's")
    t0 = time.perf_counter()
    ours_bars = ours.bars([key])
    t1 = time.perf_counter()
    theirs_bars = theirs.bars([key])
    t2 = time.perf_counter()
    if ours_bars != bars or theirs_bars != bars:
        raise AssertionError("bars read back differ from the bars written")
    return t1 - t0, t2 - t1, Path(a).stat().st_size / 1e6, Path(b).stat().st_size / 1e6


def fill_cache(srv: BinanceImitation, cache_dir: Path, year: int) -> int:
    """Write the year's daily cache files straight from the imitation's truth; return rows."""
    cache = KlineCache(cache_dir)
    start_ms = to_ms(datetime(year, 1, 1, tzinfo=UTC))
    end_ms = to_ms(datetime(year + 1, 1, 1, tzinfo=UTC))
    truth = srv.expected(MARKET, SYMBOL, "1m", start_ms, end_ms)
    opens = truth["open_time"].dt.epoch("ms")
    for day_ms in range(start_ms, end_ms, DAY_MS):
        part = truth.filter((opens >= day_ms) & (opens < day_ms + DAY_MS))
        key = datetime.fromtimestamp(day_ms / 1000, UTC).strftime("%Y-%m-%d")
        cache.write(MARKET, SYMBOL, "1m", key, part)
    return truth.height


def child(args: argparse.Namespace) -> None:
    """Child process: set up, optionally ingest a year, print a JSON summary."""
    import nautilus_dsm.bars
    import nautilus_dsm.parsing  # noqa: F401  (what ingest imports too: a fair baseline)
    from nautilus_dsm.catalog import ingest
    from nautilus_dsm.dsm.manager import DataSourceManager

    dsm = DataSourceManager.create(
        "binance", base_url_http=args.url, base_url_vision=args.url, cache_dir=args.cache_dir
    )
    catalog = ParquetDataCatalog(args.catalog)
    out: dict[str, object] = {}
    if args.child in ("week", "year"):
        start = datetime(args.year, 1, 1, tzinfo=UTC)
        end = start + timedelta(days=7)
        if args.child == "year":
            end = datetime(args.year + 1, 1, 1, tzinfo=UTC)
        t0 = time.perf_counter()
        report = ingest(catalog, [INSTRUMENT], ["1m"], start, end, dsm=dsm)
        out = {
            "seconds": time.perf_counter() - t0,
            "bars": report.total_bars,
            "chunks": len(report.chunks),
            "sources": sum(c.report.sources.get("cache", 0) for c in report.chunks),
        }
    out.update(memory_status())
    print(json.dumps(out), flush=True)


def memory_status() -> dict[str, float]:
    """This process's peak and current resident set from ``/proc/self/status``, in MB."""
    fields = {"VmHWM": "peak_rss_mb", "RssAnon": "anon_mb", "RssFile": "file_mb"}
    out: dict[str, float] = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in fields:
                out[fields[name]] = int(value.split()[0]) / 1024
    return out


def run_child(mode: str, url: str, cache_dir: Path, catalog: Path, year: int) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        mode,
        "--url",
        url,
        "--cache-dir",
        str(cache_dir),
        "--catalog",
        str(catalog),
        "--year",
        str(year),
    ]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # ru_maxrss (KiB on Linux) of the children waited for so far. Linux carries the forking
    # parent's resident set into a child's ru_maxrss at exec, so with this parent already
    # holding NautilusTrader and a year of klines it overstates the child; the child's own
    # VmHWM (its address space's high-water mark, reset by exec) is the figure used.
    result["ru_maxrss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return result


def ingest_year_rss(srv: BinanceImitation, year: int) -> None:
    print(f"\n== ingest(): one year ({year}) of 1m {INSTRUMENT}, peak RSS in a child ==")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        rows = fill_cache(srv, root / "cache", year)
        print(
            f"cache warmed: {rows:,} bars written as daily cache files straight from the "
            f"imitation's truth in {time.perf_counter() - t0:.1f} s (not timed below)"
        )
        (root / "catalog").mkdir()
        (root / "empty").mkdir()
        base = run_child("setup", srv.url, root / "cache", root / "empty", year)
        (root / "week").mkdir()
        week = run_child("week", srv.url, root / "cache", root / "week", year)
        ing = run_child("year", srv.url, root / "cache", root / "catalog", year)
        if ing["bars"] != rows or ing["sources"] != rows:
            raise AssertionError(f"ingest wrote {ing} for {rows} cached bars")
        catalog = ParquetDataCatalog(str(root / "catalog"))
        instrument = instrument_of(srv)
        bar_type = bar_type_for(instrument.id, "1m")
        start_ms = to_ms(datetime(year, 1, 1, tzinfo=UTC))
        truth = srv.expected(MARKET, SYMBOL, "1m", start_ms, start_ms + rows * 60_000)
        if catalog.bars([str(bar_type)]) != frame_to_bars(truth, bar_type, instrument):
            raise AssertionError("the catalog's bars differ from the truth")
    peak = ing["peak_rss_mb"]
    print(
        f"ingest: {ing['bars']:,} bars in {ing['chunks']} chunk files, {ing['seconds']:.2f} s "
        f"({ing['bars'] / ing['seconds'] / 1e6:.2f} M bars/s incl. cache read + quality report)"
    )
    print(
        f"peak RSS {peak:.0f} MB (target <= {RSS_TARGET_MB:.0f} MB: "
        f"{'MET' if peak <= RSS_TARGET_MB else 'MISSED'}); baseline child (imports + setup, "
        f"no ingest) {base['peak_rss_mb']:.0f} MB, so ingestion adds "
        f"{peak - base['peak_rss_mb']:.0f} MB; catalog read back equals the truth: OK"
    )
    print(
        f"memory is bounded by the chunk, not the range: one week ({week['bars']:,} bars, one "
        f"chunk) peaks at {week['peak_rss_mb']:.0f} MB, the year at {peak:.0f} MB"
    )
    print(
        f"at exit: ingest child anon {ing['anon_mb']:.0f} MB + file-backed {ing['file_mb']:.0f} MB "
        f"(mostly NautilusTrader's {pyo3_so_mb():.0f} MB Rust library mapped in); "
        f"parent's RUSAGE_CHILDREN ru_maxrss {ing['ru_maxrss_mb']:.0f} MB (inflated: the "
        "forking parent's own RSS is counted in)"
    )


def pyo3_so_mb() -> float:
    import nautilus_trader.core.nautilus_pyo3 as pyo3

    return Path(pyo3.__file__).stat().st_size / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=1_000_000, help="bars for the write test")
    parser.add_argument("--reps", type=int, default=3, help="repetitions")
    parser.add_argument("--year", type=int, default=2024, help="year ingested for the RSS test")
    parser.add_argument("--part", choices=["all", "rss", "write"], default="all")
    parser.add_argument("--child", choices=["setup", "week", "year"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", help=argparse.SUPPRESS)
    parser.add_argument("--catalog", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    with BinanceImitation() as srv:
        if args.part in ("all", "rss"):
            ingest_year_rss(srv, args.year)
        if args.part in ("all", "write"):
            frame_vs_write_data(srv, args.bars, args.reps)


if __name__ == "__main__":
    main()
