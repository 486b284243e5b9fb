"""The names of the methods ``lemica bench`` compares, in report order.

Torch-free, so that the command line can list and check them without importing the methods themselves;
``lemica.bench.methods.REGISTRY`` holds one method per name, in this order.
"""
from __future__ import annotations

METHOD_NAMES = ("vanilla", "lemica-lexminimax", "lemica-minimax", "lemica-shortest", "lemica-fill", "meancache",
                "uniform", "fewer-steps", "cache-dit-static", "teacache", "teacache-retsteps", "fbcache", "magcache",
                "dbcache", "seacache", "easycache", "taylorseer", "smoothcache", "pab", "fastercache")
