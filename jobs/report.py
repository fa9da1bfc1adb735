"""One self-contained HTML report of finished runs and tune.search folders.

    python -m jobs.report runs/mini runs/tune --output report.html

Learning curves (train loss, validation Recall@10 and NDCG@10, learning rate) and throughput per
epoch of each run, its test metrics beside its baselines, and for a search every trial's
validation curve (ASHA-stopped trials marked) with the best configuration. The figures are
embedded in the HTML and also written beside it as ``<stem>_<figure>.png``. Needs the ``report``
extra (matplotlib): ``pip install -e ".[report]"``.
"""
from __future__ import annotations

from pathlib import Path

from engine.errors import BadInput
from jobs.cli import ArgumentParser, run_cli


def main(argv=None) -> int:
    p = ArgumentParser(prog="python -m jobs.report", description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", metavar="RUN_DIR",
                   help="finished run folders (metrics.json) or tune.search folders")
    p.add_argument("--output", default="report.html", help="the HTML file (PNGs go beside it)")
    args = p.parse_args(argv)
    out = Path(args.output)
    if out.suffix.lower() not in (".html", ".htm"):
        raise BadInput(f"{out}: --output must end in .html")
    if not out.parent.is_dir():
        raise BadInput(f"{out.parent}: no such folder for --output")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise BadInput('matplotlib is not installed: pip install -e ".[report]"') from None
    from engine.report import read_source, write_report

    sources = [read_source(r) for r in args.runs]  # every folder checked before drawing
    written = write_report(sources, out)
    print(f"wrote {written[0]} ({len(written) - 1} figures embedded; PNGs beside it: "
          + ", ".join(w.name for w in written[1:]) + ")")
    return 0


if __name__ == "__main__":
    run_cli(main)
