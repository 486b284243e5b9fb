"""Calibration: measure what caching each segment costs on the final output, as an ``ErrorGraph``.

``exact`` replays every segment to the end (``lemica.calibrate``); ``fast`` estimates the same graph at a
fraction of the cost (``lemica.calibrate_fast``, ``lemica calibrate --fast``). Both run their replays as step
policies (``replay``) on the runtime's hooks, through one resumable, torchrun-sharded sample loop (``jobs``);
``fingerprint`` says what a graph is valid for and ``prompts`` keeps the text encoder from running per replay.
"""
from __future__ import annotations

from lemica.calibration.exact import calibrate, edges_for, exact_cost
from lemica.calibration.fast import (METHODS, calibrate_fast, free_cost, probe_edge, probed_proxy_cost, proxy_cost,
                                     refine_cost)
from lemica.calibration.fingerprint import check_graph_matches, pipeline_fingerprint, stable_hash
from lemica.calibration.prompts import encode_prompts_once
from lemica.calibration.replay import RecordPolicy, SegmentReplayPolicy, final_latents
from lemica.errors import CalibrationError, WorkdirMismatchError

__all__ = ["calibrate", "calibrate_fast", "edges_for", "exact_cost", "METHODS", "free_cost", "proxy_cost",
           "probe_edge", "probed_proxy_cost", "refine_cost", "check_graph_matches", "pipeline_fingerprint",
           "stable_hash", "encode_prompts_once", "RecordPolicy", "SegmentReplayPolicy", "final_latents",
           "CalibrationError", "WorkdirMismatchError"]
