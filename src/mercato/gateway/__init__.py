"""Gateway: the one front door in front of every service."""
