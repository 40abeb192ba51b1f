"""raypipe: partitioned Parquet to a monitored model behind HTTP, on Ray."""

from raypipe.config import PipelineConfig, load_config
from raypipe.errors import (
    ConfigError,
    DataError,
    RaypipeError,
    RegistryError,
    SchemaError,
    ServingError,
    TrainingError,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DataError",
    "PipelineConfig",
    "RaypipeError",
    "RegistryError",
    "RunSummary",
    "SchemaError",
    "ServingError",
    "TrainingError",
    "build_reference",
    "load_config",
    "run_monitor",
    "run_pipeline",
    "write_run_report",
]


def __getattr__(name: str):
    # The pipeline imports Ray; keep `import raypipe` cheap for the CLI and config checks.
    if name in ("run_pipeline", "RunSummary"):
        from raypipe import pipeline

        return getattr(pipeline, name)
    if name in ("run_monitor", "build_reference"):
        from raypipe import monitor

        return getattr(monitor, name)
    if name == "write_run_report":
        from raypipe.report import write_run_report

        return write_run_report
    raise AttributeError(name)
