"""Error graph: the calibrated cost of each skip (i -> j) of a T-step sampler, per fill rule.

Node k is denoising step k (0 = noisiest). Edge (i, j) means "compute the full transformer at steps i
and j, fill i+1 .. j-1 from the cache"; its weight is the measured output error of doing so. How the
skipped steps are filled is the edge's *rule*, so the graph is a multigraph: one `Edge` per (i, j, rule).

Rules are open-ended names; lemica knows

* ``residual`` (the default, LeMiCa's rule): reuse the block-stack residual of step i;
* ``extrapolate``: first-order extrapolation of the residual from the two most recent computed steps;
* ``mean-velocity:k`` (k >= 1, MeanCache): an average velocity over the last k steps of the trajectory.

A rule that needs history the segment start does not have (``extrapolate`` from step 0, ``mean-velocity:k``
from a step i < k - 1) is unavailable on that edge, so such an edge must not be stored. Edges (i, i+1) skip
nothing: they cost 0 unless stored, whatever the rule. Missing longer edges are unusable.

File format version 1 stores the residual rule only; version 2 adds a ``rule`` to every edge. Loading reads
both; saving writes version 1 when the graph is residual-only (so existing readers keep working) and
version 2 otherwise.
"""
from __future__ import annotations

import json
import math
import numbers
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

from lemica._io import atomic_write_bytes, read_json
from lemica.errors import GraphFormatError, InputFileError

FORMAT = "lemica-graph"
VERSION = 2  # the newest version this lemica writes
VERSIONS = (1, 2)  # the versions it reads
MAX_STEPS = 10_000  # far beyond any sampler; refuses absurd sizes before anything T-sized is allocated

RESIDUAL = "residual"
EXTRAPOLATE = "extrapolate"
MEAN_VELOCITY = "mean-velocity"
_MEAN_VELOCITY_RE = re.compile(r"mean-velocity:([1-9][0-9]*)")


# The graph metadata that says what a graph (and a schedule planned on it) is valid for: a run that differs in
# any of these is not the run that was calibrated.
CALIBRATION_KEYS = ("pipeline", "transformer", "transformer_config_hash", "sampler", "sampler_config", "num_steps",
                    "guidance", "resolution")


# ----------------------------------------------------------------------------------------------
# fill rules
# ----------------------------------------------------------------------------------------------
def mean_velocity(k: int) -> str:
    """Name of MeanCache's rule with a k-step window: ``mean-velocity:k``."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"mean-velocity window must be an integer >= 1, got {k!r}")
    return f"{MEAN_VELOCITY}:{int(k)}"


def rule_problem(name: Any) -> str | None:
    """Why `name` is not a valid rule name, or None when it is.

    Any non-empty string without surrounding whitespace is a rule; names of the ``mean-velocity`` family
    must carry a canonical window (``mean-velocity:3``, not ``mean-velocity:03``), so that one rule has
    one name.
    """
    if not isinstance(name, str):
        return f"rule name must be a string, got {name!r}"
    if not name or name != name.strip():
        return f"rule name must be non-empty without surrounding whitespace, got {name!r}"
    if name.startswith(MEAN_VELOCITY) and not _MEAN_VELOCITY_RE.fullmatch(name):
        return f"rule {name!r}: the mean-velocity rule is written 'mean-velocity:k' with an integer k >= 1"
    return None


def rule_history(name: str) -> int:
    """How many steps before the segment start a rule reads (0 for rules lemica does not know).

    ``extrapolate`` reads one earlier computed step. ``mean-velocity:k`` at the first cached step i+1 of a
    segment starting at i averages the last k logged steps i+1-k .. i, so it reads k - 1 steps before the
    start: ``mean-velocity:1`` works from step 0, as in MeanCache's own Qwen-Image-2512 B=10 table, whose first
    segment 0 -> 2 uses it (UnicomAI/MeanCache MeanCache4Qwen-Image/Mc_qwenimage_2512.py:383-391).
    """
    if name == EXTRAPOLATE:
        return 1
    match = _MEAN_VELOCITY_RE.fullmatch(name)
    return int(match.group(1)) - 1 if match else 0


def rule_available(name: str, start: int) -> bool:
    """Whether the rule can fill a segment that starts at computed step `start` (it has the history)."""
    return start >= rule_history(name)


def rule_sort_key(name: str) -> tuple:
    """Fixed rule order: residual, extrapolate, mean-velocity by window, then others by name.

    The planner breaks exact ties between rules in this order, so the result never depends on how a
    graph happens to list them.
    """
    if name == RESIDUAL:
        return (0, 0, "")
    if name == EXTRAPOLATE:
        return (1, 0, "")
    match = _MEAN_VELOCITY_RE.fullmatch(name)
    if match:
        return (2, int(match.group(1)), "")
    return (3, 0, name)


def sort_rules(names: Iterable[str]) -> tuple[str, ...]:
    """Distinct rule names in the fixed order of `rule_sort_key`."""
    return tuple(sorted(set(names), key=rule_sort_key))


# Names of the fill rules the runtime can run, kept here (free of torch) so that a schedule or a --rules list
# naming an unknown rule is refused when it is built or read, before any model loads.
# lemica.runtime.fill.register_rule adds to them.
_KNOWN_RULES = {RESIDUAL, EXTRAPOLATE}
_KNOWN_FAMILIES = {MEAN_VELOCITY}


def declare_rule(name: str, *, family: bool = False) -> None:
    """Record a fill rule name (``family``: names ``name:k``) as one the runtime can run."""
    (_KNOWN_FAMILIES if family else _KNOWN_RULES).add(name)


def unknown_rule_problem(name: Any) -> str | None:
    """Why `name` is not the name of a fill rule the runtime knows (or not a valid name at all), or None."""
    problem = rule_problem(name)
    if problem or name in _KNOWN_RULES:
        return problem
    match = re.fullmatch(r"(.+):([1-9][0-9]*)", name)
    if match and match.group(1) in _KNOWN_FAMILIES:
        return None
    known = sorted(_KNOWN_RULES) + [f"{f}:k" for f in sorted(_KNOWN_FAMILIES)]
    return f"unknown fill rule {name!r}; known rules: {', '.join(known)} (lemica.runtime.fill.register_rule adds one)"


def expand_rules(text: str | Iterable[str]) -> tuple[str, ...]:
    """Rule names from a comma-separated list, with windows as ranges: ``"residual,extrapolate,mean-velocity:1-4"``
    is residual, extrapolate and mean-velocity:1 .. mean-velocity:4, in `rule_sort_key` order.

    ``"all"`` is lemica's built-in rules with MeanCache's windows 1..5. Raises ValueError naming a bad entry.
    """
    items = [text] if isinstance(text, str) else list(text)
    names: list[str] = []
    for item in items:
        for part in (p.strip() for p in str(item).split(",")):
            if not part:
                continue
            if part == "all":
                names += [RESIDUAL, EXTRAPOLATE, *(mean_velocity(k) for k in range(1, 6))]
                continue
            match = re.fullmatch(r"mean-velocity:([1-9][0-9]*)-([1-9][0-9]*)", part)
            if match:
                lo, hi = int(match.group(1)), int(match.group(2))
                if lo > hi:
                    raise ValueError(f"rule range {part!r}: {lo} > {hi}")
                names += [mean_velocity(k) for k in range(lo, hi + 1)]
                continue
            problem = unknown_rule_problem(part)
            if problem:
                raise ValueError(problem)
            names.append(part)
    if not names:
        raise ValueError("no fill rule given")
    return sort_rules(names)


def _check_rule(name: Any) -> str:
    problem = rule_problem(name)
    if problem:
        raise GraphFormatError(problem)
    return name


# ----------------------------------------------------------------------------------------------
# edges and graphs
# ----------------------------------------------------------------------------------------------
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


EdgeMap = dict[tuple[int, int], Edge]


@dataclass(frozen=True)
class ErrorGraph:
    """T steps, skips up to `max_skip` long, one `Edge` per measured (i, j, rule); validated on construction.

    `edges` holds the residual rule's edges (the whole graph for residual-only users); `by_rule` maps every
    rule to its edges, residual included. Give other rules through `by_rule` (residual edges in either
    place, or the same ones in both). After construction `by_rule` lists only rules with edges, in `rule_sort_key` order,
    and `edges is by_rule["residual"]` whenever there are residual edges.
    """

    num_steps: int
    max_skip: int
    edges: Mapping[tuple[int, int], Edge] | None = field(default=None, compare=False, repr=False)  # = by_rule[residual]
    meta: dict[str, Any] | None = None
    by_rule: Mapping[str, Mapping[tuple[int, int], Edge]] | None = None

    def __post_init__(self) -> None:
        T, L = _check_sizes(self.num_steps, self.max_skip)
        residual = _check_edges({} if self.edges is None else self.edges, T, L, RESIDUAL, "")
        given = {} if self.by_rule is None else self.by_rule
        if not isinstance(given, Mapping):
            raise GraphFormatError(f"by_rule must be a mapping rule -> edges, got {type(given).__name__}")
        by_rule: dict[str, EdgeMap] = {}
        for rule, edges in given.items():
            _check_rule(rule)
            by_rule[rule] = _check_edges(edges, T, L, rule, f"rule {rule!r}: ")
        if residual:
            # Both may hold the same edges (dataclasses.replace passes both back in); different ones conflict.
            if by_rule.get(RESIDUAL) and by_rule[RESIDUAL] != residual:
                raise GraphFormatError("residual edges given twice, differently (in edges and in by_rule['residual'])")
            by_rule[RESIDUAL] = residual
        by_rule = {rule: by_rule[rule] for rule in sort_rules(by_rule) if by_rule[rule]}
        meta = {} if self.meta is None else self.meta
        if not isinstance(meta, Mapping):
            raise GraphFormatError(f"meta must be a JSON object, got {type(meta).__name__}")
        object.__setattr__(self, "num_steps", T)
        object.__setattr__(self, "max_skip", L)
        object.__setattr__(self, "by_rule", by_rule)
        object.__setattr__(self, "edges", by_rule.get(RESIDUAL, {}))
        object.__setattr__(self, "meta", dict(meta))

    # --- queries -------------------------------------------------------------------------------
    @property
    def rules(self) -> tuple[str, ...]:
        """Rules with at least one stored edge, in `rule_sort_key` order."""
        return tuple(self.by_rule)

    @property
    def is_residual_only(self) -> bool:
        """True when no rule but residual stores an edge (the graph is a version-1 graph)."""
        return set(self.by_rule) <= {RESIDUAL}

    def rule_edges(self, rule: str) -> EdgeMap:
        """The edges of one rule (empty for a rule the graph does not store)."""
        return dict(self.by_rule.get(rule, {}))

    def edge_rules(self, i: int, j: int) -> dict[str, Edge]:
        """Every rule stored for the skip i -> j, in `rule_sort_key` order."""
        return {rule: edges[(i, j)] for rule, edges in self.by_rule.items() if (i, j) in edges}

    def has_edge(self, i: int, j: int, rule: str = RESIDUAL) -> bool:
        """Whether the skip i -> j may be used with `rule`: stored, or a (free) step to the next node."""
        return (i, j) in self.by_rule.get(rule, {}) or (j == i + 1 and 0 <= i and j < self.num_steps)

    def error(self, i: int, j: int, rule: str = RESIDUAL) -> float:
        """Mean error of skip i -> j under `rule`; 0.0 for an unstored (i, i+1); KeyError for other unknown edges."""
        edge = self.by_rule.get(rule, {}).get((i, j))
        if edge is not None:
            return edge.error
        if j == i + 1 and 0 <= i and j < self.num_steps:
            return 0.0
        raise KeyError(
            f"no edge ({i}, {j}) for rule {rule!r} in this graph (num_steps={self.num_steps}, max_skip={self.max_skip})"
        )

    def restrict_rules(self, rules: Iterable[str]) -> "ErrorGraph":
        """The same graph with only the named rules' edges (names it does not store are ignored)."""
        keep = set(rules)
        return ErrorGraph(self.num_steps, self.max_skip, meta=self.meta,
                          by_rule={r: e for r, e in self.by_rule.items() if r in keep})

    def to_matrix(self, rule: str = RESIDUAL) -> list[list[float]]:
        """T x T mean errors of one rule, NaN where there is no edge (handy for heat maps)."""
        T = self.num_steps
        m = [[math.nan] * T for _ in range(T)]
        for i in range(T - 1):
            m[i][i + 1] = 0.0
        for (i, j), edge in self.by_rule.get(rule, {}).items():
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
        rule: str = RESIDUAL,
    ) -> "ErrorGraph":
        """Build a one-rule graph from a T x T array: entry [i][j] (i < j, j - i <= max_skip) is the error; NaN = missing."""
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
        return cls(T, L, meta=meta, by_rule={_check_rule(rule): edges})

    # --- JSON --------------------------------------------------------------------------------------
    def to_dict(self, version: int | None = None) -> dict[str, Any]:
        """JSON-ready dict; `version` None writes 1 for a residual-only graph and 2 otherwise."""
        if version is None:
            version = 1 if self.is_residual_only else 2
        if version not in VERSIONS or isinstance(version, bool):
            raise GraphFormatError(f"cannot write graph version {version!r} (versions {VERSIONS})")
        if version == 1:
            if not self.is_residual_only:
                raise GraphFormatError(
                    f"version 1 stores the residual rule only; this graph also has {', '.join(self.rules)}"
                )
            edges = [{"i": i, "j": j, "error": e.error, "std": e.std, "samples": e.samples}
                     for (i, j), e in self.edges.items()]
        else:
            rows = [(i, j, rule_sort_key(rule), rule, e) for rule, es in self.by_rule.items() for (i, j), e in es.items()]
            rows.sort(key=lambda r: r[:3])
            edges = [{"i": i, "j": j, "rule": rule, "error": e.error, "std": e.std, "samples": e.samples}
                     for i, j, _, rule, e in rows]
        return {
            "format": FORMAT,
            "version": version,
            "num_steps": self.num_steps,
            "max_skip": self.max_skip,
            "edges": edges,
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, d: Any) -> "ErrorGraph":
        if not isinstance(d, Mapping):
            raise GraphFormatError(f"graph must be a JSON object, got {type(d).__name__}")
        if d.get("format") != FORMAT:
            raise GraphFormatError(f"'format' must be {FORMAT!r}, got {d.get('format')!r}")
        version = d.get("version")
        if version not in VERSIONS or isinstance(version, bool) or not isinstance(version, int):
            raise GraphFormatError(f"unsupported 'version' {version!r} (this lemica reads versions 1 and 2)")
        for key in ("num_steps", "max_skip", "edges"):
            if key not in d:
                raise GraphFormatError(f"missing required field {key!r}")
        T, L = _check_sizes(d["num_steps"], d["max_skip"])
        if not isinstance(d["edges"], list):
            raise GraphFormatError("'edges' must be a list")
        by_rule: dict[str, EdgeMap] = {}
        required = ("i", "j", "rule", "error") if version == 2 else ("i", "j", "error")
        for n, item in enumerate(d["edges"]):
            where = f"edges[{n}]"
            if not isinstance(item, Mapping):
                raise GraphFormatError(f"{where} must be an object with {', '.join(required)}")
            for key in required:
                if key not in item:
                    raise GraphFormatError(f"{where}: missing field {key!r}")
            if version == 1 and "rule" in item:
                raise GraphFormatError(f"{where}: edges carry a 'rule' only in version 2")
            try:
                i, j = _as_int(item["i"], "i"), _as_int(item["j"], "j")
                where, rule = f"edges[{n}] (i={i}, j={j})", RESIDUAL
                if version == 2:
                    rule = _check_rule(item["rule"])
                    where = f"edges[{n}] (i={i}, j={j}, rule={rule!r})"
                _check_edge_key(i, j, T, L)
                _check_history(i, j, rule)
                edges = by_rule.setdefault(rule, {})
                if (i, j) in edges:
                    raise GraphFormatError("duplicate edge")
                edges[(i, j)] = Edge(item["error"], item.get("std", 0.0), item.get("samples", 1))
            except GraphFormatError as e:
                raise GraphFormatError(f"{where}: {e}") from None
        return cls(T, L, meta=d.get("meta", {}), by_rule=by_rule)

    def to_json(self, version: int | None = None) -> str:
        """Indented JSON with one edge per line (graphs have thousands of edges)."""
        d = self.to_dict(version)
        placeholder = "__lemica_edges__"
        text = json.dumps({**d, "edges": placeholder}, indent=2, allow_nan=False)
        rows = ",\n    ".join(json.dumps(e, allow_nan=False) for e in d["edges"])
        edges_text = f"[\n    {rows}\n  ]" if rows else "[]"
        return text.replace(json.dumps(placeholder), edges_text, 1) + "\n"

    def save(self, path: str | os.PathLike, version: int | None = None) -> Path:
        """Write the graph as JSON, atomically (version as in `to_dict`)."""
        return atomic_write_bytes(path, self.to_json(version).encode("utf-8"))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ErrorGraph":
        """Read and validate a graph file (version 1 or 2); GraphFormatError names the problem (and the file)."""
        try:
            data = read_json(path)
        except InputFileError as e:
            raise GraphFormatError(str(e)) from None
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
    if T > MAX_STEPS:
        raise GraphFormatError(f"num_steps = {T} exceeds the plausible maximum of {MAX_STEPS} sampler steps")
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


def _check_history(i: int, j: int, rule: str) -> None:
    if not rule_available(rule, i):
        raise GraphFormatError(
            f"edge ({i}, {j}): rule {rule!r} needs {rule_history(rule)} step(s) before its start {i}, "
            "so it is unavailable there and must not be stored"
        )


def _check_edges(edges: Any, T: int, L: int, rule: str, prefix: str) -> EdgeMap:
    """Validated, sorted copy of one rule's edge mapping; `prefix` names the rule in messages."""
    if not isinstance(edges, Mapping):
        raise GraphFormatError(f"{prefix}edges must be a mapping (i, j) -> Edge, got {type(edges).__name__}")
    out: EdgeMap = {}
    for key, edge in edges.items():
        try:
            if not (isinstance(key, tuple) and len(key) == 2):
                raise GraphFormatError(f"edge key must be a pair (i, j), got {key!r}")
            i, j = _as_int(key[0], "edge i"), _as_int(key[1], "edge j")
            _check_edge_key(i, j, T, L)
            _check_history(i, j, rule)
            if not isinstance(edge, Edge):
                try:
                    edge = Edge(edge)
                except GraphFormatError as e:
                    raise GraphFormatError(f"edge ({i}, {j}): {e}") from None
            if (i, j) in out:
                raise GraphFormatError(f"duplicate edge ({i}, {j})")
            out[(i, j)] = edge
        except GraphFormatError as e:
            raise GraphFormatError(f"{prefix}{e}") from None
    return dict(sorted(out.items()))


def synthetic_graph(num_steps: int = 50, max_skip: int = 10) -> ErrorGraph:
    """A deterministic, clearly synthetic graph shaped like measured ones (no model was run).

    Early (noisy) steps change the output most, the last few a little more again, and a skip's
    error grows faster than linearly with its length. A fixed pseudo-random jitter breaks ties.
    """
    T, _ = _check_sizes(num_steps, max_skip)

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
