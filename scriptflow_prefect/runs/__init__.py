"""Runs: start, cancel, list, read output; the ScriptFlow worker; run policies and words."""
