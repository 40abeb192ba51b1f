"""raypipe: partitioned Parquet to a monitored model behind HTTP, on Ray.

>>> import raypipe
>>> cfg = raypipe.load_config("jobs/flights.yaml", ["serve.enabled=false"])  # doctest: +SKIP
>>> result = raypipe.run(cfg)  # doctest: +SKIP
>>> model = raypipe.load_model(result.model_uri)  # doctest: +SKIP
>>> model.predict([result.example])  # doctest: +SKIP
{'prediction': [False], 'probabilities': [{'False': 0.93, 'True': 0.07}]}
"""

from raypipe._api import load_config, load_model, plan, run, run_monitor, score
from raypipe.config import PipelineConfig
from raypipe.errors import (
    BusyError,
    ConfigError,
    DataError,
    ExplainError,
    RaypipeError,
    RegistryError,
    SchemaError,
    ServingError,
    SubmitError,
    TrainingError,
)
from raypipe.model import Model
from raypipe.pipeline.summary import RunResult

__version__ = "0.1.0"

__all__ = [
    "BusyError",
    "ConfigError",
    "DataError",
    "ExplainError",
    "Model",
    "PipelineConfig",
    "RaypipeError",
    "RegistryError",
    "RunResult",
    "SchemaError",
    "ServingError",
    "SubmitError",
    "TrainingError",
    "load_config",
    "load_model",
    "plan",
    "run",
    "run_monitor",
    "score",
]
