"""Products service: the product catalogue and its stock."""
