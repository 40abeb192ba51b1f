"""Drift and performance monitoring of a served model.

build_reference(train_raw_ds, contract, test_scores) -> ReferenceProfile   (at training time)
run_monitor(cfg, reference=..., input_path=...) -> MonitorResult          (on a schedule)
"""

from raypipe.monitor.alerts import Alert, Delivery, post_webhook
from raypipe.monitor.checks import FeatureDrift
from raypipe.monitor.job import MonitorResult, load_reference, run_monitor
from raypipe.monitor.reference import REFERENCE_FILE, ReferenceProfile, build_reference

__all__ = [
    "REFERENCE_FILE",
    "Alert",
    "Delivery",
    "FeatureDrift",
    "MonitorResult",
    "ReferenceProfile",
    "build_reference",
    "load_reference",
    "post_webhook",
    "run_monitor",
]
