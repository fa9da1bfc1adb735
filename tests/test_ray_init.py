"""Starting Ray (``engine.training.ray_train.init_ray``) against a fake ``ray.init``: a local node
that misses Ray's start deadline, an embedded Ray without a dashboard, and Ray's folding of alike
log lines. No Ray starts here."""
from __future__ import annotations

import pytest


@pytest.fixture
def fake_ray_start(monkeypatch):
    """init_ray against a fake ``ray.init`` (the real module otherwise): what init_ray puts in the
    environment is cleared before each start (a fresh process) and restored afterwards, and a
    shared Ray session of other tests is untouched.
    Yields ``start(fails)``: installs a ray.init that raises Ray's start-timeout error on its
    first ``fails`` calls and records each call's address, runtime_env and environment."""
    import os

    import ray

    from engine.training import ray_train

    names = ("RAY_ADDRESS", "RAY_GCS_SERVER_PORT", "RAY_DEDUP_LOGS", *ray_train.QUIET_ENV,
             *ray_train.EMBEDDED_ENV)
    before = {name: os.environ.get(name) for name in names}
    for name in names:  # recorded, so that teardown restores (or removes) each of them
        monkeypatch.setenv(name, before[name] or "")
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    calls = []

    def start(fails: int = 0):
        # each start sees a fresh process without the user's own settings: none of these set
        # (a shared Ray session of earlier tests set them; teardown restores them)
        for name in names:
            os.environ.pop(name, None)
        monkeypatch.setattr(ray_train, "_set_env", [])

        def init(address=None, **kwargs):
            calls.append({"address": address, "env_vars": dict(kwargs["runtime_env"]["env_vars"]),
                          "environ": dict(os.environ), "runtime_env": kwargs["runtime_env"],
                          "dashboard": kwargs["include_dashboard"]})
            if len(calls) <= fails:
                raise Exception(  # noqa: TRY002 - what Ray raises
                    "The current node timed out during startup. This could happen because some "
                    "of the raylet failed to startup or the GCS has become overloaded.")
        calls.clear()
        monkeypatch.setattr(ray, "init", init)
        return calls

    yield start


@pytest.mark.timeout(120)
def test_a_local_node_that_misses_rays_start_deadline_is_started_again(fake_ray_start, capsys):
    """Ray gives a new node 30 s to register and raises a bare Exception when a busy machine
    misses it: init_ray starts it again on a fresh port, says so in one line, and gives up
    (Ray's own error) after START_TRIES."""
    import ray

    from engine.training import ray_train

    calls = fake_ray_start(fails=1)
    assert ray_train.init_ray(num_cpus=1) is ray
    assert [c["address"] for c in calls] == ["local", "local"]
    first, second = (c["env_vars"]["RAY_ADDRESS"] for c in calls)
    assert first != second  # a fresh port
    assert calls[1]["environ"]["RAY_ADDRESS"] == second  # spawned processes and this one agree
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "starting it again (2 of 3)" in err[0]

    calls = fake_ray_start(fails=ray_train.START_TRIES)
    with pytest.raises(Exception, match="timed out during startup"):
        ray_train.init_ray(num_cpus=1)
    assert len(calls) == ray_train.START_TRIES

    def other(**kwargs):
        raise ValueError("other")

    calls = fake_ray_start()
    import ray as ray_module

    ray_module.init = other  # restored by the fixture's monkeypatch
    with pytest.raises(ValueError, match="other"):  # any other failure is not retried
        ray_train.init_ray(num_cpus=1)


@pytest.mark.timeout(120)
def test_an_embedded_ray_without_dashboard_keeps_the_cleaners_warnings_off_the_console(
        fake_ray_start):
    """``--no-dashboard``: Train's placement-group cleaner cannot reach the state API and
    warned once a second on the console for the whole run. An embedded Ray without a dashboard
    runs :func:`quiet_cleaner` in every process it starts (Ray's ``worker_process_setup_hook``),
    which raises the level of the cleaner's logger, named as in this Ray's source."""
    import importlib
    import logging
    from pathlib import Path

    import ray

    from engine.training import ray_train

    calls = fake_ray_start()
    ray_train.init_ray(num_cpus=1, dashboard=False)
    assert calls[0]["dashboard"] is False
    hook = calls[0]["runtime_env"]["worker_process_setup_hook"]
    module, name = hook.rsplit(".", 1)  # what every process Ray starts imports and calls
    assert getattr(importlib.import_module(module), name) is ray_train.quiet_cleaner
    calls = fake_ray_start()  # with the dashboard the cleaner reaches the state API
    ray_train.init_ray(num_cpus=1)
    assert "worker_process_setup_hook" not in calls[0]["runtime_env"]

    source = Path(ray.__file__).parent / Path(*ray_train.CLEANER_LOGGER.split(".")[1:])
    text = source.with_suffix(".py").read_text()
    assert "logging.getLogger(__name__)" in text
    assert "Failed to query Ray Train Controller actor state" in text
    log = logging.getLogger(ray_train.CLEANER_LOGGER)
    before = log.level
    try:
        ray_train.quiet_cleaner()
        assert not log.isEnabledFor(logging.WARNING) and log.isEnabledFor(logging.ERROR)
    finally:
        log.setLevel(before)


@pytest.mark.timeout(120)
def test_tune_search_turns_off_rays_folding_of_alike_lines(fake_ray_start):
    """Concurrent trials' epoch lines differ only in their figures, and Ray's log dedup prints
    one of them with a "[repeated 2x across cluster]" note: tune.search starts Ray without it
    (and the job's processes get the setting); training jobs keep Ray's default."""
    from engine.training import ray_train

    calls = fake_ray_start()
    ray_train.init_ray(num_cpus=1, dedup_logs=False)
    assert calls[0]["env_vars"]["RAY_DEDUP_LOGS"] == "0"
    assert calls[0]["environ"]["RAY_DEDUP_LOGS"] == "0"
    calls = fake_ray_start()
    ray_train.init_ray(num_cpus=1)
    assert calls[0]["env_vars"]["RAY_DEDUP_LOGS"] == "1"
    import inspect

    from tune import search

    assert "dedup_logs=False" in inspect.getsource(search._main)
