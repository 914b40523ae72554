"""The data-source manager: Binance klines through cache -> Vision -> REST, with quality reports.

This sub-package knows nothing about the Nautilus engine; ``nautilus_dsm.bars`` and the client
build on it.
"""
