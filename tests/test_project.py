"""Project wiring: pinned dependencies, the two README commands, cluster.yaml, public seams."""
from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_field_packages_are_pinned():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for pin in ("torch==2.13.0", "ray[default,train,tune]==2.60.0", "torch-geometric==2.8.1",
                "optuna==5.0.0"):
        assert pin in deps


def test_readme_commands_are_what_make_and_ci_run():
    readme = (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert "make run" in readme and "make test" in readme
    assert "-m jobs.train_kaggle --mode mini" in makefile
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_cluster_yaml_keeps_the_dashboard_on_loopback():
    cluster = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    head = " ".join(cluster["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
    assert any("torch==2.13.0" in c for c in cluster["setup_commands"])


# --- Public seams: a module whose name starts with "_" is private to its package -------------

PACKAGES = ("engine", "jobs", "tune", "benchmarks", "tests")


def _is_module(dotted: str) -> bool:
    path = ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def private_imports(module: str, source: str, is_package: bool = False) -> list[str]:
    """The private modules of other packages that ``source`` (module ``module``) imports.

    A private module (``jobs/_x.py``, ``engine/data/_ingest.py``) may be imported only by the
    modules of the package it lives in and of that package's sub-packages."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            # ``from pkg import _name``: private only where _name is a module, not a function
            targets = [base, *(f"{base}.{a.name}" for a in node.names
                               if a.name.startswith("_") and _is_module(f"{base}.{a.name}"))]
        else:
            continue
        for target in targets:
            parts = target.split(".")
            if parts[0] not in PACKAGES:
                continue
            for i, part in enumerate(parts):
                if part.startswith("_") and not part.startswith("__"):
                    owner = ".".join(parts[:i])
                    if package != owner and not package.startswith(owner + "."):
                        found.append(f"{module}:{node.lineno} imports {'.'.join(parts[:i + 1])}")
                    break
    return found


def test_private_import_check_sees_what_it_must():
    assert private_imports("tune.search", "from jobs._cli import run_cli")
    assert private_imports("benchmarks.x", "import jobs._train_common as c")
    assert private_imports("tune.search", "from engine.data import _ingest")
    assert private_imports("engine.training.x", "from engine.data._ingest import read")
    assert private_imports("tests.test_x", "from ..benchmarks import _run")
    assert not private_imports("engine.data.mpd", "from engine.data import _ingest as ing")
    assert not private_imports("engine.data", "from ._ingest import x", is_package=True)
    assert not private_imports("benchmarks.bench_mini", "from benchmarks._run import ROOT")
    assert not private_imports("tune.search", "from jobs.common import run_dataset")
    assert not private_imports("tests.test_x", "from engine.training.ray_train import _free_port")
    assert not private_imports("tests.test_x", "from ray.autoscaler._private import util")


def test_no_module_imports_another_packages_private_module():
    found = []
    for top in PACKAGES:
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            is_package = rel.name == "__init__"
            module = ".".join(rel.parts[:-1] if is_package else rel.parts)
            found += private_imports(module, path.read_text(), is_package)
    assert not found, "imports of another package's private module: " + "; ".join(found)
