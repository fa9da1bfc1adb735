"""The search space: a documented default that a YAML or JSON file can replace.

File format (YAML or JSON), one entry per TrainConfig field::

    lr:            {type: loguniform, low: 1.0e-4, high: 1.0e-1}
    heads:         {type: choice, values: [1, 2, 4, 8]}
    genre_weight:  {type: uniform, low: 0.0, high: 1.0}
    embedding_dim: {type: choice, values: [32, 64, 128]}
    dropout:       {type: uniform, low: 0.0, high: 0.5}
    num_neg:       {type: choice, values: [1, 2, 4, 8]}
    fanouts:       {type: choice, values: ["10,5", "15,10", "5,5"]}
    neg_popularity: {type: uniform, low: 0.0, high: 1.0}
    l2:            {type: loguniform, low: 1.0e-6, high: 1.0e-3}
    id_init:       {type: choice, values: [normal, svd]}
    loss:          {type: choice, values: [bpr, softmax]}
    model_options.affinity_tau:  {type: choice, values: [0.0, 1.0, 2.0, 4.0]}
    model_options.affinity_init: {type: choice, values: [0.5, 1.0, 2.0]}

``fanouts`` values are comma-separated per-hop neighbour counts. A key ``model_options.NAME``
searches the model's constructor option NAME (PlaylistGAT's artist affinity: ``affinity_tau``,
``affinity_init``; see ``engine.models``). Types: loguniform, uniform, randint (low inclusive,
high exclusive), choice.
"""
from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

from engine.errors import BadInput
from engine.training.config import TrainConfig

# Around TrainConfig's defaults (lr 0.01, heads 2, D 64, dropout 0.1, 4 negatives, fanouts
# [10, 5], neg_popularity 0.5, l2 1e-5, SVD start, BPR; affinity tau 2 and start 2), each of
# which the space can draw: the search's first trial is the defaults themselves
# (:func:`default_point`), and the others look near them. A wider search is a space file away.
DEFAULT_SPACE: dict[str, dict] = {
    "lr": {"type": "loguniform", "low": 2e-3, "high": 5e-2},
    "heads": {"type": "choice", "values": [1, 2, 4]},
    "genre_weight": {"type": "uniform", "low": 0.0, "high": 1.0},
    "embedding_dim": {"type": "choice", "values": [32, 64, 128]},
    "dropout": {"type": "uniform", "low": 0.0, "high": 0.3},
    "num_neg": {"type": "choice", "values": [2, 4, 8]},
    "fanouts": {"type": "choice", "values": ["10,5", "10,3", "15,10", "5,5"]},
    "neg_popularity": {"type": "uniform", "low": 0.0, "high": 1.0},
    "l2": {"type": "loguniform", "low": 1e-6, "high": 1e-4},
    "id_init": {"type": "choice", "values": ["svd", "normal"]},
    "loss": {"type": "choice", "values": ["bpr", "softmax"]},
    "knn_init": {"type": "choice", "values": [0.0, 1.0]},  # 0: no item-kNN term
    "model_options.affinity_tau": {"type": "choice", "values": [0.0, 1.0, 2.0, 4.0]},
    "model_options.affinity_init": {"type": "choice", "values": [0.5, 1.0, 2.0, 4.0]},
}
TYPES = ("loguniform", "uniform", "randint", "choice")
MODEL_OPTION = "model_options."  # a key "model_options.NAME" searches the model's option NAME


def model_option_names(model: str) -> set[str]:
    """Keyword options the model takes beyond the graph metadata (PlaylistGAT: the fields of
    :class:`~engine.models.PlaylistGATOptions`)."""
    from engine.models import model_option_names as names

    return names(model)


def load_space(path: str | None, model: str | None = None) -> dict[str, dict]:
    """The default space, or the one in ``path`` (validated; BadInput names the problem), for
    ``model`` (default: TrainConfig's). The default space's ``model_options.NAME`` keys are kept
    only when the model takes NAME (the basic and enhanced models have no affinity options); a
    file's must all be the model's."""
    model = model or TrainConfig.model
    if not path:
        options = model_option_names(model)
        return {k: v for k, v in DEFAULT_SPACE.items()
                if not k.startswith(MODEL_OPTION) or k[len(MODEL_OPTION):] in options}
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise BadInput(f"{p}: cannot read search-space file ({exc.strerror or exc})") from None
    try:
        if p.suffix.lower() in (".yaml", ".yml"):
            import yaml

            space = yaml.safe_load(text)
        else:
            space = json.loads(text)
    except (ValueError, yaml_error()) as exc:  # json: ValueError; yaml: YAMLError
        raise BadInput(f"{p}: not valid {'YAML' if p.suffix in ('.yaml', '.yml') else 'JSON'} "
                       f"({str(exc).splitlines()[0]})") from None
    validate_space(space, p, model)
    return space


def yaml_error() -> type[Exception]:
    import yaml

    return yaml.YAMLError


def validate_space(space, where: Path | str = "search space", model: str | None = None) -> None:
    """The file's shape here; every value a distribution can draw (each choice, both ends of a
    range) then goes through TrainConfig's own validation, so a space cannot sample a value
    training would refuse (``dropout`` 1.5, ``heads`` 2.5, a string ``lr``)."""
    if not isinstance(space, dict) or not space:
        raise BadInput(f"{where}: must map option names to distributions")
    known = {f.name for f in fields(TrainConfig)}
    model = model or TrainConfig.model
    defaults = {**TrainConfig().to_dict(), "model": model}
    options = model_option_names(model)
    for name, spec in space.items():
        if name.startswith(MODEL_OPTION):
            if name[len(MODEL_OPTION):] not in options:
                raise BadInput(f"{where}: '{name}': the {model} model takes no "
                               f"option '{name[len(MODEL_OPTION):]}'")
        elif name not in known:
            raise BadInput(f"{where}: '{name}' is not a training option")
        if not isinstance(spec, dict) or spec.get("type") not in TYPES:
            raise BadInput(f"{where}: '{name}' needs type one of {', '.join(TYPES)}")
        if spec["type"] == "choice":
            if not isinstance(spec.get("values"), list) or not spec["values"]:
                raise BadInput(f"{where}: '{name}' choice needs a non-empty list 'values'")
        else:
            low, high = spec.get("low"), spec.get("high")
            if not isinstance(low, (int, float)) or not isinstance(high, (int, float)) or low >= high:
                raise BadInput(f"{where}: '{name}' needs numbers low < high")
            if spec["type"] == "loguniform" and low <= 0:
                raise BadInput(f"{where}: '{name}' loguniform needs low > 0")
        ends = (spec["values"] if spec["type"] == "choice"
                else [spec["low"], spec["high"] - 1] if spec["type"] == "randint"
                else [float(spec["low"]), float(spec["high"])])  # draws are floats
        for value in ends:
            try:
                point = to_train_config({name: value})
            except ValueError:
                raise BadInput(f"{where}: '{name}' value {value!r} is not a list of "
                               "comma-separated integers") from None
            TrainConfig.validate(to_train_config(point, defaults), where=f"{where}: search space")


def default_point(space: dict[str, dict], base: dict, model: str) -> tuple[dict | None, list[str]]:
    """The base configuration's own value of every key of ``space``, written as the space writes
    it (fanouts ``"10,5"``; a ``model_options.NAME`` from base's model_options, else the model's
    default), so that a search can start from the defaults. Returns ``(point, [])``, or
    ``(None, keys)`` naming the keys whose default the space cannot draw (outside a range, not
    among the choices): Optuna takes a starting point only whole."""
    from engine.models import model_option_defaults

    options = {**model_option_defaults(model), **(base.get("model_options") or {})}
    point, outside = {}, []
    for name, spec in space.items():
        value = (options.get(name[len(MODEL_OPTION):]) if name.startswith(MODEL_OPTION)
                 else base.get(name))
        if name == "fanouts" and isinstance(value, list):
            value = ",".join(str(v) for v in value)
        if spec["type"] == "choice":
            # 2 and 2.0 are one choice; True and 1 are not
            inside = any(value == v and isinstance(value, bool) == isinstance(v, bool)
                         for v in spec["values"])
        else:
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            inside = number and (spec["low"] <= value < spec["high"] if spec["type"] == "randint"
                                 else spec["low"] <= value <= spec["high"])
        if inside:
            point[name] = value
        else:
            outside.append(name)
    return (None, outside) if outside else (point, [])


def to_tune(space: dict[str, dict]) -> dict:
    """Ray Tune sampling objects for the space (OptunaSearch converts them)."""
    from ray import tune

    out = {}
    for name, s in space.items():
        t = s["type"]
        out[name] = (tune.loguniform(s["low"], s["high"]) if t == "loguniform"
                     else tune.uniform(s["low"], s["high"]) if t == "uniform"
                     else tune.randint(s["low"], s["high"]) if t == "randint"
                     else tune.choice(s["values"]))
    return out


def to_train_config(sample: dict, base: dict | None = None) -> dict:
    """A sampled point as TrainConfig fields over ``base``: fanouts "10,5" -> [10, 5], and
    ``model_options.NAME`` sets NAME in (a copy of) base's ``model_options``."""
    cfg = dict(base or {})
    opts = dict(cfg.get("model_options") or {})
    for name, value in sample.items():
        if name.startswith(MODEL_OPTION):
            opts[name[len(MODEL_OPTION):]] = value
        elif name == "fanouts" and isinstance(value, str):
            cfg[name] = [int(v) for v in value.split(",")]
        else:
            cfg[name] = value
    if opts:
        cfg["model_options"] = opts
    return cfg
