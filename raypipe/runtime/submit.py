"""``raypipe submit``: run a pipeline config as a Ray Job through the Jobs API.

The checkout is the job's working dir (zipped and uploaded by Ray's
``JobSubmissionClient``), the runtime_env comes from ``jobs/runtime_env.yaml``,
and the entrypoint is ``python -m raypipe run CONFIG ...`` on the cluster.
Before uploading, the working dir is measured with the same rules Ray uses
(``excludes`` plus ``.gitignore`` / ``.rayignore`` in every folder), because
the dashboard rejects an upload over 100 MiB only after zipping all of it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raypipe.config import read_yaml_mapping
from raypipe.errors import ConfigError, SubmitError
from raypipe.runtime._upload import (  # noqa: F401 - re-exported: the size check is part of submit's API
    MAX_UPLOAD_BYTES,
    UploadSize,
    check_working_dir,
    mib,
    working_dir_size,
)

DEFAULT_RUNTIME_ENV = Path("jobs") / "runtime_env.yaml"
DEFAULT_ADDRESS = "http://127.0.0.1:8265"

EXIT_CODES = {"SUCCEEDED": 0, "FAILED": 1, "STOPPED": 130}
"""Exit code per final job status; a FAILED job exits with its driver's code when Ray reports it."""


# --------------------------------------------------------------------------- runtime_env


def load_runtime_env(
    path: str | Path | None = None,
    *,
    working_dir: str | Path | None = None,
    pip: bool = True,
    env_vars: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Read the runtime_env template and adapt it for one submission.

    Args:
        path: YAML template; default ``jobs/runtime_env.yaml`` under the working dir.
        working_dir: overrides the template's ``working_dir`` (made absolute).
        pip: keep the template's ``pip`` section (``False``: the nodes already have the deps).
        env_vars: added to (and overriding) the template's ``env_vars``.

    Raises:
        ConfigError: the file is missing, not YAML, or not a runtime_env mapping.
    """
    base = Path(working_dir) if working_dir else Path(".")
    p = Path(path) if path else base / DEFAULT_RUNTIME_ENV
    env = read_yaml_mapping(p, "runtime_env template")
    excludes = env.get("excludes", [])
    if not isinstance(excludes, list) or not all(isinstance(x, str) for x in excludes):
        raise ConfigError(f"'excludes' in '{p}' must be a list of gitignore-style patterns")
    wd = working_dir if working_dir is not None else env.get("working_dir", ".")
    if not isinstance(wd, (str, Path)) or "://" in str(wd):
        raise ConfigError(f"'working_dir' in '{p}' must be a local folder for raypipe submit, got {wd!r}")
    env["working_dir"] = str(Path(wd).expanduser().resolve())
    if not pip:
        env.pop("pip", None)
    if env_vars:
        merged = dict(env.get("env_vars") or {})
        merged.update({k: str(v) for k, v in env_vars.items()})
        env["env_vars"] = merged
    for k, v in (env.get("env_vars") or {}).items():
        if not isinstance(v, str):
            raise ConfigError(f"env_vars.{k} in '{p}' must be a string (quote it), got {type(v).__name__}")
    return env


# --------------------------------------------------------------------------- the job


def entrypoint(
    config: str,
    overrides: Iterable[str] = (),
    *,
    tracking_uri: str | None = None,
    no_serve: bool = False,
    debug: bool = False,
    python: str = "python",
    command: str = "run",
) -> str:
    """The shell command the job runs on the cluster, quoted.

    ``python -m raypipe`` rather than the ``raypipe`` script: the package comes
    from the uploaded working dir, so the job works whether or not raypipe is
    installed on the nodes (only its dependencies must be). ``command`` is ``run``
    or ``ci`` (which never serves, and exits 1 when the gate keeps the champion).
    """
    cmd = [python, "-m", "raypipe"]
    if debug:
        cmd.append("--debug")
    cmd += [command, config]
    for item in overrides:
        cmd += ["--set", item]
    if tracking_uri:
        cmd += ["--tracking-uri", tracking_uri]
    if no_serve and command == "run":
        cmd.append("--no-serve")
    return shlex.join(cmd)


def resolve_address(address: str | None) -> str:
    """``--address``, else ``RAY_API_SERVER_ADDRESS``, else an http ``RAY_ADDRESS``, else the local default."""
    if address:
        return address
    api = os.environ.get("RAY_API_SERVER_ADDRESS")
    if api:
        return api
    ray_address = os.environ.get("RAY_ADDRESS", "")
    if ray_address.startswith(("http://", "https://")):
        return ray_address
    return DEFAULT_ADDRESS


def exit_code_for(status: str, driver_exit_code: int | None = None) -> int:
    """The process exit code for a finished job: 0 on success, else the driver's code (or 1)."""
    if status == "FAILED" and driver_exit_code:
        return int(driver_exit_code)
    return EXIT_CODES.get(status, 1)


@dataclass
class SubmitResult:
    submission_id: str
    status: str
    exit_code: int
    message: str | None = None
    upload: UploadSize | None = None


def client(address: str | None = None):
    """A ``JobSubmissionClient`` that sends the cluster token (see raytoken.ensure_client_token_auth)."""
    from raypipe.runtime.token import ensure_client_token_auth

    ensure_client_token_auth()
    from ray.job_submission import JobSubmissionClient

    if not logging.getLogger().isEnabledFor(logging.INFO):  # not --debug: no upload/websocket chatter
        logging.getLogger("ray").setLevel(logging.ERROR)
    addr = resolve_address(address)
    try:
        return JobSubmissionClient(addr)
    except Exception as e:  # ConnectionError, RuntimeError from a 401, ...
        raise SubmitError(f"cannot reach the Ray Jobs API at {addr}: {_auth_hint(e)}") from e


def _auth_hint(e: BaseException) -> str:
    """Ray's error, plus what to do when it is the token."""
    text = _first_line(e)
    if "Missing authentication token" in text or "Authentication required" in text:
        return (
            f"401 Unauthorized, no token was sent ({text}). Give this shell the cluster's token: "
            "RAY_AUTH_TOKEN, a file named by RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token (see cluster/README.md)"
        )
    if "Invalid authentication token" in text or "Forbidden" in text:
        return f"403 Forbidden, the token sent is not this cluster's ({text})"
    return text


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def submit(
    config: str,
    *,
    address: str | None = None,
    overrides: Iterable[str] = (),
    runtime_env_file: str | Path | None = None,
    working_dir: str | Path = ".",
    pip: bool = True,
    env_vars: Mapping[str, str] | None = None,
    tracking_uri: str | None = None,
    no_serve: bool = False,
    debug: bool = False,
    submission_id: str | None = None,
    wait: bool = True,
    timeout_s: float | None = None,
    echo: Callable[[str], None] = print,
    command: str = "run",
) -> SubmitResult:
    """Submit ``raypipe run CONFIG`` (or ``raypipe ci CONFIG``) as a Ray Job, stream its logs,
    return its final status.

    Args:
        config: pipeline YAML, relative to ``working_dir`` (it travels with it).
        wait: follow the logs until the job ends; ``False`` returns right after submitting.
        timeout_s: stop following (the job keeps running) after this long.
        echo: receives log chunks and status lines.

    Raises:
        ConfigError: bad template, config outside the working dir, or an upload over the limit.
        SubmitError: the Jobs API refused the submission or could not be reached.
    """
    wd = Path(working_dir).expanduser().resolve()
    cfg_path = Path(config)
    full = cfg_path if cfg_path.is_absolute() else wd / cfg_path
    if not full.is_file():
        raise ConfigError(f"config file '{config}' not found under the working dir {wd}")
    try:
        rel_config = full.resolve().relative_to(wd).as_posix()
    except ValueError:
        raise ConfigError(
            f"config file '{config}' is outside the working dir {wd}; it must be uploaded with it"
        ) from None
    from raypipe.config import load_config

    cfg = None
    try:  # fail here, not on the cluster, for a bad config or --set
        cfg = load_config(full, list(overrides))
    except ConfigError as e:
        if "${ENV:" not in str(e):
            raise
        echo(f"note: not validated locally ({e}); the job resolves it from its own environment\n")
    env_tracking = (env_vars or {}).get("MLFLOW_TRACKING_URI")
    if cfg is not None and cfg.register.enabled and not (tracking_uri or env_tracking or cfg.runtime.tracking_uri):
        echo(
            "note: no MLflow store given (--tracking-uri, --env MLFLOW_TRACKING_URI or runtime.tracking_uri): "
            "unless the nodes set MLFLOW_TRACKING_URI, the model is registered under the job's temporary "
            "working dir and is lost with it\n"
        )

    env = load_runtime_env(runtime_env_file or wd / DEFAULT_RUNTIME_ENV, working_dir=wd, pip=pip, env_vars=env_vars)
    upload = check_working_dir(wd, env.get("excludes", []))
    if upload.files == 0:
        raise ConfigError(f"every file under {wd} is excluded; check 'excludes' in the runtime_env template")
    cmd = entrypoint(rel_config, overrides, tracking_uri=tracking_uri, no_serve=no_serve, debug=debug, command=command)
    c = client(address)
    echo(f"uploading {wd} ({mib(upload.upload_bytes)}, {upload.files} files) and submitting: {cmd}\n")
    try:
        job_id = c.submit_job(entrypoint=cmd, runtime_env=env, submission_id=submission_id)
    except Exception as e:
        raise SubmitError(f"the Jobs API at {resolve_address(address)} refused the job: {_auth_hint(e)}") from e
    echo(f"submitted {job_id}\n")
    if not wait:
        return SubmitResult(job_id, "PENDING", 0, upload=upload)
    deadline = time.monotonic() + timeout_s if timeout_s else None
    follow_logs(c, job_id, echo, deadline)
    info = _wait_terminal(c, job_id, deadline)
    status = str(getattr(info.status, "value", info.status))
    if status not in EXIT_CODES:
        echo(f"job {job_id} is still {status}; stopped following it (ray job logs -f {job_id})\n")
        return SubmitResult(job_id, status, 124, info.message, upload)
    code = exit_code_for(status, getattr(info, "driver_exit_code", None))
    echo(f"job {job_id} {status}" + (f": {info.message}" if status != "SUCCEEDED" and info.message else "") + "\n")
    return SubmitResult(job_id, status, code, info.message, upload)


def follow_logs(c, job_id: str, echo: Callable[[str], None], deadline: float | None = None) -> None:
    """Stream the job's logs until it ends (websocket), falling back to polling if that fails."""

    async def tail() -> None:
        async for chunk in c.tail_job_logs(job_id):
            echo(chunk)
            if deadline and time.monotonic() > deadline:
                return

    try:
        if deadline:
            asyncio.run(asyncio.wait_for(tail(), timeout=max(deadline - time.monotonic(), 1)))
        else:
            asyncio.run(tail())
        return
    except TimeoutError:
        return
    except Exception:  # noqa: BLE001 - the websocket is optional; poll instead
        pass
    seen = 0
    while True:
        logs = c.get_job_logs(job_id)
        if len(logs) > seen:
            echo(logs[seen:])
            seen = len(logs)
        if _is_terminal(c.get_job_status(job_id)) or (deadline and time.monotonic() > deadline):
            logs = c.get_job_logs(job_id)
            if len(logs) > seen:
                echo(logs[seen:])
            return
        time.sleep(2)


def _is_terminal(status) -> bool:
    return str(getattr(status, "value", status)) in EXIT_CODES


def _wait_terminal(c, job_id: str, deadline: float | None):
    """Job info once it is final (the log stream can end a moment before the status flips)."""
    end = deadline or (time.monotonic() + 60)
    while True:
        info = c.get_job_info(job_id)
        if _is_terminal(info.status) or time.monotonic() > end:
            return info
        time.sleep(1)
