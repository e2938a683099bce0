"""Mercato: an e-commerce backend built as Python microservices."""
