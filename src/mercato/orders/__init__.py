"""Orders service: orders and the order saga."""
