"""Users, roles, API tokens and the login throttle."""
