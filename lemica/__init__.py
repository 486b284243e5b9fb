"""lemica: Lexicographic Minimax Path Caching for diffusion transformers."""
from lemica.graph import ErrorGraph, Edge
from lemica.schedule import Schedule
from lemica.planner import plan, frontier, Plan

__all__ = ["ErrorGraph", "Edge", "Schedule", "plan", "frontier", "Plan"]
__version__ = "0.1.0"
