"""A real multi-node Ray cluster on this machine: ``ray start --head`` plus ``ray start
--address`` per extra node, each with its own CPUs and a custom resource named after it.

Used by ``tests/test_cluster.py`` and ``benchmarks/bench_nodes.py``. Every node runs
``ray start --block`` in its own process group, so stopping (or losing) one node touches only
that node's processes, never another Ray instance on the machine (no ``ray stop``).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))
# Environment of every node and of jobs sent to the cluster: nothing from a Ray instance this
# process may have started or joined.
DROP_ENV = ("RAY_ADDRESS", "RAY_GCS_SERVER_PORT", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")


def clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in DROP_ENV}
    env["RAY_AUTH_MODE"] = "token"  # the head enables token auth; its clients must say so too
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCluster:
    """``nodes``: ``{name: cpus}``; the first is the head. Each node gets the custom resource
    ``{name: 1}``. Use as a context manager; ``address`` is what jobs pass as ``--address``."""

    def __init__(self, nodes: dict[str, float], timeout: float = 60.0):
        self.cpus = dict(nodes)
        self.names = list(nodes)
        self.temp_dir = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # short: socket path limit
        self.procs: dict[str, subprocess.Popen] = {}
        self.timeout = timeout
        self.port = free_port()
        self.address = ""

    def _start(self, name: str, head: bool) -> None:
        cmd = [RAY, "start", "--block", f"--num-cpus={self.cpus[name]:g}",
               f"--resources={json.dumps({name: 1})}",
               f"--dashboard-agent-listen-port={free_port()}",
               f"--dashboard-agent-grpc-port={free_port()}",
               f"--runtime-env-agent-port={free_port()}",
               f"--metrics-export-port={free_port()}", "--disable-usage-stats"]
        if head:
            cmd += ["--head", f"--port={self.port}", "--node-ip-address=127.0.0.1",
                    "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                    f"--dashboard-port={free_port()}", f"--temp-dir={self.temp_dir}",
                    f"--ray-client-server-port={free_port()}"]
        else:
            # Nodes on one machine share the head's log folder: one log monitor (the head's)
            # forwards each worker's output once.
            cmd += [f"--address={self.address}", "--include-log-monitor=false"]
        with open(Path(self.temp_dir) / f"{name}.start.log", "w") as log:
            self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                                env=clean_env(), start_new_session=True)

    def _wait_nodes(self) -> None:
        deadline = time.time() + self.timeout
        while time.time() < deadline:
            logs = {n: (Path(self.temp_dir) / f"{n}.start.log").read_text() for n in self.procs}
            if all("Ray runtime started" in text for text in logs.values()):
                return
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"ray start of node {name} exited:\n{logs[name][-3000:]}")
            time.sleep(0.5)
        raise TimeoutError(f"nodes {', '.join(self.procs)} did not start within "
                           f"{self.timeout:.0f} s (logs in {self.temp_dir})")

    def __enter__(self):
        try:
            self._start(self.names[0], head=True)
            # the head registers under this machine's address (Ray's multi-node mode)
            self.address = f"{self.node_ip()}:{self.port}"
            self._wait_nodes()
            for name in self.names[1:]:  # one at a time: a busy machine times joins out
                self._start(name, head=False)
                self._wait_nodes()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def node_ip(self) -> str:
        """The address Ray's multi-node mode gives this machine (the route to the outside)."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.connect(("8.8.8.8", 80))  # no packet is sent for a UDP connect
                return s.getsockname()[0]
            except OSError:
                return "127.0.0.1"

    def processes(self, name: str):
        """The node's Ray processes (raylet, workers, agents; on the head also GCS)."""
        import psutil

        try:
            return psutil.Process(self.procs[name].pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def raylet_pid(self, name: str) -> int:
        for p in self.processes(name):
            if p.name() == "raylet":
                return p.pid
        raise LookupError(f"node {name} has no raylet")

    def node_id(self, name: str) -> str:
        """Ray's id of node ``name`` (read from its raylet's command line)."""
        import psutil

        for arg in psutil.Process(self.raylet_pid(name)).cmdline():
            if arg.startswith("--node_id="):
                return arg.split("=", 1)[1]
        raise LookupError(f"node {name}: no --node_id on the raylet's command line")

    def kill_raylet(self, name: str) -> None:
        """Lose node ``name``: SIGKILL its raylet from outside (its workers go with it)."""
        os.kill(self.raylet_pid(name), signal.SIGKILL)

    def stop(self) -> None:
        """Kill every node's processes (test and benchmark clusters keep no state worth a
        graceful stop, and SIGTERM makes ``ray start --block`` wait up to half a minute)."""
        import psutil

        for name, p in self.procs.items():
            left = self.processes(name)
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            for c in left:  # anything outside the process group
                try:
                    c.kill()
                except psutil.NoSuchProcess:
                    pass
            p.wait()
        self.procs.clear()
        shutil.rmtree(self.temp_dir, ignore_errors=True)
