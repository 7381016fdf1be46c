"""Notification preferences, Prefect automations, deliveries, digests and channels."""
