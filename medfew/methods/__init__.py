"""medfew.methods."""
