"""Error graph: the calibrated cost of reusing the cache across each skip (i -> j) of a T-step sampler.

Node k is denoising step k (0 = noisiest). Edge (i, j) means "compute the full transformer at steps i
and j, reuse the cached residual for i+1 .. j-1"; its weight is the measured output error of doing so.
Edges (i, i+1) skip nothing: they cost 0 and may be omitted. Missing longer edges are unusable.
"""
from __future__ import annotations

import json
import math
import numbers
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from lemica._io import atomic_write_bytes, read_json
from lemica.errors import GraphFormatError

FORMAT = "lemica-graph"
VERSION = 1


# The graph metadata that says what a graph (and a schedule planned on it) is valid for: a run that differs in
# any of these is not the run that was calibrated.
CALIBRATION_KEYS = ("pipeline", "transformer", "transformer_config_hash", "sampler", "sampler_config", "num_steps",
                    "guidance", "resolution")


def _as_int(value: Any, what: str) -> int:
    # bool is an int subclass, but True as a step index is always a mistake.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise GraphFormatError(f"{what} must be an integer, got {value!r}")
    return int(value)


def _as_finite_nonneg(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise GraphFormatError(f"{what} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise GraphFormatError(f"{what} must be a finite number >= 0, got {value!r}")
    return value


@dataclass(frozen=True)
class Edge:
    """Mean error of one skip over the calibration samples, its standard deviation and the sample count."""

    error: float
    std: float = 0.0
    samples: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "error", _as_finite_nonneg(self.error, "error"))
        object.__setattr__(self, "std", _as_finite_nonneg(self.std, "std"))
        samples = _as_int(self.samples, "samples")
        if samples < 1:
            raise GraphFormatError(f"samples must be >= 1, got {samples}")
        object.__setattr__(self, "samples", samples)


@dataclass(frozen=True)
class ErrorGraph:
    """T steps, skips up to `max_skip` long, one `Edge` per measured (i, j); validated on construction."""

    num_steps: int
    max_skip: int
    edges: dict[tuple[int, int], Edge]
    meta: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        T, L = _check_sizes(self.num_steps, self.max_skip)
        if not isinstance(self.edges, Mapping):
            raise GraphFormatError(f"edges must be a mapping (i, j) -> Edge, got {type(self.edges).__name__}")
        edges: dict[tuple[int, int], Edge] = {}
        for key, edge in self.edges.items():
            if not (isinstance(key, tuple) and len(key) == 2):
                raise GraphFormatError(f"edge key must be a pair (i, j), got {key!r}")
            i, j = _as_int(key[0], "edge i"), _as_int(key[1], "edge j")
            _check_edge_key(i, j, T, L)
            if not isinstance(edge, Edge):
                try:
                    edge = Edge(edge)
                except GraphFormatError as e:
                    raise GraphFormatError(f"edge ({i}, {j}): {e}") from None
            if (i, j) in edges:
                raise GraphFormatError(f"duplicate edge ({i}, {j})")
            edges[(i, j)] = edge
        meta = {} if self.meta is None else self.meta
        if not isinstance(meta, Mapping):
            raise GraphFormatError(f"meta must be a JSON object, got {type(meta).__name__}")
        object.__setattr__(self, "num_steps", T)
        object.__setattr__(self, "max_skip", L)
        object.__setattr__(self, "edges", dict(sorted(edges.items())))
        object.__setattr__(self, "meta", dict(meta))

    # --- queries -------------------------------------------------------------------------------
    def has_edge(self, i: int, j: int) -> bool:
        """Whether the skip i -> j may be used: stored, or a (free) step to the next node."""
        return (i, j) in self.edges or (j == i + 1 and 0 <= i and j < self.num_steps)

    def error(self, i: int, j: int) -> float:
        """Mean error of skip i -> j; 0.0 for an unstored (i, i+1); KeyError for any other unknown edge."""
        edge = self.edges.get((i, j))
        if edge is not None:
            return edge.error
        if j == i + 1 and 0 <= i and j < self.num_steps:
            return 0.0
        raise KeyError(f"no edge ({i}, {j}) in this graph (num_steps={self.num_steps}, max_skip={self.max_skip})")

    def to_matrix(self) -> list[list[float]]:
        """T x T mean errors, NaN where there is no edge (handy for heat maps)."""
        T = self.num_steps
        m = [[math.nan] * T for _ in range(T)]
        for i in range(T - 1):
            m[i][i + 1] = 0.0
        for (i, j), edge in self.edges.items():
            m[i][j] = edge.error
        return m

    # --- construction helpers --------------------------------------------------------------------
    @classmethod
    def from_matrix(
        cls,
        errors: Any,
        *,
        max_skip: int | None = None,
        std: Any = None,
        samples: int = 1,
        meta: dict[str, Any] | None = None,
    ) -> "ErrorGraph":
        """Build from a T x T array: entry [i][j] (i < j, j - i <= max_skip) is the error; NaN = missing."""
        rows = [list(map(float, row)) for row in errors]
        T = len(rows)
        if any(len(row) != T for row in rows):
            raise GraphFormatError("error matrix must be square (T x T)")
        L = T - 1 if max_skip is None else max_skip
        std_rows = None if std is None else [list(map(float, row)) for row in std]
        edges = {}
        for i in range(T):
            for j in range(i + 1, min(T, i + L + 1)):
                if math.isnan(rows[i][j]):
                    continue
                s = 0.0 if std_rows is None else std_rows[i][j]
                try:
                    edges[(i, j)] = Edge(rows[i][j], s, samples)
                except GraphFormatError as e:
                    raise GraphFormatError(f"edge ({i}, {j}): {e}") from None
        return cls(T, L, edges, meta)

    # --- JSON --------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "num_steps": self.num_steps,
            "max_skip": self.max_skip,
            "edges": [
                {"i": i, "j": j, "error": e.error, "std": e.std, "samples": e.samples}
                for (i, j), e in self.edges.items()
            ],
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, d: Any) -> "ErrorGraph":
        if not isinstance(d, Mapping):
            raise GraphFormatError(f"graph must be a JSON object, got {type(d).__name__}")
        if d.get("format") != FORMAT:
            raise GraphFormatError(f"'format' must be {FORMAT!r}, got {d.get('format')!r}")
        if d.get("version") != VERSION or isinstance(d.get("version"), bool):
            raise GraphFormatError(f"unsupported 'version' {d.get('version')!r} (this lemica reads version {VERSION})")
        for key in ("num_steps", "max_skip", "edges"):
            if key not in d:
                raise GraphFormatError(f"missing required field {key!r}")
        T, L = _check_sizes(d["num_steps"], d["max_skip"])
        if not isinstance(d["edges"], list):
            raise GraphFormatError("'edges' must be a list")
        edges: dict[tuple[int, int], Edge] = {}
        for n, item in enumerate(d["edges"]):
            where = f"edges[{n}]"
            if not isinstance(item, Mapping):
                raise GraphFormatError(f"{where} must be an object with i, j, error")
            for key in ("i", "j", "error"):
                if key not in item:
                    raise GraphFormatError(f"{where}: missing field {key!r}")
            try:
                i, j = _as_int(item["i"], "i"), _as_int(item["j"], "j")
                where = f"{where} (i={i}, j={j})"
                _check_edge_key(i, j, T, L)
                if (i, j) in edges:
                    raise GraphFormatError("duplicate edge")
                edges[(i, j)] = Edge(item["error"], item.get("std", 0.0), item.get("samples", 1))
            except GraphFormatError as e:
                raise GraphFormatError(f"{where}: {e}") from None
        return cls(T, L, edges, d.get("meta", {}))

    def to_json(self) -> str:
        """Indented JSON with one edge per line (graphs have thousands of edges)."""
        d = self.to_dict()
        placeholder = "__lemica_edges__"
        text = json.dumps({**d, "edges": placeholder}, indent=2, allow_nan=False)
        rows = ",\n    ".join(json.dumps(e, allow_nan=False) for e in d["edges"])
        edges_text = f"[\n    {rows}\n  ]" if rows else "[]"
        return text.replace(json.dumps(placeholder), edges_text, 1) + "\n"

    def save(self, path: str | os.PathLike) -> Path:
        """Write the graph as JSON, atomically."""
        return atomic_write_bytes(path, self.to_json().encode("utf-8"))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ErrorGraph":
        """Read and validate a graph file; GraphFormatError names the problem (and the file)."""
        try:
            data = read_json(path)
        except ValueError as e:  # json.JSONDecodeError
            raise GraphFormatError(f"{path}: not valid JSON ({e})") from None
        try:
            return cls.from_dict(data)
        except GraphFormatError as e:
            raise GraphFormatError(f"{path}: {e}") from None


def _check_sizes(num_steps: Any, max_skip: Any) -> tuple[int, int]:
    T = _as_int(num_steps, "num_steps")
    if T < 2:
        raise GraphFormatError(f"num_steps must be >= 2, got {T}")
    L = _as_int(max_skip, "max_skip")
    if not 1 <= L <= T - 1:
        raise GraphFormatError(f"max_skip must be in [1, num_steps - 1 = {T - 1}], got {L}")
    return T, L


def _check_edge_key(i: int, j: int, T: int, L: int) -> None:
    if i >= j:
        raise GraphFormatError(f"edge ({i}, {j}): need i < j")
    if i < 0 or j > T - 1:
        raise GraphFormatError(f"edge ({i}, {j}): out of range (need 0 <= i < j <= num_steps - 1 = {T - 1})")
    if j - i > L:
        raise GraphFormatError(f"edge ({i}, {j}): j - i = {j - i} exceeds max_skip = {L}")


def synthetic_graph(num_steps: int = 50, max_skip: int = 10) -> ErrorGraph:
    """A deterministic, clearly synthetic graph shaped like measured ones (no model was run).

    Early (noisy) steps change the output most, the last few a little more again, and a skip's
    error grows faster than linearly with its length. A fixed pseudo-random jitter breaks ties.
    """
    T = num_steps

    def drift(t: int) -> float:
        u = t / (T - 1)
        return 0.06 * math.exp(-8.0 * u) + 0.003 + 0.006 * math.exp(-25.0 * (1.0 - u))

    edges = {}
    for i in range(T - 1):
        for j in range(i + 2, min(T, i + max_skip + 1)):
            skipped = sum(drift(t) for t in range(i + 1, j))
            jitter = 1.0 + 0.08 * math.sin(12.9898 * i + 78.233 * j)
            error = skipped * (1.0 + 0.25 * (j - i - 2)) * jitter
            std = error * (0.2 + 0.05 * math.cos(3.7 * i + 1.3 * j))
            edges[(i, j)] = Edge(float(f"{error:.6g}"), float(f"{std:.3g}"), 8)
    meta = {
        "synthetic": True,
        "description": "SYNTHETIC example graph generated by lemica.graph.synthetic_graph; "
        "not measured from any model. For demos and tests only.",
        "generator": f"lemica.graph.synthetic_graph(num_steps={T}, max_skip={max_skip})",
        "metric": "synthetic relative L1",
    }
    return ErrorGraph(T, max_skip, edges, meta)


def example_graph_path() -> Path:
    """Path of the bundled synthetic example graph (T=50, max_skip=10)."""
    return Path(str(resources.files("lemica") / "data" / "example_graph.json"))


def load_example_graph() -> ErrorGraph:
    return ErrorGraph.load(example_graph_path())
