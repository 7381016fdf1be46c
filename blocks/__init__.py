"""ScriptFlow's Prefect block types (registered through the `prefect.collections` entry point).

Each notification channel keeps its block in its own folder
(`scriptflow_prefect/notifications/channels/<kind>/`); this package only re-exports the ones
ScriptFlow defines. The Teams, Slack and webhook channels use Prefect's own blocks."""

from scriptflow_prefect.notifications.channels.email.block import ScriptFlowEmail

__all__ = ["ScriptFlowEmail"]
