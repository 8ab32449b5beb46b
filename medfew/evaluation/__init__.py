"""medfew.evaluation."""
