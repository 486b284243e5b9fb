"""Shared test fixtures."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a shared 2-core CPU run far faster and steadier on one thread."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def saved_tiny_t2v(tmp_path_factory):
    """An untrained TinyT2VPipeline saved as a diffusers folder: stands in for a user's model (string prompts)."""
    from lemica.testing.tiny_pipelines import save_untrained_tiny_t2v

    return save_untrained_tiny_t2v(tmp_path_factory.mktemp("user_pipeline"))


@pytest.fixture(scope="session")
def benchmark_script():
    """Load a script of benchmarks/ (not a package) as a module: ``benchmark_script("runtime")``."""
    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load
