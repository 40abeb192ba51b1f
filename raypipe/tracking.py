"""MLflow for one pipeline run: a parent run, one nested run per stage, and what to log.

The parent run opens before the first stage, so a failed or killed run is
visible too; each stage (cached or not) becomes a nested run with its wall time.
Tune trials are nested under the same parent by the tune module.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from typing import Any

from raypipe.errors import RegistryError
from raypipe.orphans import pid_alive

log = logging.getLogger(__name__)


class Tracker:
    """The parent MLflow run of one pipeline run (a no-op when ``enabled`` is false)."""

    def __init__(self, tracking_uri: str, experiment: str, artifact_root, run_name: str, enabled: bool = True):
        self.tracking_uri = tracking_uri
        self.enabled = enabled
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        if not enabled:
            return
        import mlflow

        from raypipe.registry import setup_tracking

        self.experiment_id = setup_tracking(tracking_uri, experiment, artifact_root)
        try:
            while mlflow.active_run():  # a previous in-process run that failed mid-way
                mlflow.end_run("FAILED")
            owner = {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}
            run = mlflow.start_run(experiment_id=self.experiment_id, run_name=run_name, tags=owner)
        except Exception as e:  # noqa: BLE001 - MLflow raises many types for an unreachable store
            raise RegistryError(f"cannot start an MLflow run in '{tracking_uri}': {e}".splitlines()[0]) from e
        self.run_id = run.info.run_id
        self.closed_orphans = close_orphaned_runs(self.experiment_id, self.run_id)

    closed_orphans: list[str] = []
    """Runs of this experiment left RUNNING by a killed process on this host, now marked KILLED."""

    def stage(self, name: str, seconds: float, cached: bool, detail: str) -> None:
        """Record one finished stage as a nested run, and its wall time on the parent."""
        if not self.enabled:
            return
        import time

        from mlflow import MlflowClient
        from mlflow.entities import Metric, RunTag

        client = MlflowClient()
        now = int(time.time() * 1000)
        child = client.create_run(
            self.experiment_id,
            run_name=name,
            tags={"mlflow.parentRunId": self.run_id, "raypipe.stage": name, "raypipe.cached": str(cached).lower()},
        )
        client.log_batch(
            child.info.run_id,
            metrics=[Metric("wall_s", seconds, now, 0)],
            tags=[RunTag("raypipe.detail", detail[:4000])],
        )
        client.set_terminated(child.info.run_id, "FINISHED")
        client.log_metric(self.run_id, f"stage_{name}_s", seconds)

    def log_params(self, params: dict[str, Any]) -> None:
        if self.enabled:
            import mlflow

            # MLflow caps a batch at 100 params.
            items = list(params.items())
            for i in range(0, len(items), 100):
                mlflow.log_params(dict(items[i : i + 100]))

    def log_metrics(self, metrics: dict[str, float]) -> None:
        if self.enabled:
            import mlflow

            mlflow.log_metrics({k: float(v) for k, v in metrics.items()})

    def set_tags(self, tags: dict[str, Any]) -> None:
        if self.enabled:
            import mlflow

            mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def log_text(self, text: str, path: str) -> None:
        if self.enabled:
            import mlflow

            mlflow.log_text(text, path)

    def log_artifact(self, path, folder: str | None = None) -> None:
        if self.enabled:
            import mlflow

            mlflow.log_artifact(str(path), folder)

    def log_artifacts(self, folder, path: str | None = None) -> None:
        if self.enabled:
            import mlflow

            mlflow.log_artifacts(str(folder), path)

    def log_input(self, data_uri: str, name: str, digest: str, rows: dict[str, int]) -> None:
        if not self.enabled:
            return
        import mlflow
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset

        mlflow.log_input(
            MetaDataset(resolve_dataset_source(data_uri), name=name, digest=digest),
            context="training",
            tags={f"rows_{k}": str(v) for k, v in rows.items()},
        )

    def end(self, status: str = "FINISHED") -> None:
        if self.enabled and self.run_id:
            import mlflow

            run = mlflow.active_run()
            if run and run.info.run_id == self.run_id:
                mlflow.end_run(status)
            self.run_id = self.run_id  # kept for the summary


HOST_TAG, PID_TAG = "raypipe.host", "raypipe.pid"


def close_orphaned_runs(experiment_id: str, current_run_id: str) -> list[str]:
    """Mark KILLED the parent runs a killed process left RUNNING (``kill -9``, OOM, power loss).

    Only runs started on this host whose process is gone: a run elsewhere, or one still
    going here, cannot be told apart from a live one. Returns the run ids marked.
    """
    from mlflow import MlflowClient

    client = MlflowClient()
    host = socket.gethostname().replace("'", "")
    query = f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{host}'"
    closed = []
    try:
        runs = client.search_runs([experiment_id], query, max_results=100)
    except Exception as e:  # noqa: BLE001 - housekeeping must not fail the run
        log.debug("cannot search for orphaned runs: %s", e)
        return closed
    for run in runs:
        pid = run.data.tags.get(PID_TAG, "")
        if run.info.run_id == current_run_id or not pid.isdigit() or pid_alive(int(pid)):
            continue
        client.set_tag(run.info.run_id, "raypipe.closed_by", current_run_id)
        client.set_terminated(run.info.run_id, "KILLED")
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


def log_results(tracker: Tracker, summary, fit, qreport, data_uri: str, name: str, cached: list[str]) -> None:
    """Params of the fit, test metrics, split sizes, the quality report and the dataset input."""
    prefix = "xgb" if fit.kind == "xgboost" else fit.kind
    tracker.log_params({f"{prefix}.{k}": v for k, v in fit.params.items() if k != "eval_metric"})
    tracker.log_metrics(fit.metrics)
    if fit.sampling:
        tracker.set_tags({"raypipe.sampling": fit.sampling})
    tracker.log_metrics(summary.metrics)
    tracker.log_metrics({f"rows_{k}": v for k, v in summary.rows.items()})
    tracker.log_metrics({"best_iteration": fit.best_iteration, "train_wall_s": fit.wall_s})
    tracker.set_tags({"raypipe.task": summary.task, "raypipe.cached_stages": ",".join(cached) or "none"})
    tracker.log_text(json.dumps(qreport.to_dict(), indent=2, default=str), "quality/quality.json")
    tracker.log_text(qreport.to_text(), "quality/quality.txt")
    tracker.log_input(data_uri, name, summary.data_fingerprint, summary.rows)


def log_trials(summary: dict[str, Any], tracking_uri: str, parent_run_id: str) -> list[str]:
    """Log each Ray Tune trial (``summary["trials"]``) as a nested MLflow run under ``parent_run_id``
    (from the driver). Returns the run ids."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    now = int(time.time() * 1000)
    ids = []
    for t in summary["trials"]:
        run = client.create_run(
            experiment_id,
            run_name=f"trial-{t['trial_id']}",
            tags={"mlflow.parentRunId": parent_run_id, "raypipe.tune_trial": str(t["trial_id"])},
        )
        params = [Param("model", str(t["model"]))] + [Param(k, str(v)) for k, v in t["params"].items()]
        metrics = [
            Metric(k, float(t[k]), now, 0)
            for k in (summary["metric"], "rounds", "trial_s")
            if isinstance(t.get(k), (int, float))
        ]
        client.log_batch(run.info.run_id, metrics=metrics, params=params)
        client.set_terminated(run.info.run_id, status="FAILED" if t["error"] else "FINISHED")
        ids.append(run.info.run_id)
    return ids
