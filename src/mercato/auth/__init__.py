"""Auth service: accounts, credentials and tokens."""
