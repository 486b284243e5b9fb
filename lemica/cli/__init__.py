"""The ``lemica`` command line (typer): ``app`` registers the commands of ``plan``, ``run`` and ``bench``.

Imports go one way: ``app`` → the command modules → ``_common`` (messages, loaders, shared options) → the library.
"""
import os

# Before torch starts its OpenMP pool: idle workers sleep instead of spinning, which on a shared or
# oversubscribed CPU made every command several times slower. Users can still override it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# cache-dit (a bench peer) logs "[Cache-DiT] ..." notices at info level unless told otherwise when it is imported.
os.environ.setdefault("CACHE_DIT_LOG_LEVEL", "warning")

from lemica.cli.app import app  # noqa: E402

__all__ = ["app"]
