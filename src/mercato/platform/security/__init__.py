"""The platform's security kernel: access tokens (issue, verify), the ``CurrentUser`` and
``AdminUser`` dependencies, password hashing and rate limiting."""
