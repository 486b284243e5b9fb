"""Error graph: the calibrated cost of each skip (i -> j) of a T-step sampler, per fill rule.

Node k is denoising step k (0 = noisiest). Edge (i, j) means "compute the full transformer at steps i
and j, fill i+1 .. j-1 from the cache"; its weight is the measured output error of doing so. How the
skipped steps are filled is the edge's *rule*, so the graph is a multigraph: one `Edge` per (i, j, rule).

Rules are open-ended names (their grammar, history and order: ``lemica.rules``); lemica knows

* ``residual`` (the default, LeMiCa's rule): reuse the block-stack residual of step i;
* ``extrapolate``: first-order extrapolation of the residual from the two most recent computed steps;
* ``mean-velocity:k`` (k >= 1, MeanCache): an average velocity over the last k steps of the trajectory.

A rule that needs history the segment start does not have (``extrapolate`` from step 0, ``mean-velocity:k``
from a step i < k - 1) is unavailable on that edge, so such an edge must not be stored. Edges (i, i+1) skip
nothing: they cost 0 unless stored, whatever the rule. Missing longer edges are unusable.

Terminal edges. A virtual end node T (= num_steps) lets a plan end on a skip: the terminal edge (i, T) of a rule
means "compute step i, fill i+1 .. T-1 from it with the rule, and finish" (step T-1 is not computed). Its weight is
the measured error of that schedule tail; its segment length T - i must be <= max_skip, like any edge. Computing
step T-1 and finishing is free and never stored. Graphs keep them apart from the (i, j) edges (`terminal`,
keyed by rule and start step), so code that reads `by_rule` sees the graph it always saw.

File format version 1 stores the residual rule only; version 2 adds a ``rule`` to every edge; version 3 adds
``terminal_edges`` (``{i, rule, error, std, samples}``). Loading reads all three; saving writes version 1 when
the graph is residual-only without terminal edges (so existing readers keep working), version 2 when it has
other rules but no terminal edges, and version 3 when it has terminal edges.
"""
from __future__ import annotations

import json
import math
import numbers
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

from lemica._io import atomic_write_bytes, read_json
from lemica.errors import GraphFormatError, InputFileError
from lemica.rules import (EXTRAPOLATE, MEAN_VELOCITY, RESIDUAL, expand_rules, mean_velocity,  # noqa: F401 (re-exported)
                          rule_available, rule_history, rule_problem, rule_sort_key, sort_rules,
                          unknown_rule_problem)

FORMAT = "lemica-graph"
VERSION = 3  # the newest version this lemica writes
VERSIONS = (1, 2, 3)  # the versions it reads
MAX_STEPS = 10_000  # far beyond any sampler; refuses absurd sizes before anything T-sized is allocated

# The graph metadata that says what a graph (and a schedule planned on it) is valid for: a run that differs in
# any of these is not the run that was calibrated.
CALIBRATION_KEYS = ("pipeline", "transformer", "transformer_config_hash", "sampler", "sampler_config", "num_steps",
                    "guidance", "resolution")


# ----------------------------------------------------------------------------------------------
# fill rules (names, history and order: lemica.rules)
# ----------------------------------------------------------------------------------------------
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
TerminalMap = dict[int, Edge]  # start step i -> the terminal edge (i, T)


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
    terminal: Mapping[str, Mapping[int, Edge]] | None = None  # rule -> {start step i: edge (i, T)}

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
        given_terminal = {} if self.terminal is None else self.terminal
        if not isinstance(given_terminal, Mapping):
            raise GraphFormatError(
                f"terminal must be a mapping rule -> {{start step: Edge}}, got {type(given_terminal).__name__}")
        terminal: dict[str, TerminalMap] = {}
        for rule, edges in given_terminal.items():
            _check_rule(rule)
            terminal[rule] = _check_terminal_edges(edges, T, L, rule)
        terminal = {rule: terminal[rule] for rule in sort_rules(terminal) if terminal[rule]}
        meta = {} if self.meta is None else self.meta
        if not isinstance(meta, Mapping):
            raise GraphFormatError(f"meta must be a JSON object, got {type(meta).__name__}")
        object.__setattr__(self, "num_steps", T)
        object.__setattr__(self, "max_skip", L)
        object.__setattr__(self, "by_rule", by_rule)
        object.__setattr__(self, "edges", by_rule.get(RESIDUAL, {}))
        object.__setattr__(self, "terminal", terminal)
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

    @property
    def has_terminal_edges(self) -> bool:
        """True when some rule stores a terminal edge (i, T): plans may then end on a skip."""
        return bool(self.terminal)

    def terminal_edges(self, rule: str = RESIDUAL) -> TerminalMap:
        """The terminal edges (i, T) of one rule, keyed by start step i (empty when it stores none)."""
        return dict(self.terminal.get(rule, {}))

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
                          by_rule={r: e for r, e in self.by_rule.items() if r in keep},
                          terminal={r: e for r, e in self.terminal.items() if r in keep})

    def without_terminal_edges(self) -> "ErrorGraph":
        """The same graph without its terminal edges (every plan on it computes step T-1)."""
        return ErrorGraph(self.num_steps, self.max_skip, meta=self.meta, by_rule=self.by_rule)

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
        """JSON-ready dict; `version` None writes 3 for a graph with terminal edges, else 1 for a residual-only
        graph and 2 otherwise."""
        if version is None:
            version = 3 if self.has_terminal_edges else 1 if self.is_residual_only else 2
        if version not in VERSIONS or isinstance(version, bool):
            raise GraphFormatError(f"cannot write graph version {version!r} (versions {VERSIONS})")
        if version < 3 and self.has_terminal_edges:
            raise GraphFormatError(f"version {version} cannot store terminal edges (i, T); write version 3")
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
        d = {
            "format": FORMAT,
            "version": version,
            "num_steps": self.num_steps,
            "max_skip": self.max_skip,
            "edges": edges,
        }
        if version == 3:
            ends = sorted((i, rule_sort_key(rule), rule, e) for rule, es in self.terminal.items()
                          for i, e in es.items())
            d["terminal_edges"] = [{"i": i, "rule": rule, "error": e.error, "std": e.std, "samples": e.samples}
                                   for i, _, rule, e in ends]
        d["meta"] = self.meta
        return d

    @classmethod
    def from_dict(cls, d: Any) -> "ErrorGraph":
        if not isinstance(d, Mapping):
            raise GraphFormatError(f"graph must be a JSON object, got {type(d).__name__}")
        if d.get("format") != FORMAT:
            raise GraphFormatError(f"'format' must be {FORMAT!r}, got {d.get('format')!r}")
        version = d.get("version")
        if version not in VERSIONS or isinstance(version, bool) or not isinstance(version, int):
            raise GraphFormatError(f"unsupported 'version' {version!r} (this lemica reads versions 1, 2 and 3)")
        for key in ("num_steps", "max_skip", "edges"):
            if key not in d:
                raise GraphFormatError(f"missing required field {key!r}")
        T, L = _check_sizes(d["num_steps"], d["max_skip"])
        if not isinstance(d["edges"], list):
            raise GraphFormatError("'edges' must be a list")
        by_rule: dict[str, EdgeMap] = {}
        required = ("i", "j", "rule", "error") if version >= 2 else ("i", "j", "error")
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
                if version >= 2:
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
        return cls(T, L, meta=d.get("meta", {}), by_rule=by_rule, terminal=_terminal_from_json(d, version, T, L))

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
        """Read and validate a graph file (version 1, 2 or 3); GraphFormatError names the problem (and the file)."""
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


def _check_terminal_key(i: int, T: int, L: int) -> None:
    if not 0 <= i <= T - 2:
        raise GraphFormatError(f"terminal edge ({i}, T={T}): need 0 <= i <= num_steps - 2 = {T - 2} "
                               "(computing step T-1 and finishing is free and not stored)")
    if T - i > L:
        raise GraphFormatError(f"terminal edge ({i}, T={T}): T - i = {T - i} exceeds max_skip = {L}")


def _check_terminal_edges(edges: Any, T: int, L: int, rule: str) -> TerminalMap:
    """Validated, sorted copy of one rule's terminal edges {start step i: Edge}."""
    if not isinstance(edges, Mapping):
        raise GraphFormatError(f"rule {rule!r}: terminal edges must be a mapping start step -> Edge, "
                               f"got {type(edges).__name__}")
    out: TerminalMap = {}
    for key, edge in edges.items():
        try:
            i = _as_int(key, "terminal edge start")
            _check_terminal_key(i, T, L)
            _check_history(i, T, rule)
            if not isinstance(edge, Edge):
                edge = Edge(edge)
            out[i] = edge
        except GraphFormatError as e:
            raise GraphFormatError(f"rule {rule!r}: {e}") from None
    return dict(sorted(out.items()))


def _terminal_from_json(d: Mapping, version: int, T: int, L: int) -> dict[str, TerminalMap]:
    """The version-3 ``terminal_edges`` list as {rule: {i: Edge}}; earlier versions have none."""
    if version < 3:
        if "terminal_edges" in d:
            raise GraphFormatError("'terminal_edges' needs version 3")
        return {}
    items = d.get("terminal_edges", [])
    if not isinstance(items, list):
        raise GraphFormatError("'terminal_edges' must be a list")
    out: dict[str, TerminalMap] = {}
    for n, item in enumerate(items):
        where = f"terminal_edges[{n}]"
        if not isinstance(item, Mapping) or any(k not in item for k in ("i", "rule", "error")):
            raise GraphFormatError(f"{where} must be an object with i, rule, error")
        try:
            i, rule = _as_int(item["i"], "i"), _check_rule(item["rule"])
            where = f"terminal_edges[{n}] (i={i}, rule={rule!r})"
            _check_terminal_key(i, T, L)
            _check_history(i, T, rule)
            edges = out.setdefault(rule, {})
            if i in edges:
                raise GraphFormatError("duplicate terminal edge")
            edges[i] = Edge(item["error"], item.get("std", 0.0), item.get("samples", 1))
        except GraphFormatError as e:
            raise GraphFormatError(f"{where}: {e}") from None
    return out


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
