"""Every CLI's ``--help``: it exits 0, every option has a description, every option that takes a
value shows its default (or says it is required), and answering it imports no heavy library
(torch, Ray, PyG, pandas, pyarrow, numpy): those load after parsing, so help answers at once.

Each case runs the CLI as ``python -m`` would, in a fresh interpreter, through a small wrapper
that records the parser that printed the help and which modules were imported by then. The
import check is the robust form of "help is fast"; the machine is shared, so no timing is
asserted.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "ray", "torch_geometric", "pyg_lib", "pandas", "pyarrow", "numpy")

# (module, sub-command words before --help)
CLIS = [
    ("jobs.train_kaggle", ()),
    ("jobs.train_synthetic", ()),
    ("jobs.generate", ()),
    ("jobs.generate", ("sessions",)),
    ("jobs.generate", ("kaggle",)),
    ("jobs.recommend", ()),
    ("jobs.prepare", ()),
    ("jobs.report", ()),
    ("tune.search", ()),
]

WRAPPER = r"""
import argparse, json, runpy, sys

module, out, heavy, *words = sys.argv[1:]
printed = []
print_help = argparse.ArgumentParser.print_help

def recording(self, file=None):
    printed.append(self)
    return print_help(self, file)

argparse.ArgumentParser.print_help = recording
sys.argv = [module, *words, "--help"]
code = "did not exit"
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code
options = []
if printed:
    parser = printed[-1]
    formatter = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        entries = [action] + list(getattr(action, "_choices_actions", []))
        for a in entries:
            options.append({
                "name": "/".join(a.option_strings) or a.dest or a.metavar,
                "help": formatter._expand_help(a) if a.help else "",
                "switch": a.nargs == 0,
                "positional": not a.option_strings,
            })
json.dump({"code": code, "options": options,
           "heavy": [m for m in heavy.split(",") if m in sys.modules]}, open(out, "w"))
"""


def _help(module: str, words: tuple[str, ...], tmp_path: Path) -> tuple[dict, str]:
    out = tmp_path / "help.json"
    proc = subprocess.run([sys.executable, "-c", WRAPPER, module, str(out), ",".join(HEAVY),
                           *words], check=False, cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(out.read_text()), proc.stdout


@pytest.mark.parametrize(("module", "words"), CLIS,
                         ids=[" ".join([m, *w]) for m, w in CLIS])
def test_help_is_complete_and_light(module, words, tmp_path):
    info, text = _help(module, words, tmp_path)
    assert info["code"] in (0, None), info["code"]
    assert text.startswith("usage: ")
    assert info["options"], "no options recorded"
    for opt in info["options"]:
        helptext = " ".join(opt["help"].split())
        assert helptext, f"{module} {opt['name']}: no help text"
        if opt["switch"] or opt["positional"]:
            continue  # a switch is off unless given; a positional is always given
        assert re.search(r"\bdefault\b|\brequired\b", helptext), \
            f"{module} {opt['name']}: help shows no default: {helptext!r}"
        assert "default: None" not in helptext, f"{module} {opt['name']}: {helptext!r}"
    assert info["heavy"] == [], f"{module} --help imported {info['heavy']}"


def test_every_cli_is_checked():
    """A new ``python -m`` entry point under jobs/ or tune/ must join :data:`CLIS`."""
    mains = {f"{p.parent.name}.{p.stem}" for d in ("jobs", "tune") for p in (REPO / d).glob("*.py")
             if 'if __name__ == "__main__":' in p.read_text()}
    assert mains == {m for m, _ in CLIS}


def test_training_defaults_are_read_from_the_config(tmp_path):
    """Defaults shown for training flags are TrainConfig's and the --mode table's values."""
    from engine.training.config import MODES, TrainConfig
    from jobs.train_synthetic import BASE

    info, _ = _help("jobs.train_kaggle", (), tmp_path)
    shown = {o["name"]: " ".join(o["help"].split()) for o in info["options"]}
    cfg = TrainConfig()
    assert f"(default: {cfg.lr})" in shown["--lr"]
    assert f"(default: {cfg.num_neg})" in shown["--num-neg"]
    assert f"(default: {cfg.holdout})" in shown["--holdout-size"]
    for name, mode in MODES.items():
        assert f"{name} {mode['epochs']:,}" in shown["--epochs"]
        assert f"{name} {mode['batch_size']:,}" in shown["--batch-size"]
    info, _ = _help("jobs.train_synthetic", (), tmp_path)
    shown = {o["name"]: " ".join(o["help"].split()) for o in info["options"]}
    synthetic = TrainConfig(**BASE)
    assert f"(default: {synthetic.embedding_dim})" in shown["--embedding-dim"]
    assert f"(default: {synthetic.genre_weight})" in shown["--genre-weight"]
    assert f"(default: {synthetic.model})" in shown["--model"]


def test_prepare_formats_match_the_reader():
    """jobs.prepare writes the formats out (so --help loads no pandas); they are the reader's."""
    from engine.data.load import FORMATS
    from jobs.prepare import FORMATS as PREPARE_FORMATS

    assert PREPARE_FORMATS == FORMATS
