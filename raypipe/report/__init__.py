"""Human-readable reports: the run report and model card, and the monitor's drift report."""

from raypipe.report.drift_report import write_drift_report
from raypipe.report.run_report import RunReportPaths, write_run_report

__all__ = ["RunReportPaths", "write_drift_report", "write_run_report"]
