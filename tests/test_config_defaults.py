"""Each training hyper-parameter is defaulted in one place, TrainConfig (issue 13).

The modules below engine.training (data, graph, models) cannot import TrainConfig, so the ones
that take a hyper-parameter take it without a default and every caller passes the config's value.
These tests look at the signatures: a parameter named like a TrainConfig field must have no
default, or (outside the sampler, split and models) the config's own, unless it is listed below
with the other meaning it has there. They would have caught BPRBatches' ``pos_per_owner=4`` and
``neg_popularity`` 0.0 (config: 8 and 0.5), PlaylistGATOptions' ``heads=4`` (config: 2) and
``make_split``'s ``max_val_owners=None`` (config: 1000)."""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil

import pytest

import engine
from engine.errors import BadInput
from engine.training.config import PIPELINES, TrainConfig, make_model, model_options

FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
NO_DEFAULT = inspect.Parameter.empty


def config_default(name: str):
    f = FIELDS[name]
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def signature_defaults(obj) -> dict[str, object]:
    """``{parameter: default}`` of a function, a class's ``__init__`` or a dataclass."""
    return {p.name: p.default for p in inspect.signature(obj).parameters.values()}


def take_hyper_parameters():
    """What takes a training hyper-parameter from the config: none of them may default it."""
    from engine.graph.batches import BPRBatches, steps_per_epoch
    from engine.graph.negatives import sample_negatives
    from engine.graph.split import make_split, split_playlists, split_sessions
    from engine.models import EnhancedGATRecommender, GATRecommender, PlaylistGATOptions
    from engine.models.init import svd_factors, svd_init_

    return [BPRBatches, steps_per_epoch, sample_negatives, make_split, split_playlists,
            split_sessions, svd_factors, svd_init_, GATRecommender, EnhancedGATRecommender,
            PlaylistGATOptions]


# (module.qualname, parameter): a parameter named like a TrainConfig field that means something
# else there, so its own default is no restated config default
OTHER_MEANING = {
    ("engine.eval.evaluate.evaluate_scores", "batch_size"): "owners scored per batch: the loop "
    "passes eval_batch_size",
    ("engine.eval.baselines.evaluate_with_baselines", "batch_size"): "as evaluate_scores",
    ("engine.eval.evaluate.evaluate_scores", "progress"): "a progress bar, off unless asked",
    ("engine.eval.baselines.evaluate_with_baselines", "progress"): "as evaluate_scores",
    ("engine.data.kaggle_writer.write_kaggle_csv", "progress"): "None: a bar on a terminal",
    ("engine.report.Run", "model"): "a finished run's record: '' until read from its config",
    ("engine.report.Run.__init__", "model"): "as engine.report.Run",
}


def below_training():
    """``(module.qualname, callable)`` for every function, method and class defined in engine's
    modules outside engine.training (those that cannot import TrainConfig)."""
    for info in pkgutil.walk_packages(engine.__path__, "engine."):
        if info.name.startswith("engine.training"):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if getattr(obj, "__module__", None) != module.__name__:
                continue
            if inspect.isfunction(obj):
                yield f"{module.__name__}.{name}", obj
            elif inspect.isclass(obj):
                if dataclasses.is_dataclass(obj):
                    yield f"{module.__name__}.{name}", obj
                for attr, fn in vars(obj).items():
                    if inspect.isfunction(fn):
                        yield f"{module.__name__}.{name}.{attr}", fn


@pytest.mark.timeout(120)
def test_what_takes_a_hyper_parameter_has_no_default_of_its_own():
    for obj in take_hyper_parameters():
        defaulted = {k: v for k, v in signature_defaults(obj).items()
                     if k in FIELDS and v is not NO_DEFAULT}
        assert not defaulted, f"{obj.__qualname__} defaults TrainConfig fields: {defaulted}"


@pytest.mark.timeout(120)
def test_no_module_below_training_restates_a_config_default_differently():
    differ = []
    for where, obj in below_training():
        try:
            params = signature_defaults(obj)
        except (TypeError, ValueError):  # no signature (builtins wrapped by a decorator)
            continue
        for k, v in params.items():
            if k not in FIELDS or v is NO_DEFAULT or (where, k) in OTHER_MEANING:
                continue
            if v != config_default(k):
                differ.append(f"{where}({k}={v!r}; TrainConfig: {config_default(k)!r})")
    assert not differ, "defaults that differ from TrainConfig's: " + "; ".join(differ)


@pytest.mark.timeout(120)
def test_make_model_sets_every_config_field_a_model_takes():
    """A model option that is a TrainConfig field always comes from the config (it has no
    default in the model)."""
    from engine.models import MODELS, model_option_names
    from tests.test_sampler import random_graph

    g = random_graph()
    for name in MODELS:
        opts = model_options(TrainConfig(model=name), g)
        assert model_option_names(name) & set(FIELDS) <= set(opts), name


@pytest.mark.timeout(120)
def test_a_mistyped_model_option_is_an_error_on_every_path(one_thread):
    from engine.models import build_model, graph_meta
    from tests.test_sampler import random_graph

    g = random_graph()
    for name in ("basic", "enhanced", "playlist"):
        opts = model_options(TrainConfig(model=name), g)
        with pytest.raises(ValueError, match="haeds"):
            build_model(name, graph_meta(g), **opts, haeds=4)
        with pytest.raises(BadInput, match="affinity_taw"):
            make_model(TrainConfig(model=name, model_options={"affinity_taw": 1.0}), g)
    # one config serves every model: "basic" drops the options it does not take
    with pytest.warns(UserWarning, match="genre_weight"):
        basic = make_model(TrainConfig(model="basic", genre_weight=0.3), g)
    assert basic.heads == TrainConfig.heads and basic.embedding_dim == TrainConfig.embedding_dim
    with pytest.warns(UserWarning, match="affinity_tau"):  # PlaylistGAT's, in a tune space
        make_model(TrainConfig(model="enhanced", model_options={"affinity_tau": 2.0}), g)


@pytest.mark.timeout(60)
def test_pipeline_presets_are_config_values():
    from tune.search import MODEL

    for preset in PIPELINES.values():
        TrainConfig.validate({**TrainConfig().to_dict(), **preset})
    assert MODEL == {"kaggle": "playlist", "synthetic": "enhanced"}
