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


@pytest.mark.timeout(30)
def test_the_search_can_start_from_the_defaults() -> None:
    """The default space can draw every default of each mode and pipeline, written as the space
    writes it; a space that cannot draw one names it and gives no point (Optuna takes a starting
    point only whole)."""
    from engine.training.config import MODES, PIPELINES, mode_config
    from tune.space import default_point, load_space

    for mode in MODES:
        base = TrainConfig(**mode_config(mode)).to_dict()
        point, outside = default_point(load_space(None, "playlist"), base, "playlist")
        assert outside == [] and set(point) == set(DEFAULT_SPACE)
        assert point["fanouts"] == ",".join(map(str, base["fanouts"]))
        assert point["lr"] == base["lr"] and point["id_init"] == base["id_init"]
        assert point["model_options.affinity_tau"] == 2.0  # the model's own default
    synthetic = TrainConfig(**PIPELINES["synthetic"]).to_dict()
    point, _ = default_point(load_space(None, "enhanced"), synthetic, "enhanced")
    assert point["heads"] == synthetic["heads"] and point["embedding_dim"] == 32

    base = TrainConfig(model_options={"affinity_tau": 0.0}).to_dict()
    space = {"lr": {"type": "loguniform", "low": 1e-4, "high": 1e-3},
             "heads": {"type": "choice", "values": [1, 2]},
             "model_options.affinity_tau": {"type": "choice", "values": [0, 1]},
             "recency": {"type": "choice", "values": [0, 1]}}
    # lr 0.01 is above the range; False is not the choice 0; tau 0.0 is the choice 0
    assert default_point(space, base, "playlist") == (None, ["lr", "recency"])
    del space["lr"], space["recency"]
    assert default_point(space, base, "playlist") == (
        {"heads": 2, "model_options.affinity_tau": 0.0}, [])
