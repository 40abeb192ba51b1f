"""Config loading: defaults, unknown keys with suggestions, --set overrides, ${ENV:...}."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from raypipe.config import PipelineConfig, config_hash, load_config
from raypipe.errors import ConfigError, RaypipeError

ROOT = Path(__file__).resolve().parents[2]
MINIMAL = {"data": {"path": "data/", "label": "y"}}


def _minimal(**sections) -> dict:
    raw = {"data": dict(MINIMAL["data"])}
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return raw


def test_minimal_config_is_valid_and_filled_with_defaults() -> None:
    cfg = load_config(raw=_minimal())
    # Every default comes from the pydantic models: a config with nothing else equals the model defaults.
    assert cfg == PipelineConfig(data={"path": "data/", "label": "y"})
    assert cfg.data.path == "data/" and cfg.data.label == "y"
    assert cfg.data.task == "auto"
    assert (cfg.data.split.train, cfg.data.split.valid, cfg.data.split.test) == (0.8, 0.1, 0.1)
    assert cfg.train.num_boost_round == 1000
    assert cfg.train.early_stopping_rounds == 50
    assert cfg.train.num_workers == "auto" and cfg.train.cpus_per_worker == "auto"
    assert cfg.register.enabled and cfg.register.alias == "champion"
    assert cfg.serve.enabled and cfg.serve.host == "127.0.0.1"
    assert cfg.tune.enabled is False
    assert cfg.name == "pipeline"


def test_load_config_does_not_mutate_the_callers_mapping() -> None:
    raw = _minimal(train={"num_boost_round": 5})
    snapshot = yaml.safe_dump(raw)
    load_config(raw=raw, overrides=["train.num_boost_round=7", "serve.port=0"])
    assert yaml.safe_dump(raw) == snapshot


def test_yaml_file_name_defaults_to_the_file_stem(tmp_path: Path) -> None:
    path = tmp_path / "my-job.yaml"
    path.write_text(yaml.safe_dump(MINIMAL))
    assert load_config(path).name == "my-job"
    path.write_text(yaml.safe_dump({**MINIMAL, "name": "explicit"}))
    assert load_config(path).name == "explicit"


def test_shipped_flights_config_loads() -> None:
    cfg = load_config(ROOT / "jobs" / "flights.yaml")
    assert cfg.name == "flights"
    assert cfg.data.path == "dataset://flights" and cfg.data.label == "delayed"
    assert cfg.features.exclude == ["year"]
    assert cfg.register.model_name == "flights"


@pytest.mark.parametrize(
    "section, bad, suggestion",
    [
        ("train", "num_boost_rounds", "train.num_boost_round"),
        ("serve", "prot", "serve.port"),
        ("features", "exclud", "features.exclude"),
    ],
)
def test_unknown_key_names_its_path_and_the_nearest_valid_key(section: str, bad: str, suggestion: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(raw=_minimal(**{section: {bad: 1}}))
    msg = str(exc.value)
    assert f"'{section}.{bad}'" in msg
    assert f"did you mean '{suggestion}'" in msg
    assert "\n" not in msg


def test_unknown_key_in_a_nested_section_gets_the_full_dotted_path() -> None:
    raw = _minimal()
    raw["data"]["split"] = {"trian": 0.8, "valid": 0.1, "test": 0.1}
    with pytest.raises(ConfigError, match=r"unknown key 'data\.split\.trian'.*did you mean 'data\.split\.train'"):
        load_config(raw=raw)


def test_unknown_top_level_section_suggests_a_section() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'trian'.*did you mean 'train'"):
        load_config(raw={**_minimal(), "trian": {"num_boost_round": 5}})


def test_unknown_key_far_from_every_name_has_no_suggestion() -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(raw=_minimal(train={"zzzzzzzz": 1}))
    assert "unknown key 'train.zzzzzzzz'" in str(exc.value)
    assert "did you mean" not in str(exc.value)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(raw={"data": {"path": "x"}, "train": {"num_boost_rounds": 5}, "serve": {"port": -1}})
    msg = str(exc.value)
    assert "data.label" in msg and "train.num_boost_rounds" in msg and "serve.port" in msg


def test_missing_label_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"missing required field 'data\.label'"):
        load_config(raw={"data": {"path": "x"}})


def test_missing_data_section_names_it() -> None:
    with pytest.raises(ConfigError, match=r"missing required field 'data'"):
        load_config(raw={"train": {"num_boost_round": 5}})


def test_config_error_is_a_raypipe_error_with_its_exit_code() -> None:
    with pytest.raises(RaypipeError) as exc:
        load_config(raw={})
    assert isinstance(exc.value, ConfigError)
    assert exc.value.exit_code == ConfigError.exit_code != 1


def test_invalid_value_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"'train\.num_boost_round'"):
        load_config(raw=_minimal(train={"num_boost_round": 0}))


def test_missing_or_unreadable_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML") as exc:
        load_config(bad)
    assert "\n" not in str(exc.value)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(scalar)


# --- --set -------------------------------------------------------------------


def test_set_overrides_nested_keys_with_yaml_typed_values() -> None:
    cfg = load_config(
        raw=_minimal(train={"num_boost_round": 100}),
        overrides=[
            "train.num_boost_round=50",
            "train.params.max_depth=4",
            "train.params.eta=0.05",
            "train.early_stopping_rounds=null",
            "serve.enabled=false",
            "features.exclude=[year, tailnum]",
            "data.filter=month == 1",
            "data.split.seed=7",
            "register.model_name=flights-dev",
        ],
    )
    assert cfg.train.num_boost_round == 50
    assert cfg.train.params == {"max_depth": 4, "eta": 0.05}
    assert isinstance(cfg.train.params["max_depth"], int)
    assert cfg.train.early_stopping_rounds is None
    assert cfg.serve.enabled is False
    assert cfg.features.exclude == ["year", "tailnum"]
    assert cfg.data.filter == "month == 1"
    assert cfg.data.split.seed == 7
    assert cfg.register.model_name == "flights-dev"


def test_set_on_a_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({**MINIMAL, "train": {"num_boost_round": 10}}))
    assert load_config(path, ["train.num_boost_round=3"]).train.num_boost_round == 3
    assert load_config(path).train.num_boost_round == 10


def test_set_with_a_misspelled_key_is_an_unknown_key_error() -> None:
    with pytest.raises(ConfigError, match=r"did you mean 'train\.num_boost_round'"):
        load_config(raw=_minimal(), overrides=["train.num_boost_rounds=5"])


@pytest.mark.parametrize("item", ["train.num_boost_round", "=5", " =5", "train..x=1", "train.=1", ".x=1"])
def test_bad_set_is_a_config_error(item: str) -> None:
    with pytest.raises(ConfigError, match=r"bad --set") as exc:
        load_config(raw=_minimal(), overrides=[item])
    assert item.strip() in str(exc.value) or item in str(exc.value)


def test_set_below_a_value_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"'path' is a value, not a section"):
        load_config(raw=_minimal(), overrides=["data.path.sub=1"])


def test_set_with_unparseable_yaml_value_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"not valid YAML"):
        load_config(raw=_minimal(), overrides=["train.params=[1, 2"])


# --- ${ENV:NAME} -------------------------------------------------------------


def test_env_interpolation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RP_TEST_BUCKET", "my-bucket")
    monkeypatch.setenv("RP_TEST_ROUNDS", "25")
    raw = _minimal(
        train={"num_boost_round": "${ENV:RP_TEST_ROUNDS}"}, runtime={"tracking_uri": "${ENV:RP_TEST_BUCKET}"}
    )
    raw["data"]["path"] = "s3://${ENV:RP_TEST_BUCKET}/flights/"
    raw["features"] = {"exclude": ["${ENV:RP_TEST_BUCKET}"]}
    cfg = load_config(raw=raw)
    assert cfg.data.path == "s3://my-bucket/flights/"
    assert cfg.train.num_boost_round == 25
    assert cfg.features.exclude == ["my-bucket"]
    assert cfg.runtime.tracking_uri == "my-bucket"


def test_unset_env_variable_is_a_config_error_naming_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("RP_TEST_UNSET", raising=False)
    raw = _minimal(runtime={"tracking_uri": "${ENV:RP_TEST_UNSET}"})
    with pytest.raises(ConfigError, match=r"\$\{ENV:RP_TEST_UNSET\}.*RP_TEST_UNSET is not set"):
        load_config(raw=raw)
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(path) in str(exc.value) and "RP_TEST_UNSET" in str(exc.value)


# --- split fractions ---------------------------------------------------------


@pytest.mark.parametrize(
    "split, ok",
    [
        ({"train": 0.7, "valid": 0.15, "test": 0.15}, True),
        ({"train": 0.9, "valid": 0.0, "test": 0.1}, True),
        ({"train": 0.7, "valid": 0.1, "test": 0.1}, False),
        ({"train": 0.8, "valid": 0.2, "test": 0.1}, False),
    ],
)
def test_split_fractions_must_sum_to_one(split: dict, ok: bool) -> None:
    raw = _minimal()
    raw["data"]["split"] = split
    if ok:
        cfg = load_config(raw=raw)
        assert cfg.data.split.train == split["train"]
    else:
        with pytest.raises(ConfigError, match=r"'data\.split'.*must be 1\.0"):
            load_config(raw=raw)


def test_split_fraction_override_must_keep_the_sum() -> None:
    with pytest.raises(ConfigError, match="must be 1.0"):
        load_config(raw=_minimal(), overrides=["data.split.train=0.7"])
    cfg = load_config(raw=_minimal(), overrides=["data.split.train=0.7", "data.split.valid=0.2"])
    assert cfg.data.split.valid == 0.2


def test_tune_needs_a_search_space() -> None:
    with pytest.raises(ConfigError, match="tune.search_space"):
        load_config(raw=_minimal(tune={"enabled": True}))


def test_config_hash_is_stable_and_sensitive() -> None:
    a = load_config(raw=_minimal())
    b = load_config(raw=_minimal())
    c = load_config(raw=_minimal(), overrides=["train.num_boost_round=5"])
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(c)
