"""Reading a config: YAML, ``${ENV:NAME}`` references, ``--set`` overrides, and one error listing
every problem with its key path and the nearest valid name."""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from raypipe.config.pipeline import PipelineConfig
from raypipe.errors import ConfigError

_ENV_REF = re.compile(r"\$\{ENV:([A-Za-z_][A-Za-z0-9_]*)\}")


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    *,
    raw: dict[str, Any] | None = None,
) -> PipelineConfig:
    """Read a YAML config, apply ``--set`` overrides and validate it.

    Args:
        path: YAML file. Either this or ``raw``.
        overrides: ``"section.key=value"`` strings; values are parsed as YAML.
        raw: An already-parsed mapping (used by tests and the Python API).

    Returns:
        The validated config.

    Raises:
        ConfigError: listing every problem at once, each with its key path.

    Example:
        >>> cfg = load_config(raw={"data": {"path": "d/", "label": "y"}})
        >>> cfg.train.num_boost_round
        1000
    """
    source = "config"
    if raw is None:
        if path is None:
            raise ConfigError("no config given: pass a YAML path")
        p = Path(path)
        source = str(p)
        raw = read_yaml_mapping(p, "config file")
        raw.setdefault("name", p.stem)
    raw = _interpolate_env(raw, source)
    for item in overrides or []:
        _apply_override(raw, item)
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(f"invalid {source}: " + "; ".join(_describe(err) for err in e.errors())) from None


def read_yaml_mapping(path: Path, what: str) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping.

    Raises:
        ConfigError: naming ``what`` and the path when it is missing, not YAML or not a mapping.
    """
    if not path.is_file():
        raise ConfigError(f"{what} '{path}' not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} '{path}' is not valid YAML: {e}".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what} '{path}' must be a mapping, got {type(data).__name__}")
    return data


def _apply_override(raw: dict[str, Any], item: str) -> None:
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"bad --set '{item}': expected section.key=value, e.g. train.num_boost_round=50")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        raise ConfigError(f"bad --set '{item}': value is not valid YAML") from None
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"bad --set '{item}': '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = parsed


# Sections whose ``${ENV:NAME}`` stay literal in the config (resolved when connecting), so a
# warehouse password never reaches MLflow params, the manifest or the audit trail.
_CONNECT_TIME_ENV = (("data", "sql"), ("data", "iceberg"))


def _interpolate_env(value: Any, source: str, at: tuple[str, ...] = ()) -> Any:
    """Replace ``${ENV:NAME}`` so secrets live in the environment, not the file."""
    if at in _CONNECT_TIME_ENV:
        return value
    if isinstance(value, dict):
        return {k: _interpolate_env(v, source, (*at, str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate_env(v, source, at) for v in value]
    if isinstance(value, str) and "${ENV:" in value:

        def sub(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in os.environ:
                raise ConfigError(f"{source} references ${{ENV:{name}}} but {name} is not set")
            return os.environ[name]

        return _ENV_REF.sub(sub, value)
    return value


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that owns the key at ``loc`` (for suggestions)."""
    model: type[BaseModel] = PipelineConfig
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None) if field else None
        # ``SqlSource | None``: the model inside the optional.
        ann = next((a for a in (ann, *typing.get_args(ann)) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if ann is None:
            return None
        model = ann
    return model


def _describe(err: dict[str, Any]) -> str:
    loc = tuple(err["loc"])
    dotted = ".".join(str(p) for p in loc)
    if err["type"] == "extra_forbidden":
        model = _model_at(loc)
        hint = ""
        if model is not None:
            close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1, cutoff=0.5)
            if close:
                hint = f" (did you mean '{'.'.join(str(p) for p in loc[:-1] + (close[0],))}'?)"
        return f"unknown key '{dotted}'{hint}"
    if err["type"] == "missing":
        return f"missing required field '{dotted}'"
    msg = err["msg"].removeprefix("Value error, ")
    return f"'{dotted}': {msg}" if dotted else msg


def config_hash(cfg: PipelineConfig) -> str:
    """A stable hash of the resolved config."""
    blob = json.dumps(cfg.model_dump(mode="json"), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
