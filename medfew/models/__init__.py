"""medfew.models."""
