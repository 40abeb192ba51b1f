"""MLflow for one pipeline run: a parent run, one nested run per stage, and what to log.

The parent run opens before the first stage, so a failed or killed run is
visible too; each stage (cached or not) becomes a nested run with its wall time.
Tune trials are nested under the same parent by the tune module.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
import time
import warnings
from typing import Any

from raypipe.errors import RegistryError
from raypipe.registry.store import client, experiment_id, redact
from raypipe.runtime.orphans import pid_alive

log = logging.getLogger(__name__)


class Tracker:
    """The parent MLflow run of one pipeline run, through a client bound to ``tracking_uri``
    (a no-op when ``enabled`` is false)."""

    def __init__(self, tracking_uri: str, experiment: str, artifact_root, run_name: str, enabled: bool = True):
        self.tracking_uri = tracking_uri
        self.enabled = enabled
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self.closed_orphans: list[str] = []
        """Runs of this experiment left RUNNING by a killed process on this host, now marked KILLED."""
        if not enabled:
            return
        self.experiment_id = experiment_id(tracking_uri, experiment, artifact_root)
        self._client = _Guarded(client(tracking_uri), tracking_uri)
        try:
            owner = {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}
            run = self._client.create_run(self.experiment_id, run_name=run_name, tags=owner)
        except Exception as e:  # noqa: BLE001 - MLflow raises many types for an unreachable store
            raise RegistryError(f"cannot start an MLflow run in '{tracking_uri}': {e}".splitlines()[0]) from e
        self.run_id = run.info.run_id
        self.closed_orphans = close_orphaned_runs(tracking_uri, self.experiment_id, self.run_id)

    @classmethod
    def disabled(cls, tracking_uri: str) -> Tracker:
        """A tracker that logs nothing (before the run starts, or with ``register.enabled: false``)."""
        return cls(tracking_uri, "", None, "", enabled=False)

    def stage(self, name: str, seconds: float, cached: bool, detail: str) -> None:
        """Record one finished stage as a nested run, and its wall time on the parent."""
        if not self.enabled:
            return
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        child = self._client.create_run(
            self.experiment_id,
            run_name=name,
            tags={"mlflow.parentRunId": self.run_id, "raypipe.stage": name, "raypipe.cached": str(cached).lower()},
        )
        self._client.log_batch(
            child.info.run_id,
            metrics=[Metric("wall_s", seconds, now, 0)],
            tags=[RunTag("raypipe.detail", detail[:4000])],
        )
        self._client.set_terminated(child.info.run_id, "FINISHED")
        self._client.log_metric(self.run_id, f"stage_{name}_s", seconds)

    def log_params(self, params: dict[str, Any]) -> None:
        if self.enabled:
            from mlflow.entities import Param

            items = [Param(k, str(v)) for k, v in params.items()]
            for i in range(0, len(items), 100):  # MLflow caps a batch at 100 params
                self._client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: dict[str, float]) -> None:
        if self.enabled:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            items = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
            for i in range(0, len(items), 1000):
                self._client.log_batch(self.run_id, metrics=items[i : i + 1000])

    def set_tags(self, tags: dict[str, Any]) -> None:
        if self.enabled:
            from mlflow.entities import RunTag

            self._client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_text(self, text: str, path: str) -> None:
        if self.enabled:
            self._client.log_text(self.run_id, text, path)

    def log_dict(self, data: dict[str, Any], path: str) -> None:
        if self.enabled:
            self._client.log_dict(self.run_id, data, path)

    def log_artifact(self, path, folder: str | None = None) -> None:
        if self.enabled:
            self._client.log_artifact(self.run_id, str(path), folder)

    def log_artifacts(self, folder, path: str | None = None) -> None:
        if self.enabled:
            self._client.log_artifacts(self.run_id, str(folder), path)

    def log_input(self, data_uri: str, name: str, digest: str, rows: dict[str, int]) -> None:
        if not self.enabled:
            return
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        with warnings.catch_warnings():  # "the dataset source can be interpreted in multiple ways"
            warnings.simplefilter("ignore", UserWarning)
            dataset = MetaDataset(resolve_dataset_source(data_uri), name=name, digest=digest)
        tags = [InputTag(f"rows_{k}", str(v)) for k, v in rows.items()] + [InputTag(MLFLOW_DATASET_CONTEXT, "training")]
        self._client.log_inputs(self.run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(), tags)])

    def end(self, status: str = "FINISHED") -> None:
        if self.enabled and self.run_id:
            self._client.set_terminated(self.run_id, status)


class _Guarded:
    """An MLflow client whose every failure is one :class:`RegistryError` naming the store, so an
    outage mid-run ends the run with a line a user can act on (the finished stages stay cached)."""

    def __init__(self, inner: Any, tracking_uri: str) -> None:
        self._inner = inner
        self._uri = redact(tracking_uri)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args, **kwargs):
            try:
                return attr(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - MLflow raises many types for an unreachable store
                raise RegistryError(
                    f"MLflow tracking store {self._uri} failed ({name}): {_cause(e)}", store=self._uri
                ) from e

        return call


def _cause(e: BaseException) -> str:
    """The useful end of MLflow's wrapped HTTP errors ("... Caused by NewConnectionError(...refused)")."""
    text = " ".join(str(e).split())
    if "[Errno" in text:  # "...: [Errno 111] Connection refused\"))"
        return text[text.index("[Errno") :].split('"')[0].rstrip(")'")
    for marker in ("Caused by ", "failed with exception "):
        if marker in text:
            text = text.rsplit(marker, 1)[1]
            break
    return text[:240]


HOST_TAG, PID_TAG = "raypipe.host", "raypipe.pid"


def close_orphaned_runs(tracking_uri: str, experiment_id: str, current_run_id: str) -> list[str]:
    """Mark KILLED the parent runs a killed process left RUNNING (``kill -9``, OOM, power loss).

    Only runs started on this host whose process is gone: a run elsewhere, or one still
    going here, cannot be told apart from a live one. Returns the run ids marked.
    """
    c = client(tracking_uri)
    host = socket.gethostname().replace("'", "")
    query = f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{host}'"
    closed = []
    try:
        runs = c.search_runs([experiment_id], query, max_results=100)
    except Exception as e:  # noqa: BLE001 - housekeeping must not fail the run
        log.debug("cannot search for orphaned runs: %s", e)
        return closed
    for run in runs:
        pid = run.data.tags.get(PID_TAG, "")
        if run.info.run_id == current_run_id or not pid.isdigit() or pid_alive(int(pid)):
            continue
        c.set_tag(run.info.run_id, "raypipe.closed_by", current_run_id)
        c.set_terminated(run.info.run_id, "KILLED")
        log.warning("MLflow run %s (pid %s, no longer running) marked KILLED", run.info.run_id, pid)
        closed.append(run.info.run_id)
    return closed


def log_code_and_env(tracker: Tracker, code, packages: dict[str, str], all_packages: str) -> None:
    """Git commit, dirty flag (and the diff when dirty), and installed package versions."""
    tracker.set_tags(
        {
            "mlflow.source.git.commit": code.commit or "unknown",
            "raypipe.git_dirty": str(code.dirty).lower(),
            "raypipe.source_sha256": code.source_sha256,
            **{f"raypipe.pkg.{k}": v for k, v in packages.items()},
        }
    )
    tracker.log_text(all_packages, "env/requirements.txt")
    if code.diff:
        tracker.log_text(code.diff, "env/git.diff")


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> ``section.key`` params (lists and dicts as JSON)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = json.dumps(v) if isinstance(v, (list, dict)) else v
    return out


def log_trials(summary: dict[str, Any], tracking_uri: str, parent_run_id: str) -> list[str]:
    """Log each Ray Tune trial (``summary["trials"]``) as a nested MLflow run under ``parent_run_id``
    (from the driver). Returns the run ids."""
    from mlflow.entities import Metric, Param

    c = client(tracking_uri)
    experiment = c.get_run(parent_run_id).info.experiment_id
    now = int(time.time() * 1000)
    ids = []
    for t in summary["trials"]:
        run = c.create_run(
            experiment,
            run_name=f"trial-{t['trial_id']}",
            tags={"mlflow.parentRunId": parent_run_id, "raypipe.tune_trial": str(t["trial_id"])},
        )
        params = [Param("model", str(t["model"]))] + [Param(k, str(v)) for k, v in t["params"].items()]
        metrics = [
            Metric(k, float(t[k]), now, 0)
            for k in (summary["metric"], "rounds", "trial_s")
            if isinstance(t.get(k), (int, float))
        ]
        c.log_batch(run.info.run_id, metrics=metrics, params=params)
        c.set_terminated(run.info.run_id, status="FAILED" if t["error"] else "FINISHED")
        ids.append(run.info.run_id)
    return ids
