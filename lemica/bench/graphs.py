"""The residual-rule error graph the lemica-* rows plan on: given, shipped with the workload, or calibrated here.
Torch-free at import (the command line checks ``cached_graph_path`` before anything loads)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from lemica.graph import ErrorGraph


def cached_graph_path(out: Path, num_steps: int, samples: int, max_skip: int) -> Path:
    return out / f"graph_T{num_steps}_n{samples}_L{max_skip}.json"


def _warning(message: str) -> None:
    print(f"warning: {message}")


def resolve_graph(workload, graph_path: Path | None, out: Path, samples: int, max_skip: int,
                  progress: bool = True, graph: ErrorGraph | None = None, log: Callable[[str], None] = print,
                  warn: Callable[[str], None] = _warning) -> tuple[ErrorGraph, dict]:
    """The error graph: ``graph`` (or the file ``graph_path``), else the one shipped for the workload (if its T
    matches), else one calibrated here (on the calibration prompts with the workload's calibration seeds, cached in
    ``out``). Refuses (``SeedOverlapError``) a graph whose calibration seeds include an evaluation seed; returns
    the graph and what the results record about it."""
    from lemica.bench.workload import check_disjoint_seeds
    from lemica.calibration import calibrate, check_graph_matches

    if graph is not None or graph_path is not None:
        graph = graph if graph is not None else ErrorGraph.load(graph_path)
        source = str(graph_path)
    elif workload.graph_path and ErrorGraph.load(workload.graph_path).num_steps == workload.num_steps:
        graph, source = ErrorGraph.load(workload.graph_path), workload.graph_path
    else:
        cache = cached_graph_path(out, workload.num_steps, samples, max_skip)
        if cache.exists():
            graph, source = ErrorGraph.load(cache), str(cache)
        else:
            log(f"calibrating an error graph: {samples} calibration prompt(s), T={workload.num_steps}, "
                f"max skip {max_skip} (cached in {cache})")
            start = time.perf_counter()
            graph = calibrate(workload.pipe, workload.calibration_prompts(samples), workload.calibration_seeds,
                              num_inference_steps=workload.num_steps, max_skip=max_skip,
                              workdir=out / "calibration", progress=progress, **workload.call_kwargs)
            graph.save(cache)
            log(f"calibrated in {time.perf_counter() - start:.0f}s")
            source = str(cache)
    graph_seeds = (graph.meta or {}).get("seeds")
    if graph_seeds is None:
        log(f"warning: the graph {source} does not record its calibration seeds; make sure they are not the "
            f"evaluation seeds {workload.evaluation_seeds}")
    else:
        check_disjoint_seeds(workload.evaluation_seeds, graph_seeds, f"the error graph {source}")
    problems = check_graph_matches(graph, workload.pipe, workload.num_steps, workload.call_kwargs)
    for problem in problems:
        warn(f"the graph does not match this run: {problem}")
    if not graph.has_terminal_edges:
        log(f"the graph {source} stores no terminal edges: the lemica-* plans compute the last step (a graph "
            f"calibrated by this lemica, given with --graph, lets them end on a skip)")
    return graph, {"source": source, "num_steps": graph.num_steps, "max_skip": graph.max_skip,
                   "samples": (graph.meta or {}).get("samples"), "seeds": graph_seeds, "mismatches": problems,
                   "terminal_edges": graph.has_terminal_edges}
