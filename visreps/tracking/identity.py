"""Run identity: when a finished stage run may be re-used, and which unfinished runs are orphans.

A stage run's **run key** hashes the stage, its version, the result-affecting configuration (``config_hash``)
and the fingerprints of every input it reads (``inputs``: name -> fingerprint from ``visreps.fingerprints``,
e.g. ``{"dataset.root": <image tree>, "labels.table": <file content>}``). A complete, FINISHED run with an equal
run key is re-used; a finished run with the same configuration but other inputs is named with the inputs that
changed, and the stage runs again. Tags written on every stage run:

- ``visreps.config_key``: stage + version + config hash (+ the identifying inputs, e.g. an evaluation's model);
- ``visreps.run_key``: the config key plus the inputs;
- ``visreps.input.<name>``: each input's fingerprint;
- ``visreps.host``, ``visreps.pid``, ``visreps.heartbeat`` (ms since the epoch, refreshed every
  ``HEARTBEAT_S``): who runs it, so a run whose process died (SIGKILL leaves it RUNNING) is recognised.

A RUNNING run with the same run key is **live** when its heartbeat is younger than ``STALE_S`` and, on this
host, its process exists; otherwise it is an **orphan**, which the next run of that key either continues
(``resume``: a training resuming from its checkpoint) or ends as KILLED with ``visreps.superseded_by``.
The whole rule is documented for users in ``docs/reuse.md``.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

from mlflow import MlflowClient

from visreps.config import ConfigModel, config_hash

INPUT_TAG = "visreps.input."
HEARTBEAT_TAG = "visreps.heartbeat"
HOST_TAG = "visreps.host"
PID_TAG = "visreps.pid"
SUPERSEDED_TAG = "visreps.superseded_by"
HEARTBEAT_S = 60.0
STALE_S = 600.0


def config_key(stage: str, config: ConfigModel, stage_version: int,
               identifying: Mapping[str, str] | None = None) -> str:
    """Stage, version, result-affecting configuration and the *identifying* inputs (16 hex): what the run is
    about (an evaluation's model), as opposed to inputs that may change under it (a dataset's files)."""
    text = f"{stage}:{stage_version}:{config_hash(config)}"
    if identifying:
        text += json.dumps(dict(sorted(identifying.items())), separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_key(stage: str, config: ConfigModel, stage_version: int, inputs: Mapping[str, str] | None = None) -> str:
    """Identity of a stage run's result (16 hex): equal keys mean a finished run can be re-used."""
    key = config_key(stage, config, stage_version)
    if not inputs:
        return key
    text = key + json.dumps(dict(sorted(inputs.items())), separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RunIdentity:
    """What a stage run is: stage, version, configuration and the fingerprints of its inputs."""

    stage: str
    config: ConfigModel
    stage_version: int = 1
    inputs: Mapping[str, str] = field(default_factory=dict)
    identifying: tuple[str, ...] = ()  # names of inputs that say what the run is about (part of the config key)

    @property
    def config_key(self) -> str:
        return config_key(self.stage, self.config, self.stage_version,
                          {name: self.inputs[name] for name in self.identifying})

    @property
    def key(self) -> str:
        return run_key(self.stage, self.config, self.stage_version, self.inputs)

    def tags(self) -> dict[str, str]:
        """The identity tags of a run of this identity (see the module docstring)."""
        return {"visreps.config_key": self.config_key, "visreps.run_key": self.key,
                **{f"{INPUT_TAG}{name}": str(value) for name, value in self.inputs.items()}}

    def changed_inputs(self, tags: Mapping[str, str]) -> list[str]:
        """Names of the inputs whose fingerprint differs from the one recorded in ``tags`` (or is new/gone)."""
        recorded = {key[len(INPUT_TAG):]: value for key, value in tags.items() if key.startswith(INPUT_TAG)}
        names = sorted(set(recorded) | set(self.inputs))
        return [name for name in names if recorded.get(name) != self.inputs.get(name)]


def owner_tags() -> dict[str, str]:
    """Host, process id and a fresh heartbeat for the run this process works on."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()), HEARTBEAT_TAG: str(int(time.time() * 1000))}


def _process_exists(pid: int) -> bool:
    """Whether process ``pid`` is alive (a killed process its parent has not reaped yet, a zombie, is not)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # exists, owned by someone else
        return True


def is_live(tags: Mapping[str, str], now_s: float | None = None) -> bool:
    """Whether the RUNNING run with these tags still has a process working on it (see the module docstring)."""
    now_s = time.time() if now_s is None else now_s
    try:
        beat_s = int(tags.get(HEARTBEAT_TAG, "0")) / 1000.0
        pid = int(tags.get(PID_TAG, "0"))
    except ValueError:
        return False
    fresh = now_s - beat_s < STALE_S
    if tags.get(HOST_TAG) == socket.gethostname():
        return fresh and pid != os.getpid() and pid > 0 and _process_exists(pid)
    return fresh


def running_runs(mlflow_client: MlflowClient, key: str) -> list[Any]:
    """RUNNING runs with run key ``key`` in any experiment, newest first."""
    experiments = [experiment.experiment_id for experiment in mlflow_client.search_experiments()]
    if not experiments:
        return []
    return mlflow_client.search_runs(
        experiments, filter_string=f"tags.`visreps.run_key` = '{key}' and attributes.status = 'RUNNING'",
        order_by=["attributes.start_time DESC"], max_results=100,
    )


def end_orphans(mlflow_client: MlflowClient, orphans: list[Any], taken_over_by: str) -> None:
    """End each orphan as KILLED, tagged with the run that took over its work."""
    for orphan in orphans:
        mlflow_client.set_tag(orphan.info.run_id, SUPERSEDED_TAG, taken_over_by)
        mlflow_client.set_terminated(orphan.info.run_id, "KILLED")


class Heartbeat:
    """A daemon thread that refreshes ``visreps.heartbeat`` of a run every ``interval_s`` until stopped."""

    def __init__(self, tracking_uri: str, run_id: str, interval_s: float = HEARTBEAT_S) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(tracking_uri, run_id, interval_s),
                                        name=f"visreps-heartbeat-{run_id[:8]}", daemon=True)

    def _beat(self, tracking_uri: str, run_id: str, interval_s: float) -> None:
        beat_client = MlflowClient(tracking_uri=tracking_uri)
        while not self._stop.wait(interval_s):
            try:
                beat_client.set_tag(run_id, HEARTBEAT_TAG, str(int(time.time() * 1000)))
            except Exception:  # a missed beat only makes the run look idle sooner; never break the work
                continue

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def describe_live(tags: Mapping[str, str]) -> str:
    """``pid P on host H, heartbeat N s ago`` for an error message."""
    try:
        age = max(0.0, time.time() - int(tags.get(HEARTBEAT_TAG, "0")) / 1000.0)
    except ValueError:
        age = float("nan")
    return f"pid {tags.get(PID_TAG, '?')} on host {tags.get(HOST_TAG, '?')}, heartbeat {age:.0f} s ago"

