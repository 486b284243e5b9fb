"""The bench's own error (torch-free, so peers and the method registry share it)."""
from __future__ import annotations

from lemica.errors import LemicaError


class MethodUnavailable(LemicaError):
    """A bench method cannot run on this workload or budget; the message says why (it goes into the results)."""
