"""tune.space: the default space reaches model options and validates without Ray."""
from __future__ import annotations

import pytest

from engine.errors import BadInput
from engine.training.config import TrainConfig
from tune.space import DEFAULT_SPACE, to_train_config, validate_space


def test_default_space_reaches_the_quality_options() -> None:
    validate_space(DEFAULT_SPACE)  # every end of every range is a config training accepts
    for key in ("neg_popularity", "id_init", "model_options.affinity_tau", "lr", "heads",
                "genre_weight"):
        assert key in DEFAULT_SPACE


def test_a_sampled_model_option_lands_in_model_options_over_the_base() -> None:
    base = TrainConfig(model_options={"affinity_init": 1.0, "heads_extra": 3}).to_dict()
    cfg = to_train_config({"model_options.affinity_tau": 4.0, "fanouts": "15,10", "lr": 0.1},
                          base)
    assert cfg["model_options"] == {"affinity_init": 1.0, "heads_extra": 3, "affinity_tau": 4.0}
    assert cfg["fanouts"] == [15, 10] and cfg["lr"] == 0.1
    assert base["model_options"] == {"affinity_init": 1.0, "heads_extra": 3}  # not mutated
    assert to_train_config({"model_options.affinity_tau": 2.0}) == {
        "model_options": {"affinity_tau": 2.0}}


@pytest.mark.parametrize("space,message", [
    ({"model_options.no_such": {"type": "choice", "values": [1]}}, "takes no option 'no_such'"),
    ({"id_init": {"type": "choice", "values": ["svd", "pca"]}}, "id_init"),
])
def test_bad_model_options_in_a_space_are_named(space, message) -> None:
    with pytest.raises(BadInput, match=message):
        validate_space(space, "space.json")
