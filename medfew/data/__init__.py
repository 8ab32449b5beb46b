"""medfew.data."""
