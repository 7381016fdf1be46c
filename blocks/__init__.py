"""ScriptFlow's Prefect block types (registered through the `prefect.collections` entry point)."""

from scriptflow_prefect.blocks.email_notification import ScriptFlowEmail

__all__ = ["ScriptFlowEmail"]
