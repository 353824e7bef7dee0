"""Alerting's side of the outside world: the notification channels (:mod:`.channels`)."""

from rof_pipelines.adapters.alerts.channels import Channel, build_channel, test_notice

__all__ = ["Channel", "build_channel", "test_notice"]
