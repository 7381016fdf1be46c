"""The email channel: SMTP settings, the ScriptFlow email block, messages."""
