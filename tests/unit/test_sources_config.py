"""data.path / data.sql / data.iceberg: exactly one, strict sections, credentials never dumped."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from raypipe.config import config_hash, load_config
from raypipe.config.sources import redact_url
from raypipe.data.sources._types import arrow_schema
from raypipe.errors import ConfigError, SchemaError

SQL = {"url": "postgresql://ml@127.0.0.1:5432/db", "table": "t"}


def _cfg(data: dict):
    return load_config(raw={"data": {"label": "y", **data}})


@pytest.mark.parametrize(
    ("data", "got"),
    [
        ({}, "none"),
        ({"path": "/x", "sql": SQL}, "data.path and data.sql"),
        ({"sql": SQL, "iceberg": {"catalog": {"type": "sql"}, "table": "a.b"}}, "data.sql and data.iceberg"),
    ],
)
def test_exactly_one_source_names_the_keys(data: dict, got: str) -> None:
    with pytest.raises(ConfigError, match=rf"give exactly one of data.path, data.sql or data.iceberg \(got {got}\)"):
        _cfg(data)


def test_sql_section_is_strict_and_checks_itself() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'data.sql.shard_col' \(did you mean 'data.sql.shard_column'"):
        _cfg({"sql": {**SQL, "shard_col": "id"}})
    with pytest.raises(ConfigError, match="give exactly one of 'query' and 'table'"):
        _cfg({"sql": {**SQL, "query": "SELECT 1"}})
    with pytest.raises(ConfigError, match=r"must start with one of postgresql://, postgres://, duckdb://, sqlite://"):
        _cfg({"sql": {"url": "mysql://u:pw@h/db", "table": "t"}})
    with pytest.raises(ConfigError, match="table 't; DROP TABLE x' is not a plain"):
        _cfg({"sql": {**SQL, "table": "t; DROP TABLE x"}})
    with pytest.raises(ConfigError, match="must be namespace.table"):
        _cfg({"iceberg": {"catalog": {"type": "sql"}, "table": "flights"}})


def test_redact_url() -> None:
    assert redact_url("postgresql://u:hunter2@h:5/db") == "postgresql://u:***@h:5/db"
    assert redact_url("postgresql://u:p%40ss@h/db?x=1") == "postgresql://u:***@h/db?x=1"
    assert redact_url("postgresql://u:${ENV:PW}@h/db") == "postgresql://u:${ENV:PW}@h/db"
    assert redact_url("postgresql://u@h/db") == "postgresql://u@h/db"
    assert redact_url("sqlite:////tmp/a.db") == "sqlite:////tmp/a.db"


def test_credentials_stay_out_of_every_dump(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYPIPE_PW", "s3cret-from-env")
    env = _cfg({"sql": {**SQL, "url": "postgresql://ml:${ENV:RAYPIPE_PW}@h/db"}})
    # Resolved only when connecting: the config keeps the reference.
    assert env.data.sql.url == "postgresql://ml:${ENV:RAYPIPE_PW}@h/db"
    literal = _cfg({"sql": {**SQL, "url": "postgresql://ml:literal-pw@h/db"}})
    assert literal.data.sql.url == "postgresql://ml:literal-pw@h/db"  # usable in this process
    ice = _cfg({"iceberg": {"catalog": {"type": "rest", "uri": "https://x", "token": "tok-123"}, "table": "a.b"}})
    for cfg, secret in ((env, "s3cret-from-env"), (literal, "literal-pw"), (ice, "tok-123")):
        dumped = json.dumps(cfg.model_dump(mode="json"))
        assert secret not in dumped
    assert "postgresql://ml:***@h/db" in json.dumps(literal.model_dump(mode="json"))
    assert config_hash(env)  # hashes the dump, not the secret


def test_other_sections_still_interpolate_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYPIPE_NAME", "from-env")
    assert load_config(raw={"name": "${ENV:RAYPIPE_NAME}", "data": {"path": "/x", "label": "y"}}).name == "from-env"


def test_sql_types_map_explicitly_and_every_unmappable_column_is_named() -> None:
    schema = arrow_schema(
        [("a", "integer"), ("b", "numeric(12,3)"), ("c", "timestamp with time zone"), ("d", "character varying(4)")],
        "db",
    )
    assert list(schema.types) == [pa.int64(), pa.float64(), pa.timestamp("us", tz="UTC"), pa.string()]
    with pytest.raises(SchemaError, match=r"column 'j' of db has SQL type 'jsonb'.* \(and 1 more: k\)"):
        arrow_schema([("i", "int"), ("j", "jsonb"), ("k", "interval")], "db")
