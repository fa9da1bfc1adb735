"""Ray for real: the cluster files against Ray's own schema, job files run as file paths (what
`ray submit` does), two embedded-Ray jobs at once (quiet, loopback only, no hang), and a
three-node cluster on this machine that loses a node mid-epoch."""
from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from benchmarks.local_cluster import LocalCluster, clean_env

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--mode", "mini", "--embedding-dim", "16", "--heads", "2"]
METRIC_KEYS = {"recall@10", "ndcg@10", "recall@50", "ndcg@50", "r_precision", "playlists",
               "coverable", "distinct_artists@10", "coverage@10"}
RAY_NOISE = ("Traceback", "TrainingReport(", "core_worker")


def _job_env() -> dict:
    env = clean_env()
    env.pop("RAY_AUTH_MODE")  # an embedded Ray sets up its own auth
    return env


def _assert_complete(out: Path) -> dict:
    m = json.loads((out / "metrics.json").read_text())
    assert METRIC_KEYS <= set(m["test"])
    for name in ("popularity", "item_knn"):
        assert METRIC_KEYS <= set(m["baselines"][name])
    assert m["params"] > 0 and m["train_seconds"] > 0
    return m


# ---------------------------------------------------------------- cluster files (offline)

@pytest.mark.parametrize("name", ["cluster.yaml", "cluster-local.yaml"])
def test_cluster_file_passes_rays_schema_and_a_typo_fails(name, monkeypatch):
    jsonschema = pytest.importorskip("jsonschema")
    import socket

    def offline(self, address):
        raise AssertionError(f"validating {name} tried to reach {address}")

    monkeypatch.setattr(socket.socket, "connect", offline)
    # Ray's own launcher code (private API: tests only). prepare_config merges the provider's
    # defaults from files; it reaches no cloud (bootstrapping, which `ray up` does next, would).
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load((ROOT / name).read_text())
    prepared = prepare_config(copy.deepcopy(cfg))
    validate_config(prepared)
    assert prepared["file_mounts"] == {"~/gatrec": "."}
    assert any("pip install" in c and "torch==2.13.0" in c for c in prepared["setup_commands"])
    assert any("ray[default,train,tune]==2.60.0" in c for c in prepared["setup_commands"])

    top = copy.deepcopy(cfg)
    top["setup_comands"] = top.pop("setup_commands")
    with pytest.raises(jsonschema.ValidationError, match="setup_comands"):
        validate_config(prepare_config(top))
    nested = copy.deepcopy(cfg)
    nested["auth"]["ssh_usr"] = nested["auth"].pop("ssh_user")
    with pytest.raises(jsonschema.ValidationError, match="ssh_usr"):
        validate_config(prepare_config(nested))


def test_aws_cluster_file_names_shared_storage_and_boto3():
    text = (ROOT / "cluster.yaml").read_text()
    assert "mount -t nfs4" in text and "/mnt/shared" in text
    assert "# gpu_worker:" in text
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'cluster = ["boto3==' in pyproject


def test_worker_nodes_are_grouped_per_attempt_and_rank(tmp_path):
    from engine.training.ray_train import NODES_FILE, worker_nodes

    rows = [{"rank": 1, "node_id": "b"}, {"rank": 0, "node_id": "a"},  # attempt 1
            {"rank": 0, "node_id": "a"}, {"rank": 1, "node_id": "c"}]  # attempt 2
    (tmp_path / NODES_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert worker_nodes(tmp_path, 2) == [[rows[1], rows[0]], [rows[2], rows[3]]]
    assert worker_nodes(tmp_path / "none", 2) == []


def test_ray_log_lines_go_to_the_run_folder(tmp_path, capsys):
    import logging

    from engine.training.ray_train import LOG_FILE, route_ray_logs

    log = logging.getLogger("ray")
    saved = (list(log.handlers), log.level, log.propagate)
    try:
        assert route_ray_logs(tmp_path) == tmp_path / LOG_FILE
        logging.getLogger("ray.some.module").warning("token-auth notice")
        logging.getLogger("ray.some.module").error("a real error")
        for h in log.handlers:
            h.flush()
        assert "token-auth notice" in (tmp_path / LOG_FILE).read_text()
        err = capsys.readouterr().err
        assert "a real error" in err and "token-auth notice" not in err
    finally:
        for h in list(log.handlers):
            log.removeHandler(h)
            h.close()
        for h in saved[0]:
            log.addHandler(h)
        log.setLevel(saved[1])
        log.propagate = saved[2]


# ---------------------------------------------------------------- job files as file paths

@pytest.mark.timeout(120)
@pytest.mark.parametrize("job", ["jobs/train_kaggle.py", "tune/search.py"])
def test_job_file_runs_as_a_file_path_from_anywhere(job, tmp_path):
    """`ray submit cluster.yaml FILE -- ARGS` copies FILE to the head and runs `python FILE`:
    the file must import the installed package, from the repo or from a copy elsewhere."""
    here = subprocess.run([sys.executable, job, "--help"], cwd=ROOT, capture_output=True,
                          text=True, env=_job_env(), timeout=100, check=False)
    assert here.returncode == 0, here.stderr
    copy_ = tmp_path / f"copy_of_{Path(job).name}"
    shutil.copy(ROOT / job, copy_)
    elsewhere = subprocess.run([sys.executable, str(copy_), "--help"], cwd=tmp_path,
                               capture_output=True, text=True, env=_job_env(), timeout=100,
                               check=False)
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert "--address" in elsewhere.stdout and "usage:" in elsewhere.stdout


# ---------------------------------------------------------------- two embedded jobs at once

def _listeners(pid: int) -> set[tuple[int, str, str, int]]:
    """(pid, process name, address, port) of every listening socket of ``pid`` and its
    descendants."""
    import psutil

    found = set()
    try:
        root = psutil.Process(pid)
        procs = [root] + root.children(recursive=True)
    except psutil.NoSuchProcess:
        return found
    for p in procs:
        try:
            for c in p.net_connections(kind="inet"):
                if c.status == psutil.CONN_LISTEN:
                    found.add((p.pid, p.name(), c.laddr.ip, c.laddr.port))
        except psutil.Error:
            pass
    return found


@pytest.mark.timeout(360)
def test_two_embedded_jobs_at_once_finish_quietly_on_loopback(tiny_playlists, tmp_path):
    """Two train_kaggle jobs start together, each with its own embedded Ray (one run as a copied
    file from another folder, as `ray submit` would). Both finish with complete metrics; their
    output holds no traceback and no Ray internals; every socket their Ray opens listens on
    127.0.0.1 only."""
    copy_ = tmp_path / "copy_of_train_kaggle.py"
    shutil.copy(ROOT / "jobs" / "train_kaggle.py", copy_)
    outs = [tmp_path / "a", tmp_path / "b"]
    cmds = [([sys.executable, "-m", "jobs.train_kaggle"], ROOT, []),
            ([sys.executable, str(copy_)], tmp_path, ["--no-progress"])]
    procs = []
    for (cmd, cwd, extra), out in zip(cmds, outs):
        procs.append(subprocess.Popen(
            [*cmd, "--data", str(tiny_playlists), "--workers", "2", "--epochs", "1",
             "--batch-size", "32", *TINY, "--output", str(out), *extra],
            cwd=cwd, env=_job_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    texts = [[], []]
    readers = [threading.Thread(target=lambda p=p, t=t: t.extend(p.stdout)) for p, t in
               zip(procs, texts)]
    for r in readers:
        r.start()
    sockets = set()
    deadline = time.time() + 330
    while any(p.poll() is None for p in procs) and time.time() < deadline:
        for p in procs:
            sockets |= _listeners(p.pid)
        time.sleep(1)
    for r in readers:
        r.join(timeout=30)
    outputs = ["".join(t) for t in texts]
    for out, text in zip(outs, outputs):
        (tmp_path / f"{out.name}.log").write_text(text)
    for p, out, text in zip(procs, outs, outputs):
        assert p.wait(timeout=30) == 0, text[-3000:]
        _assert_complete(out)
        for noise in RAY_NOISE:
            assert noise not in text, f"{noise!r} in the output of {out.name}:\n{text[-3000:]}"
        assert f"Ray's own log: {out / 'ray.log'}" in text and (out / "ray.log").exists()
        assert text.count("Epoch 1/1 - train_loss:") == 1  # one line per epoch per run
    assert any(name == "gcs_server" for _, name, _, _ in sockets), sockets  # the scan saw Ray
    open_ = {s for s in sockets if s[2] not in ("127.0.0.1", "::ffff:127.0.0.1")}
    # The one exception: torch.distributed's rendezvous store, which rank 0 opens on every
    # interface (torch offers no bind address): one port per job, in a Train worker process
    # (whose title changes with the task it runs).
    train = {pid for pid, name, _, _ in sockets if name.startswith("ray::RayTrainWo")}
    store = {s for s in open_ if s[0] in train}
    ports = {port for _, _, _, port in store}
    assert open_ == store and len(ports) <= len(procs), \
        f"listening beyond loopback: {sorted(open_ - store)} {sorted(store)}"
    print(f"\ntwo concurrent embedded jobs: both exit 0; "
          f"{len({(ip, port) for _, _, ip, port in sockets})} listening sockets, all on "
          f"127.0.0.1 but {len(ports)} torch rendezvous port(s)")


# ---------------------------------------------------------------- several nodes, one lost

@pytest.mark.timeout(420)
def test_three_nodes_spread_workers_and_survive_losing_one(tiny_playlists, tmp_path):
    """Head + two nodes (one CPU and a custom resource each). Two SPREAD workers land on two
    different nodes (metrics.json worker_nodes); the non-head node holding one is lost mid-epoch
    (its raylet SIGKILLed from outside); the run resumes on the nodes left and finishes, with the
    resume and the epochs lost in metrics.json, checkpoints and events in the run folder."""
    out = tmp_path / "shared" / "run"
    t0 = time.time()
    with LocalCluster({"head": 1, "node_a": 1, "node_b": 1}) as cluster:
        up = time.time() - t0
        names = {cluster.node_id(n): n for n in cluster.names}
        job = subprocess.Popen(
            [sys.executable, "-m", "jobs.train_kaggle", "--address", cluster.address,
             "--workers", "2", "--placement", "SPREAD", "--data", str(tiny_playlists),
             "--epochs", "3", "--patience", "0", "--batch-size", "8", *TINY, "--no-progress",
             "--output", str(out)],
            cwd=ROOT, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True)
        lines, victim = [], None
        for line in job.stdout:
            lines.append(line)
            if victim is None and line.startswith("Epoch 1/3"):
                nodes_file = (out / "worker_nodes.jsonl").read_text()
                rows = [json.loads(r) for r in nodes_file.splitlines()]
                placed = [names[r["node_id"]] for r in rows]
                victim = next(n for n in placed if n != "head")
                time.sleep(0.5)  # into epoch 2
                cluster.kill_raylet(victim)
        text = "".join(lines)
        assert job.wait(timeout=60) == 0, text[-4000:]
    m = _assert_complete(out)
    first, *later = m["worker_nodes"]
    first_nodes = [names[w["node_id"]] for w in first]
    assert len(set(first_nodes)) == 2, f"SPREAD put both workers on {first_nodes}"
    assert victim in first_nodes
    assert later and all(names[w["node_id"]] != victim for w in later[-1])
    assert [h["epoch"] for h in m["history"]] == [1, 2, 3]
    assert len(m["resumes"]) == 1 and m["resumes"][0]["from_epoch"] >= 1
    assert m["resumes"][0]["epochs_lost"] >= 1
    assert list((out / "ray_train").rglob("state.pt")), "no checkpoint in the run folder"
    assert list((out / "tensorboard").rglob("events.out.tfevents.*")), "no events"
    print(f"\ncluster up in {up:.0f} s; first attempt: ranks on {first_nodes}; lost {victim} "
          f"mid-epoch 2; resumes {m['resumes']}; after: "
          f"{[names[w['node_id']] for w in later[-1]]}; epochs {len(m['history'])}; "
          f"{time.time() - t0:.0f} s in all")
