"""The methods ``lemica bench`` compares, one file each, registered with ``@register`` (``base``).

Importing this package registers every method; the import order below is the report order. Torch-free at import
(the command line lists the names): each method imports its peer implementation when it builds a setting.
How each peer runs, with the official code it follows, is in each file's docstring.
"""
from __future__ import annotations

from lemica.bench.methods import (vanilla, lemica_objectives, lemica_fill, lemica_adaptive,  # noqa: F401
                                  meancache, uniform, fewer_steps, cache_dit_static, cache_dit_dynamic, teacache, fbcache,
                                  magcache, dbcache, seacache, seacache_official, easycache, sencache, taylorseer,
                                  smoothcache, pab, fastercache)
from lemica.bench.methods.base import (REGISTRY, Kind, Method, Setting, method_names, parse_methods,
                                       reference_method, register)
from lemica.bench.methods.common import output_cache_setting, schedule_setting

__all__ = ["REGISTRY", "Kind", "Method", "Setting", "method_names", "parse_methods", "reference_method", "register",
           "output_cache_setting", "schedule_setting"]
