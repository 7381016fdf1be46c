"""Scripts and their versions, the script store, and their Prefect deployments."""
