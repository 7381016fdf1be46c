"""Loaded by Prefect through the `prefect.collections` entry point (server and workers).

Importing the modules registers ScriptFlow's block types and worker type with Prefect."""
