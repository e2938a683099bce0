"""The mail a `mercato up` without SMTP_URL writes as ``.eml`` files (DATA_DIR/outbox-mail)."""

from __future__ import annotations

import email
import re
from email import policy
from pathlib import Path

_RESET_LINK = re.compile(r"http\S+/reset\?token=\S+")


def mailed_link(mail_dir: Path, address: str) -> str | None:
    """The password-reset link of the first mail to ``address`` (None: none yet)."""
    for path in mail_dir.glob("*.eml") if mail_dir.is_dir() else ():
        message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        if address in str(message["To"]):
            body = message.get_body(("plain",))  # type: ignore[attr-defined]
            found = _RESET_LINK.search(body.get_content())
            return found.group(0) if found else None
    return None
