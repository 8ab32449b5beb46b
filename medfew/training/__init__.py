"""medfew.training."""
