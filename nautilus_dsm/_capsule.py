"""The one home of private NautilusTrader use: bars materialised from a block of C records.

``capsule_to_list`` is how NautilusTrader's Rust catalog reader turns a ``CVec`` of ``Data_t``
records into Python ``Bar`` objects. :func:`build_bars` fills such a block itself (from the
int128 raws of :mod:`nautilus_dsm._fixed_point`) and hands it to ``capsule_to_list``: ~2.6x
``Bar.from_raw_arrays_to_list``. The record layout is not hard-coded: :func:`warm_up` probes it
once per process, from a genuine Rust ``CVec`` (256 bars written to a temporary parquet file and
read back by ``DataBackendSession``: file and raw-memory I/O) and a genuine pyo3 ``Bar``, then
self-checks it field by field against ``Bar.from_raw``. If anything differs, or
``NAUTILUS_DSM_SAFE_BARS`` is set, bars are built by a plain ``Bar.from_raw`` loop (same
results, slower).

Call :func:`warm_up` at startup (a data client's connect) so the probe does not run inside the
first conversion; a conversion before it still works, probing then (logged at debug).
"""

from __future__ import annotations

import ctypes
import logging
import os
import tempfile
import threading
import time
from functools import lru_cache
from typing import NamedTuple

import numpy as np
from nautilus_trader.core import nautilus_pyo3
from nautilus_trader.model.data import Bar, BarType, capsule_to_list

from nautilus_dsm._fixed_point import SCALE, to_limbs

__all__ = ["CHUNK", "SAFE_ENV", "build_bars", "fast_layout", "warm_up"]

_log = logging.getLogger(__name__)

_CVEC_NAME = b"nautilus.DataFFI.CVec"
CHUNK = 1 << 15  # records per block handed to capsule_to_list
SAFE_ENV = "NAUTILUS_DSM_SAFE_BARS"  # set (non-empty): always use the Bar.from_raw loop
# Marker values for the layout probe: distinct, aligned for any precision, OHLC-consistent.
_MARK_RAWS = (30 * SCALE, 40 * SCALE, 10 * SCALE, 20 * SCALE, 50 * SCALE)
_MARK_TS_EVENT = 0x0102030405060708
_MARK_TS_INIT = 0x1112131415161718

_capsule_new = ctypes.pythonapi.PyCapsule_New
_capsule_new.restype = ctypes.py_object
_capsule_new.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
_capsule_ptr = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_ptr.restype = ctypes.c_void_p
_capsule_ptr.argtypes = [ctypes.py_object, ctypes.c_char_p]


class _Layout(NamedTuple):
    """Where a ``Bar_t`` lives inside NautilusTrader's ``Data_t`` record (byte offsets)."""

    stride: int  # sizeof(Data_t)
    value_words: tuple[int, ...]  # 8-byte word index of open, high, low, close, volume raws
    ts_event_word: int
    ts_init_word: int


_layout_lock = threading.Lock()
_layout_state: dict[str, _Layout | None] = {}


def warm_up() -> bool:
    """Probe and self-check the ``Data_t`` layout of the fast bar path now (once per process).

    The probe writes 256 bars to a temporary parquet file, reads them back through
    NautilusTrader's Rust reader and inspects the records. Later calls return at once.

    Returns
    -------
    bool
        True when conversions will use the fast path; False when it is disabled
        (``NAUTILUS_DSM_SAFE_BARS`` set: nothing is probed) or unavailable (the probe failed,
        logged as a warning): bars are then built with ``Bar.from_raw``.
    """
    if os.environ.get(SAFE_ENV):
        return False
    return _layout(lazily=False) is not None


def fast_layout() -> _Layout | None:
    """Return the probed ``Data_t`` layout, or None when the fast path is off or unavailable.

    Probes on first use when :func:`warm_up` was not called (logged at debug).
    """
    if os.environ.get(SAFE_ENV):
        return None
    return _layout(lazily=True)


def _layout(lazily: bool) -> _Layout | None:
    with _layout_lock:
        if "layout" not in _layout_state:
            if lazily:
                _log.debug(
                    "fast bar path not warmed up: probing the Data_t layout inside the first "
                    "conversion; call nautilus_dsm.bars.warm_up() at startup to do it up front"
                )
            started = time.perf_counter()
            try:
                layout = _probe_layout()
            except Exception as exc:  # any surprise means: use the safe path
                _log.warning("fast bar path unavailable (%s); using Bar.from_raw", exc)
                layout = None
            else:
                _log.debug(
                    "fast bar path: Data_t layout probed and self-checked in %.3f s (stride %d)",
                    time.perf_counter() - started,
                    layout.stride,
                )
            _layout_state["layout"] = layout
        return _layout_state["layout"]


def _probe_stride() -> int:
    """sizeof(Data_t), read from a genuine CVec of bars produced by Nautilus' Rust reader."""
    import pyarrow.parquet as pq
    from nautilus_trader.serialization.arrow.serializer import ArrowSerializer

    bar_type = BarType.from_str("PROBE.SIM-1-MINUTE-LAST-EXTERNAL")
    n = 256
    base = 0x5A5A_0000_0000_0000
    bars = [Bar.from_raw(bar_type, *[SCALE] * 4, 0, SCALE, 0, base + i, base + i) for i in range(n)]
    table = ArrowSerializer.serialize_batch(bars, Bar)
    with tempfile.TemporaryDirectory(prefix="nautilus_dsm_probe_") as tmp:
        path = os.path.join(tmp, "probe.parquet")
        pq.write_table(table, path)
        session = nautilus_pyo3.DataBackendSession(chunk_size=n)
        session.add_file(nautilus_pyo3.NautilusDataType.Bar, "probe", path)
        for chunk in session.to_query_result():
            cvec = _capsule_ptr(chunk, _CVEC_NAME)
            ptr, length, _cap = (ctypes.c_size_t * 3).from_address(cvec)
            if length != n:
                raise RuntimeError(f"probe chunk has {length} bars, expected {n}")
            # n records of >= 16 bytes each: the first n * 16 bytes are inside the block
            words = np.frombuffer(ctypes.string_at(ptr, n * 16), dtype="<u8")
            hits = [np.flatnonzero(words == base + i) for i in range(3)]
            if any(len(h) != 2 for h in hits):  # ts_event and ts_init
                raise RuntimeError("probe bars not found where expected")
            stride = int(hits[1][0] - hits[0][0]) * 8
            if stride <= 0 or int(hits[2][0] - hits[1][0]) * 8 != stride:
                raise RuntimeError("probe records are not evenly spaced")
            return stride
    raise RuntimeError("probe query returned no data")


@lru_cache(maxsize=128)
def _template(bar_type_str: str, price_precision: int, size_precision: int, stride: int) -> bytes:
    """Build a genuine ``Data_t`` holding a bar of this type and precisions (from a pyo3 Bar)."""
    o, h, lo, c, v = _MARK_RAWS
    price = nautilus_pyo3.Price.from_raw
    bar = nautilus_pyo3.Bar(
        nautilus_pyo3.BarType.from_str(bar_type_str),
        price(o, price_precision),
        price(h, price_precision),
        price(lo, price_precision),
        price(c, price_precision),
        nautilus_pyo3.Quantity.from_raw(v, size_precision),
        _MARK_TS_EVENT,
        _MARK_TS_INIT,
    )
    capsule = bar.as_pycapsule()
    return ctypes.string_at(_capsule_ptr(capsule, None), stride)


def _probe_layout() -> _Layout:
    stride = _probe_stride()
    template = _template("PROBE.SIM-1-MINUTE-LAST-EXTERNAL", 3, 5, stride)
    words = np.frombuffer(template, dtype="<u8")

    def find(value: int, width: int) -> int:
        pattern = value.to_bytes(width, "little")
        pos = template.find(pattern)
        if pos < 0 or pos % 8 or template.find(pattern, pos + 1) >= 0:
            raise RuntimeError(f"marker {value:#x} not found once, 8-aligned, in Data_t")
        return pos // 8

    value_words = tuple(find(raw, 16) for raw in _MARK_RAWS)
    for k, word in enumerate(value_words):
        if template[word * 8 + 16] != (3 if k < 4 else 5):
            raise RuntimeError("precision byte not after the raw value")
    layout = _Layout(stride, value_words, find(_MARK_TS_EVENT, 8), find(_MARK_TS_INIT, 8))
    if words.size * 8 != stride:
        raise RuntimeError("template size mismatch")
    _self_check(layout)
    return layout


def _self_check(layout: _Layout) -> None:
    """Build bars both ways and require every field to agree before trusting the layout."""
    bar_type = BarType.from_str("SELFCHECK.SIM-5-MINUTE-LAST-EXTERNAL")
    raws = [
        (12345 * 10**15, 12400 * 10**15, 12300 * 10**15, 12399 * 10**15, 3 * 10**29 + 10**13),
        (10**29, 10**29, 10**29, 10**29, 0),
        (10**13, 3 * 10**13, 10**13, 2 * 10**13, 5 * 10**13),
    ]
    ts = np.array([1, 2**63 + 5, 2**64 - 1], dtype=np.uint64)
    limbs = []
    for k in range(5):
        col = [to_limbs(r[k]) for r in raws]
        limbs.append(
            (np.array([c[0] for c in col], np.uint64), np.array([c[1] for c in col], np.uint64))
        )
    fast = _bars_fast(layout, bar_type, 3, 3, limbs, ts)
    for bar, r, t in zip(fast, raws, ts.tolist(), strict=True):
        ref = Bar.from_raw(bar_type, r[0], r[1], r[2], r[3], 3, r[4], 3, t, t)
        got = (bar.bar_type, bar.open, bar.high, bar.low, bar.close, bar.volume)
        want = (ref.bar_type, ref.open, ref.high, ref.low, ref.close, ref.volume)
        same = (
            got == want
            and [x.raw for x in got[1:]] == [x.raw for x in want[1:]]
            and [x.precision for x in got[1:]] == [x.precision for x in want[1:]]
            and (bar.ts_event, bar.ts_init) == (t, t)
            and bar == ref
            and str(bar) == str(ref)
            and type(bar) is Bar
        )
        if not same:
            raise RuntimeError(f"self-check mismatch: {bar} != {ref}")


def _bars_fast(
    layout: _Layout,
    bar_type: BarType,
    price_precision: int,
    size_precision: int,
    limbs: list[tuple[np.ndarray, np.ndarray]],
    ts: np.ndarray,
) -> list[Bar]:
    template = np.frombuffer(
        _template(str(bar_type), price_precision, size_precision, layout.stride), dtype=np.uint8
    )
    n = len(ts)
    # One block of records, filled from the template once; each chunk overwrites only the
    # values and timestamps, and capsule_to_list copies every record into a new Bar.
    block = np.empty((min(n, CHUNK), layout.stride), dtype=np.uint8)
    block[:] = template
    words = block.view("<u8")
    bars: list[Bar] = []
    for start in range(0, n, CHUNK):
        stop = min(n, start + CHUNK)
        m = stop - start
        for word, (hi, lo) in zip(layout.value_words, limbs, strict=True):
            words[:m, word] = lo[start:stop]
            words[:m, word + 1] = hi[start:stop]
        words[:m, layout.ts_event_word] = ts[start:stop]
        words[:m, layout.ts_init_word] = ts[start:stop]
        cvec = (ctypes.c_size_t * 3)(block.ctypes.data, m, m)
        capsule = _capsule_new(ctypes.addressof(cvec), _CVEC_NAME, None)  # no destructor
        bars.extend(capsule_to_list(capsule))
        del capsule
    return bars


def _bars_safe(
    bar_type: BarType,
    price_precision: int,
    size_precision: int,
    limbs: list[tuple[np.ndarray, np.ndarray]],
    ts: np.ndarray,
) -> list[Bar]:
    ints = [((hi.astype(object) << 64) | lo.astype(object)).tolist() for hi, lo in limbs]
    pp, sp = price_precision, size_precision
    return [
        Bar.from_raw(bar_type, o, h, lo_, c, pp, v, sp, t, t)
        for o, h, lo_, c, v, t in zip(*ints, ts.tolist(), strict=True)
    ]


def build_bars(
    bar_type: BarType,
    price_precision: int,
    size_precision: int,
    limbs: list[tuple[np.ndarray, np.ndarray]],
    ts: np.ndarray,
) -> list[Bar]:
    """Return plain ``Bar`` objects from int128 raws, by the fast path when it is available.

    Parameters
    ----------
    bar_type : BarType
        The bar type of every bar.
    price_precision, size_precision : int
        The instrument's precisions (the raws are already on its tick and step).
    limbs : list[tuple[numpy.ndarray, numpy.ndarray]]
        ``(hi, lo)`` uint64 limbs of open, high, low, close and volume raws.
    ts : numpy.ndarray
        ``uint64`` close times, ``ts_event = ts_init``.
    """
    if len(ts) == 0:
        return []
    layout = fast_layout()
    if layout is None:
        return _bars_safe(bar_type, price_precision, size_precision, limbs, ts)
    return _bars_fast(layout, bar_type, price_precision, size_precision, limbs, ts)
