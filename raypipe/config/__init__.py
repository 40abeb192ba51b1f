"""Typed pipeline configuration: the one source of truth for every default.

A config needs only ``data.path`` and ``data.label``; everything else has a default in the
section models here, one module per area. Unknown keys are errors that name the key's path
and the nearest valid name.

    PipelineConfig
    ├── data: DataConfig (split: SplitConfig, quality: QualityConfig)    config/data.py
    ├── features: FeaturesConfig                                           config/data.py
    ├── train: TrainConfig, tune: TuneConfig (ParamSpec)                   config/train.py
    ├── evaluate, register, report, runtime                                config/pipeline.py
    ├── serve: ServeConfig (autoscaling)                                   config/serve.py
    └── monitor: MonitorConfig (thresholds, retrain)                       config/monitor.py
"""

from raypipe.config.data import Action, DataConfig, FeaturesConfig, QualityConfig, SplitConfig, Task
from raypipe.config.load import config_hash, load_config, read_yaml_mapping
from raypipe.config.monitor import MonitorConfig, MonitorThresholds, RetrainConfig
from raypipe.config.pipeline import (
    EvaluateConfig,
    PipelineConfig,
    RegisterConfig,
    ReportConfig,
    RuntimeConfig,
)
from raypipe.config.serve import ServeAutoscalingConfig, ServeConfig
from raypipe.config.train import SKLEARN_MODELS, ModelName, ParamSpec, TrainConfig, TuneConfig

__all__ = [
    "SKLEARN_MODELS",
    "Action",
    "DataConfig",
    "EvaluateConfig",
    "FeaturesConfig",
    "ModelName",
    "MonitorConfig",
    "MonitorThresholds",
    "ParamSpec",
    "PipelineConfig",
    "QualityConfig",
    "RegisterConfig",
    "ReportConfig",
    "RetrainConfig",
    "RuntimeConfig",
    "ServeAutoscalingConfig",
    "ServeConfig",
    "SplitConfig",
    "Task",
    "TrainConfig",
    "TuneConfig",
    "config_hash",
    "load_config",
    "read_yaml_mapping",
]
