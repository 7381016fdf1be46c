"""Run output store and full-text index, history queries and counts, retention."""
