"""``lemica bench``: lemica against peer caching methods at matched compute (see ``runner`` for the protocol).

Kept import-light (``lemica`` CLI start-up): import ``lemica.bench.methods``, ``.runner``, ``.teacache`` ... directly.
"""
