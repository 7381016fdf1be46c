"""Notification channels: one folder each, registered in this package."""
