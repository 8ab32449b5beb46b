"""medfew.reporting."""
