"""A run report: learning curves, throughput, test metrics beside baselines, and searches.

:func:`read_source` reads a finished run folder (``metrics.json``: its per-epoch ``history``,
``test`` and ``baselines``, as the training loop writes them) or a ``tune.search`` folder
(``best_config.json`` and, per trial, the TensorBoard events under ``trials/<id>/tensorboard``:
search trials never write a ``metrics.json``, and the events hold every epoch they ran, with the
tags of :mod:`engine.training.tb`). :func:`write_report` draws the figures with matplotlib's Agg
backend (no display needed), writes each as a PNG and one self-contained HTML file that embeds
them as base64 PNGs. No Ray here.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import BadInput
from engine.training.tb import SCALARS

CURVES = [("train_loss", "train loss (BPR)"), ("val_recall@10", "validation Recall@10"),
          ("val_ndcg@10", "validation NDCG@10"), ("lr", "learning rate")]
TEST_METRICS = ["recall@10", "ndcg@10", "recall@50", "ndcg@50", "r_precision"]


@dataclass
class Run:
    path: Path
    name: str
    history: list[dict]  # one dict per epoch: epoch, train_loss, val_recall@10, lr, ...
    test: dict
    baselines: dict[str, dict]
    model: str = ""


@dataclass
class Trial:
    name: str  # the trial folder (Tune's trial id)
    curve: dict[str, list[float]]  # history key -> one value per epoch
    stopped_early: bool
    config: dict = field(default_factory=dict)
    number: int | None = None  # tune.search's compact trial number, where its table has one

    @property
    def label(self) -> str:
        return f"#{self.number} {self.name}" if self.number is not None else self.name


@dataclass
class Search:
    path: Path
    name: str
    trials: list[Trial]
    best_trial: str
    best_config: dict
    best_value: float
    max_epochs: int


def read_source(path: str | Path) -> Run | Search:
    """A finished run or a search folder; BadInput (one line) for anything else."""
    path = Path(path)
    if not path.is_dir():
        raise BadInput(f"{path}: no such folder")
    if (path / "metrics.json").is_file():
        return _read_run(path)
    if (path / "best_config.json").is_file():
        return _read_search(path)
    raise BadInput(f"{path}: neither a finished run (metrics.json) nor a finished tune.search "
                   f"folder (best_config.json)")


def _json(file: Path) -> dict:
    try:
        d = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise BadInput(f"{file}: cannot be read as JSON ({exc})") from None
    if not isinstance(d, dict):
        raise BadInput(f"{file}: expected a JSON object")
    return d


def _read_run(path: Path) -> Run:
    d = _json(path / "metrics.json")
    missing = [k for k in ("history", "test", "baselines") if k not in d]
    if missing or not isinstance(d.get("history"), list) or not d["history"]:
        raise BadInput(f"{path / 'metrics.json'}: not a finished run's metrics (no "
                       f"{', '.join(missing) or 'epochs in history'})")
    return Run(path, path.name or str(path), d["history"], d["test"], d["baselines"],
               str(d.get("config", {}).get("model", "")))


def read_scalars(logdir: Path) -> dict[str, list[float]]:
    """The per-epoch history of a TensorBoard folder written by :mod:`engine.training.tb`, as
    ``{history key: values by epoch}`` (a resumed run's purged steps are not repeated)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags().get("scalars", []))
    out = {}
    for key, tag in SCALARS.items():  # a loop over a handful of tags
        if tag in tags:
            by_step = {e.step: e.value for e in acc.Scalars(tag)}
            out[key] = [by_step[s] for s in sorted(by_step)]
    return out


def _read_search(path: Path) -> Search:
    d = _json(path / "best_config.json")
    if "config" not in d or "trials" not in d:
        raise BadInput(f"{path / 'best_config.json'}: not a tune.search summary (no config/trials)")
    trials_dir = path / "trials"
    folders = sorted(p for p in trials_dir.iterdir() if p.is_dir()) if trials_dir.is_dir() else []
    if not folders:
        raise BadInput(f"{trials_dir}: no trial folders with TensorBoard events")
    n = max(int(d.get("trials", 1)), 1)
    max_epochs = int(d.get("epochs_without_early_stopping", 0)) // n
    rows = d.get("table", [])
    trials = []
    for folder in folders:  # one per trial
        curve = read_scalars(folder / "tensorboard")
        epochs = len(curve.get("val_recall@10", []))
        row = next((r for r in rows if str(r.get("trial_id", "")) == folder.name
                    or folder.name in str(r.get("trial", ""))), {})
        stopped = bool(row["stopped_early"]) if "stopped_early" in row else epochs < max_epochs
        number = row.get("number")
        trials.append(Trial(folder.name, curve, stopped, dict(row.get("config", {})),
                            int(number) if isinstance(number, int) else None))
    if all(t.number is not None for t in trials):
        trials.sort(key=lambda t: t.number)  # in the order tune.search numbered them
    best = next((t.name for t in trials if t.name in str(d.get("trial", ""))), "")
    value = d.get("best_val_recall@10", d.get("val_recall@10", float("nan")))
    return Search(path, path.name or str(path), trials, best, dict(d["config"]),
                  float(value) if value is not None else math.nan, max_epochs)


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # headless: no display, no GUI toolkit
    import matplotlib.pyplot as plt

    return plt


def _epoch_axis(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers


def _curves(runs: list[Run]):
    plt = _plt()
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), constrained_layout=True)
    for ax, (key, title) in zip(axes.flat, CURVES):
        for run in runs:
            ep = [h.get("epoch", i + 1) for i, h in enumerate(run.history)]
            ax.plot(ep, [h.get(key, math.nan) for h in run.history], marker="o", label=run.name)
        ax.set(title=title, xlabel="epoch")
        _epoch_axis(ax)
        if key == "lr":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle("Learning curves")
    return fig


def _throughput(runs: list[Run]):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4), constrained_layout=True)
    for run in runs:
        ep = [h.get("epoch", i + 1) for i, h in enumerate(run.history)]
        ax.plot(ep, [h.get("triples_per_s", math.nan) for h in run.history], marker="o",
                label=run.name)
    ax.set(title="Training throughput per epoch", xlabel="epoch", ylabel="BPR triples / s")
    ax.set_ylim(bottom=0)
    _epoch_axis(ax)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _test_bars(runs: list[Run]):
    plt = _plt()
    fig, axes = plt.subplots(len(runs), 1, figsize=(10, 3.6 * len(runs)), squeeze=False,
                             constrained_layout=True)
    for ax, run in zip(axes[:, 0], runs):
        bars = {f"{run.model or 'model'} (this run)": run.test, **run.baselines}
        width = 0.8 / len(bars)
        for k, (label, m) in enumerate(bars.items()):
            xs = [i + (k - (len(bars) - 1) / 2) * width for i in range(len(TEST_METRICS))]
            ax.bar(xs, [float(m.get(t, math.nan)) for t in TEST_METRICS], width, label=label)
        ax.set_xticks(range(len(TEST_METRICS)), TEST_METRICS)
        ax.set(title=f"{run.name}: test metrics beside the baselines "
                     f"({run.test.get('playlists', '?')} test owners)")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def _search(search: Search):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 5), constrained_layout=True)
    for t in search.trials:
        ys = t.curve.get("val_recall@10", [])
        best = t.name == search.best_trial
        line, = ax.plot(range(1, len(ys) + 1), ys, lw=3 if best else 1.3,
                        ls="--" if t.stopped_early else "-",
                        label=f"{t.label}{' (best)' if best else ''}"
                              f"{' stopped by ASHA' if t.stopped_early else ''}")
        if t.stopped_early and ys:
            ax.plot(len(ys), ys[-1], "x", ms=10, mew=2, color=line.get_color())
    ax.set(title=f"{search.name}: validation Recall@10 per trial (x = stopped early by ASHA)",
           xlabel="epoch", ylabel="val Recall@10")
    ax.set_xlim(0.8, max(search.max_epochs, 1) + 0.2)
    _epoch_axis(ax)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def _distinct_names(sources: list[Run | Search]) -> None:
    """Folder names, with their parent where two sources share one (``a/run``, ``b/run``)."""
    names = [s.name for s in sources]
    for s in sources:
        if names.count(s.name) > 1:
            s.name = f"{s.path.parent.name}/{s.path.name}"


def figures(sources: list[Run | Search]) -> list[tuple[str, str, object]]:
    """``(caption, file name, matplotlib figure)`` for every figure of the report."""
    _distinct_names(sources)
    runs = [s for s in sources if isinstance(s, Run)]
    out = []
    if runs:
        out += [("Learning curves: train loss, validation Recall@10 and NDCG@10, learning rate",
                 "learning_curves.png", _curves(runs)),
                ("Throughput per epoch", "throughput.png", _throughput(runs)),
                ("Test metrics beside the baselines", "test_metrics.png", _test_bars(runs))]
    for k, s in enumerate(x for x in sources if isinstance(x, Search)):
        out.append((f"Search {s.name}: every trial's validation curve", f"search_{k + 1}.png",
                    _search(s)))
    return out


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    _plt().close(fig)
    return buf.getvalue()


def _table(header: list[str], rows: list[list]) -> str:
    cell = lambda v: html.escape(f"{v:.4g}" if isinstance(v, float) else str(v))
    return ("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
            + "</table>")


def write_report(sources: list[Run | Search], output: str | Path) -> list[Path]:
    """Write ``output`` (HTML, images embedded) and the PNGs beside it; returns every path
    written. Each file goes to a temporary name first, so a failure leaves no half-written one."""
    output = Path(output)
    written: list[Path] = []
    body = []
    for caption, name, fig in figures(sources):
        png = _png(fig)
        written.append(_atomic(output.with_name(f"{output.stem}_{name}"), png))
        b64 = base64.b64encode(png).decode("ascii")
        body.append(f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,'
                    f'{b64}"><figcaption>{html.escape(caption)}</figcaption></figure>')
    tables = []
    for s in sources:
        if isinstance(s, Run):
            rows = [[f"{s.model or 'model'} (this run)"] + [s.test.get(m, "") for m in TEST_METRICS]]
            rows += [[b] + [m.get(t, "") for t in TEST_METRICS] for b, m in s.baselines.items()]
            tables.append(f"<h2>{html.escape(s.name)}: test metrics</h2><p>{html.escape(str(s.path))}"
                          f"</p>" + _table(["model"] + TEST_METRICS, rows))
        else:
            tables.append(f"<h2>{html.escape(s.name)}: best configuration</h2><p>trial "
                          f"{html.escape(s.best_trial or '?')}, val Recall@10 {s.best_value:.4f}; "
                          f"{sum(t.stopped_early for t in s.trials)} of {len(s.trials)} trials "
                          f"stopped early by ASHA</p>"
                          + _table(["hyper-parameter", "value"],
                                   [[k, v if isinstance(v, float) else json.dumps(v)]
                                    for k, v in sorted(s.best_config.items())])
                          + "<h3>trials</h3>" + _table(
                              ["trial", "epochs", "best val Recall@10", "stopped by ASHA",
                               "configuration"],
                              [[t.label, len(t.curve.get("val_recall@10", [])),
                                max(t.curve.get("val_recall@10", [math.nan])),
                                "yes" if t.stopped_early else "no",
                                ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                          for k, v in sorted(t.config.items()))]
                               for t in s.trials]))
    doc = ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Run report"
           "</title><style>body{font-family:sans-serif;margin:2em;max-width:1100px}"
           "img{max-width:100%}table{border-collapse:collapse;margin-bottom:1em}"
           "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
           "td:first-child{text-align:left}</style></head><body>"
           "<h1>Run report</h1><p>" + html.escape(", ".join(str(s.path) for s in sources))
           + "</p>" + "".join(tables) + "".join(body) + "</body></html>\n")
    written.insert(0, _atomic(output, doc.encode("utf-8")))
    return written


def _atomic(path: Path, data: bytes) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path
