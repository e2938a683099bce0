"""Users service: user profiles."""
