"""Facts about Binance and about time that several modules need: one home for each.

Nothing here imports anything of the package, so every module (the engine, the Nautilus side,
the imitation) can use it.
"""

from __future__ import annotations

# The Nautilus venue of every instrument id this package serves (``BTCUSDT-PERP.BINANCE``).
VENUE = "BINANCE"

NS_PER_MS = 1_000_000
SECOND_MS = 1_000
MINUTE_MS = 60 * SECOND_MS
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS

DEFAULT_VISION_URL = "https://data.binance.vision"

# Vision and the cache write ``1M`` (a calendar month) as ``1mo``: on a case-insensitive file
# system ``1M`` and ``1m`` would be one folder.
MONTH_PATH_LABEL = "1mo"

# A frame row is ~100 bytes (12 columns, 8 bytes each, plus validity): 50 M rows ~ 5 GB.
DEFAULT_MAX_ROWS = 50_000_000
