"""The shared kernel every service stands on."""
