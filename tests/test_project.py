"""Project wiring: pinned dependencies, the two README commands, cluster.yaml."""
from __future__ import annotations

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
