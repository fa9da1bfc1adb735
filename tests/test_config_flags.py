"""The training jobs' hyper-parameter flags are derived from TrainConfig (jobs.flags), and give
the same configuration as the hand-written flags they replaced: the expected dicts below were
computed with the hand-written code (commit 814ebb2) and are written out here, not recomputed."""
from __future__ import annotations

import json
from dataclasses import fields

import pytest

from engine.training.config import SECTIONS, TrainConfig
from jobs import train_kaggle, train_synthetic
from jobs.flags import flag

# TrainConfig().to_dict() at 814ebb2
DEFAULTS = {
    "dataset": "", "graph_store": "", "genres_csv": "", "output": "runs/run", "model": "playlist",
    "epochs": 5, "steps_per_epoch": 0, "lr": 0.01, "batch_size": 128, "pos_per_owner": 8,
    "num_neg": 4, "neg_pool": 1024, "neg_popularity": 0.5, "recency": False,
    "embedding_dim": 64, "heads": 2, "num_layers": 2, "dropout": 0.1, "genre_weight": 0.0,
    "fanouts": [10, 5], "owner_rows": True, "model_options": {}, "id_init": "svd", "l2": 1e-05,
    "loss": "bpr", "logq": False, "holdout": 5, "val_ratio": 0.15, "test_ratio": 0.15,
    "max_val_owners": 1000, "patience": 3, "lr_factor": 0.5, "lr_patience": 1, "min_lr": 1e-05,
    "fixed_lr": False, "sparse_embeddings": True, "seed": 0, "eval_batch_size": 1024,
    "num_threads": 0, "progress": True, "final_test": True,
}
# fields added after 814ebb2, at their defaults (the first three: what every run before them
# trained with; knn_init: a term runs before it did not have; the term's exponents: its cosine
# in runs saved before them)
DEFAULTS.update({"dot_loss": 0.0, "id_lr": 0.0, "id_min_edges": 1, "knn_init": 1.0,
                 "knn_pop_exp": 0.5, "knn_len_exp": 0.0})
CONFIG_FILE = {"lr": 0.05, "heads": 4, "fanouts": [5, 5], "num_layers": 3}
SYNTHETIC = {"model": "enhanced", "epochs": 10, "embedding_dim": 32, "heads": 4,
             "genre_weight": 0.3}
# (job, argv, the merged config's differences from DEFAULTS); "CFG" stands for a --config file
# holding CONFIG_FILE
CASES = [
    (train_kaggle, [], {}),
    (train_kaggle, ["--mode", "mini"], {"epochs": 3, "batch_size": 256}),
    (train_kaggle, ["--mode", "full", "--lr", "0.003", "--epochs", "2", "--threads", "3",
                    "--holdout-size", "4", "--model", "enhanced", "--genre-weight", "0.2",
                    "--dropout", "0"],
     {"model": "enhanced", "epochs": 2, "lr": 0.003, "batch_size": 256, "fanouts": [10, 3],
      "id_min_edges": 2, "dropout": 0.0, "genre_weight": 0.2, "holdout": 4, "num_threads": 3}),
    (train_kaggle, ["--config", "CFG", "--heads", "8", "--batch-size", "32", "--pos-per-owner",
                    "2", "--num-neg", "3", "--embedding-dim", "16", "--l2", "0", "--patience", "0",
                    "--seed", "7", "--no-progress"],
     {"lr": 0.05, "batch_size": 32, "pos_per_owner": 2, "num_neg": 3, "embedding_dim": 16,
      "heads": 8, "num_layers": 3, "fanouts": [5, 5], "l2": 0.0, "patience": 0, "seed": 7,
      "progress": False}),
    (train_synthetic, [], {**SYNTHETIC, "patience": 0, "fixed_lr": True}),
    (train_synthetic, ["--advanced"], SYNTHETIC),
    (train_synthetic, ["--advanced", "--min-lr", "1e-4", "--lr-factor", "0.3", "--lr-patience",
                       "2", "--val-ratio", "0.2", "--test-ratio", "0.1", "--patience", "5",
                       "--threads", "2", "--epochs", "3"],
     {**SYNTHETIC, "epochs": 3, "val_ratio": 0.2, "test_ratio": 0.1, "patience": 5,
      "lr_factor": 0.3, "lr_patience": 2, "min_lr": 0.0001, "num_threads": 2}),
    (train_synthetic, ["--patience", "4", "--model", "basic", "--genre-weight", "0", "--config",
                       "CFG", "--lr", "0.02"],
     {**SYNTHETIC, "model": "basic", "lr": 0.02, "genre_weight": 0.0, "num_layers": 3,
      "fanouts": [5, 5], "patience": 0, "fixed_lr": True}),
]


@pytest.mark.parametrize(("job", "argv", "diff"), CASES,
                         ids=[f"{j.__name__.split('.')[-1]} {' '.join(a)}" for j, a, _ in CASES])
def test_flags_give_the_config_the_hand_written_flags_gave(job, argv, diff, tmp_path):
    path = tmp_path / "best_config.json"
    path.write_text(json.dumps(CONFIG_FILE))
    args = job.parse_args([str(path) if a == "CFG" else a for a in argv])
    cfg = job.make_config(args)
    assert cfg == {**DEFAULTS, **diff}
    assert {k: type(v) for k, v in cfg.items()} == \
        {k: type(v) for k, v in {**DEFAULTS, **diff}.items()}


def test_every_field_has_a_section_and_a_description():
    for f in fields(TrainConfig):
        assert f.metadata.get("section") in SECTIONS, f.name
        doc = f.metadata.get("doc", "")
        assert doc and "\n" not in doc and not doc.endswith("."), f.name


def test_hparams_are_the_fields_marked_so():
    """The keys TensorBoard HParams compared runs on when they were listed by hand."""
    hp = TrainConfig(fanouts=[15, 10]).hparams()
    assert set(hp) == {"model", "lr", "batch_size", "pos_per_owner", "num_neg", "embedding_dim",
                       "heads", "num_layers", "dropout", "genre_weight", "l2", "neg_popularity",
                       "owner_rows", "id_init", "loss", "seed", "fanouts",
                       "dot_loss", "id_lr", "id_min_edges", "knn_init", "knn_pop_exp",
                       "knn_len_exp"}  # the last six: added since
    assert hp["fanouts"] == "15,10" and hp["lr"] == 0.01


@pytest.mark.parametrize("job", [train_kaggle, train_synthetic])
def test_each_flag_is_its_field_grouped_by_section(job):
    """Help is the field's description, the type is the field's, choices are a Literal's, and
    each flag sits in its section's group."""
    parser = job.build_parser()
    by_flag = {a.option_strings[0]: a for a in parser._actions if a.option_strings}
    meta = {f.name: f.metadata for f in fields(TrainConfig)}
    for name in job.FLAGS:
        action = by_flag[flag(name)]
        assert action.help.startswith(meta[name]["doc"].replace("%", "%%")), name
        assert "(default: " in action.help and action.default is None, name
        group = next(g for g in parser._action_groups if action in g._group_actions)
        assert group.title == SECTIONS[meta[name]["section"]], name
    assert by_flag["--model"].choices == ["basic", "enhanced", "playlist"]
    assert by_flag["--lr"].type is float and by_flag["--heads"].type is int


@pytest.mark.parametrize(("job", "argv", "named"), [
    (train_kaggle, ["--holdout-size", "0", "--threads", "-1"], ["--holdout-size", "--threads"]),
    (train_synthetic, ["--val-ratio", "0.7", "--lr-factor", "1"], ["--val-ratio", "--lr-factor"]),
])
def test_a_bad_value_names_the_flag_as_typed(job, argv, named):
    from engine.errors import BadInput
    from jobs.common import check_options

    with pytest.raises(BadInput) as err:
        check_options(job.make_config(job.parse_args(argv)), 1, job.FLAGS)
    for name in named:
        assert f"{name}: " in str(err.value)


def test_every_mode_preset_is_a_valid_config():
    """Each mode's preset (all but max_playlists) is a set of TrainConfig fields in range; only
    full mode changes the fanouts (issue #15)."""
    from engine.training.config import MODES, TrainConfig, mode_config

    for mode in MODES:
        cfg = TrainConfig.validate(mode_config(mode), where=mode)
        assert cfg.fanouts == ([10, 3] if mode == "full" else TrainConfig().fanouts)
    assert "max_playlists" not in mode_config("full")
