"""The README's Python examples run as written, and every public name has a docstring."""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)
OPTIONAL = {"jax", "flax", "nir", "nirtorch", "snntorch", "norse", "spikingjelly", "tonic", "neurobench"}


def _imports(code: str) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module.split(".")[0])
    return out


def test_readme_has_examples():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, tmp_path, monkeypatch):
    code = BLOCKS[index]
    for mod in sorted(_imports(code) & OPTIONAL):
        if importlib.util.find_spec(mod) is None:
            pytest.skip(f"README example {index + 1} needs {mod}, which is not installed")
    if "spikescan.export" in code and importlib.util.find_spec("nir") is None:
        pytest.skip("README example needs nir")
    monkeypatch.chdir(tmp_path)  # examples may write files
    exec(compile(code, f"README.md example {index + 1}", "exec"), {"__name__": "__readme__"})


def _public(module_name: str):
    mod = importlib.import_module(module_name)
    return [(name, getattr(mod, name)) for name in mod.__all__]


@pytest.mark.parametrize("module_name", ["spikescan.ops", "spikescan.nn", "spikescan.surrogate"])
def test_public_names_are_exported_and_documented(module_name):
    names = _public(module_name)
    assert names
    undocumented = [n for n, obj in names if not (getattr(obj, "__doc__", None) or "").strip()]
    assert not undocumented, f"{module_name}: no docstring on {undocumented}"


def test_top_level_imports_of_the_issue():
    from spikescan.ops import leaky_integrate, lif  # noqa: F401
    from spikescan.nn import LI, LIF  # noqa: F401


def test_package_is_typed():
    import spikescan

    assert (Path(spikescan.__file__).parent / "py.typed").is_file()
