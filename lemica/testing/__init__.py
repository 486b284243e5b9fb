"""Offline test fixtures: tiny random-weight diffusers pipelines (no model hub needed)."""
from lemica.testing.tiny_pipelines import FAMILIES, TinyPipeline, make_medium_wan, make_pipeline

__all__ = ["FAMILIES", "TinyPipeline", "make_pipeline", "make_medium_wan"]
