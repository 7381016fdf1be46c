"""Python dependencies per script: resolved and installed with uv into shared environments.

A script's requirements (its "How it runs" list plus a PEP 723 `# /// script` block in the
file) are resolved to a pinned set once (`builder.resolve`, cached by the requirement text,
index and interpreter), and the pinned set is installed once into `<home>/envs/<key>/`
(`builder.ensure_built`), which every run and every script with the same set reuses. A run
holds a lease on its environment (`layout.lease`) so that the garbage collection
(`cleanup.collect_garbage`) never removes one in use. `service.py` is what the flow, the
overlay and the scripts feature call. A script with no requirements runs in the shared
`script-venv` as before (execution/environment.ensure_script_python)."""
