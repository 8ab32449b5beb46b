"""medfew.diagnosis."""
