"""What every feature stands on: settings, the overlay database, translations, and the
shared door to Prefect's API."""
