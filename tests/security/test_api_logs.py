"""Secrets never in logs (OWASP API8 of 2023; ASVS 16.2.5): every password and token the
session used, searched for in the whole log of every `mercato up` the suite started."""

from __future__ import annotations

import pytest

from support.security_api import Seen


def test_no_password_or_token_appears_in_any_log(secrets_seen: Seen) -> None:
    """Runs last (see conftest), so that every other check has used its secrets."""
    if not secrets_seen.instances:
        pytest.skip("no instance was started in this session")
    assert len(secrets_seen.secrets) > 1
    for instance in secrets_seen.instances:
        log = instance.log()
        assert '"event"' in log  # the log is there, and JSON
        leaked = sorted(secret[:12] + "..." for secret in secrets_seen.secrets if secret in log)
        assert not leaked, f"{instance.log_path}: {leaked}"
