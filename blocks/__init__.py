"""ScriptFlow's Prefect block types (registered through the `prefect.collections` entry point).

Each notification channel keeps its block in its own folder
(`scriptflow_prefect/notifications/channels/<kind>/`); this package only re-exports the ones
ScriptFlow defines. The Teams, Slack and webhook channels use Prefect's own blocks, behind
ScriptFlow's outbox block."""

from scriptflow_prefect.notifications.channels.email.block import ScriptFlowEmail
from scriptflow_prefect.notifications.channels.relay import ScriptFlowOutbox

__all__ = ["ScriptFlowEmail", "ScriptFlowOutbox"]
