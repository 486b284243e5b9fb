"""The documentation's promises: every ``lemica.x.y`` it names resolves, every file it links or runs exists."""
from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "RESULTS.md", *sorted((ROOT / "docs").glob("*.md"))]


def _resolve(dotted: str):
    """Attribute chain from the ``lemica`` package, importing submodules on the way as Python would."""
    parts = dotted.split(".")
    obj = importlib.import_module(parts[0])
    for k, part in enumerate(parts[1:], start=1):
        if not hasattr(obj, part):
            importlib.import_module(".".join(parts[: k + 1]))  # a submodule not imported yet
        obj = getattr(obj, part)
    return obj


def _names() -> list[tuple[str, str]]:
    found = set()
    for doc in DOCS:
        for match in re.finditer(r"(?<![\w/.-])lemica(?:\.[A-Za-z_]\w*)+", doc.read_text()):
            name = match.group(0)
            if name.endswith((".md", ".py", ".json", ".png", ".gif")):
                continue  # a file name, not an API
            found.add((doc.name, name))
    return sorted(found)


@pytest.mark.parametrize("doc,name", _names(), ids=lambda v: v)
def test_every_api_name_in_the_docs_exists(doc, name):
    _resolve(name)


def test_the_headline_api_is_on_the_package():
    import lemica

    for name in ("enable_cache", "disable_cache", "cached", "cache_stats", "calibrate", "calibrate_fast", "plan",
                 "frontier", "ErrorGraph", "Schedule"):
        assert callable(getattr(lemica, name)), name
    import lemica.calibration  # noqa: F401  (a submodule import must not shadow the function)
    assert callable(lemica.calibrate)


def _paths() -> list[tuple[str, str]]:
    found = set()
    for doc in DOCS:
        text = doc.read_text()
        links = re.findall(r"\]\(([^)#\s]+)\)", text)  # markdown links and images
        scripts = re.findall(r"(?<![\w/.-])((?:benchmarks|scripts|lemica)/[\w/.-]+\.(?:py|json|md))", text)
        for target in links + scripts:
            if "://" not in target:
                found.add((doc.name, str((doc.parent / target).resolve().relative_to(ROOT))
                           if target in links else target))
    return sorted(found)


@pytest.mark.parametrize("doc,path", _paths(), ids=lambda v: v)
def test_every_file_the_docs_link_or_run_exists(doc, path):
    assert (ROOT / path).exists(), f"{doc} refers to {path}, which does not exist"


def test_names_used_after_import_lemica_in_code_examples_need_no_other_import():
    """``import lemica`` then ``lemica.presets.get(...)`` must work in a fresh interpreter, not only after some
    other module happened to import the submodule."""
    import subprocess
    import sys

    names = set()
    for doc in DOCS:
        for block in re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S):
            if re.search(r"^import lemica$", block, flags=re.M):
                names |= set(re.findall(r"(?<![\w.])lemica\.([A-Za-z_]\w*)", block))
    assert {"enable_cache", "presets"} <= names  # the README's and the real-model guide's examples
    code = f"import lemica\nfor name in {sorted(names)!r}:\n    getattr(lemica, name)\n"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
