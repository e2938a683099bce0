"""Reliable messaging: envelope, outbox, inbox, brokers."""
