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


def test_the_space_follows_the_searched_model(tmp_path) -> None:
    """The default space searches PlaylistGAT's affinity options only for PlaylistGAT; a file
    that names an option the searched model does not take is refused, naming the model."""
    import json

    from tune.space import load_space

    playlist = load_space(None, "playlist")
    enhanced = load_space(None, "enhanced")
    assert "model_options.affinity_tau" in playlist
    assert not [k for k in enhanced if k.startswith("model_options.")]
    assert set(playlist) - set(enhanced) == {"model_options.affinity_tau",
                                             "model_options.affinity_init"}
    path = tmp_path / "space.json"
    path.write_text(json.dumps({"model_options.affinity_tau": {"type": "choice",
                                                               "values": [1.0]}}))
    assert "model_options.affinity_tau" in load_space(str(path), "playlist")
    with pytest.raises(BadInput, match="the enhanced model takes no option 'affinity_tau'"):
        load_space(str(path), "enhanced")
