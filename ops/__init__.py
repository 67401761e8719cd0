"""Around the engine: the job scheduler, backup procedures, metrics and health monitoring."""

from .backup import RestoreRefused
from .jobs import JobBusy, Jobs, JobsConfig, QuietHours, UnknownJob
from .metrics import Metrics
from .monitor import Alert, HealthMonitor, HealthThresholds

__all__ = ["Alert", "HealthMonitor", "HealthThresholds", "JobBusy", "Jobs", "JobsConfig", "Metrics", "QuietHours",
           "RestoreRefused", "UnknownJob"]
