"""Ray's token authentication, client side: find the token, send it, keep its file private.

Ray 2.60 turns token auth on by default for a local ``ray.init``; joining a cluster by
address needs ``RAY_AUTH_MODE=token`` in the client's environment (``ensure_client_token_auth``).
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

_TOKEN_FILE = Path.home() / ".ray" / "auth_token"
AUTH_MODE_ENV = "RAY_AUTH_MODE"


def token_file() -> Path:
    """The token file Ray reads: ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``."""
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    return Path(path).expanduser() if path else _TOKEN_FILE


def token_available() -> bool:
    """A Ray auth token is configured for this process (Ray's own lookup order)."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return True
    try:
        return token_file().is_file() and token_file().stat().st_size > 0
    except OSError:
        return False


def ensure_client_token_auth() -> bool:
    """Send the cluster token when joining a cluster by address.

    Ray 2.60 only attaches the token (gRPC metadata, ``Authorization`` header)
    when ``RAY_AUTH_MODE=token`` is in the client's environment; it does not
    infer it from an existing token file for an explicit address. If the
    variable is unset and a token exists (``RAY_AUTH_TOKEN``,
    ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``), set it. An explicit
    ``RAY_AUTH_MODE`` is never overridden. Returns whether token mode is on.
    """
    mode = os.environ.get(AUTH_MODE_ENV)
    if mode is not None:
        return mode.strip().lower() == "token"
    if not token_available():
        return False
    secure_token_file(token_file())
    return enable_token_mode()


def enable_token_mode() -> bool:
    """Set ``RAY_AUTH_MODE=token`` for this process and refresh Ray's cached config.

    For a new local Ray this is Ray's own default; saying so explicitly also
    skips the notice Ray prints on stderr, which would break one-line CLI errors.
    """
    os.environ[AUTH_MODE_ENV] = "token"
    import sys

    if "ray" in sys.modules:  # Ray caches its config when ray._raylet is imported
        import ray

        if not ray.is_initialized():
            try:
                from ray._raylet import Config

                Config.initialize("")
            except Exception as e:  # noqa: BLE001 - a private API; a 401 later says what is wrong
                log.warning("could not switch Ray to token auth in this process: %s", e)
    return True


def secure_token_file(path: Path = _TOKEN_FILE) -> None:
    """Ray 2.60 writes its auth token 0644; nobody else should read it."""
    try:
        if path.exists() and stat.S_IMODE(path.stat().st_mode) & 0o077:
            path.chmod(0o600)
    except OSError as e:  # a shared read-only home is not our problem to fix
        log.warning("could not tighten %s: %s", path, e)
