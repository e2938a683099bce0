"""The password-reset mail: written in the transaction that stores the token, sent after it.

The use case (``AuthService.forgot_password``) decides the mail inside its unit of work and
hands it to :meth:`ResetMails.send_soon` with ``uow.after_commit``, so nothing is mailed
for a transaction that rolled back, and the answer never waits on the mail server (the
answer and its timing are the same for an address that is not registered).

The mail holds the token, and the token is stored only hashed, so the message is never
written to a table to be sent later: it lives in memory until it is sent, tried a bounded
number of times with a backoff, each failure logged. A process that stops before the mail
left loses it; the person asks again (nothing else was promised: the answer is ``202``).
Neither the token nor the link is ever logged.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from email.message import EmailMessage
from typing import Final

import structlog

from mercato.platform.mail import Mailer, compose
from mercato.platform.shutdown import wait_ended

log = structlog.stdlib.get_logger("mercato.auth.mail")

#: Tries of one mail, and the delay before the second (doubled for each further one).
ATTEMPTS: Final = 3
BACKOFF: Final = 2.0


def reset_message(
    *, sender: str, to: str, username: str, link: str, valid_for: int, now: datetime
) -> EmailMessage:
    """The mail that carries ``link`` to ``to``; ``valid_for``: the link's life, seconds."""
    minutes = max(valid_for // 60, 1)
    return compose(
        sender=sender,
        to=to,
        subject="Reset your Mercato password",
        when=now,
        text=f"Someone, hopefully you, asked to reset the password of the Mercato account"
        f" {username}.\n\nOpen this link within {minutes} minutes to choose a new one:\n\n"
        f"{link}\n\nThe link works once. If you did not ask, ignore this mail: your password"
        " stays as it is.\n",
    )


class ResetMails:
    """Sends reset mails in the background, after the commit that decided them.

    :meth:`close` waits a bounded time for the mails still on their way (shutdown)."""

    def __init__(self, mailer: Mailer, *, attempts: int = ATTEMPTS, backoff: float = BACKOFF):
        self.mailer = mailer
        self.attempts, self.backoff = attempts, backoff
        self._tasks: set[asyncio.Task[None]] = set()

    def send_soon(self, message: EmailMessage, *, name: str, user_id: str) -> None:
        """Start sending ``message`` (``name``: the mail's file name, never the token)."""
        task = asyncio.create_task(self._send(message, name, user_id), name=f"mail-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, message: EmailMessage, name: str, user_id: str) -> None:
        for attempt in range(1, self.attempts + 1):
            try:
                await self.mailer.send(message, name=name)
            except Exception as exc:
                log.warning(
                    "password reset mail not sent",
                    mail=name,
                    user_id=user_id,
                    attempt=attempt,
                    error=type(exc).__name__,
                )
                if attempt < self.attempts:
                    await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
                continue
            log.info("password reset mail sent", mail=name, user_id=user_id, attempt=attempt)
            return
        log.error(
            "password reset mail given up; the user can ask again", mail=name, user_id=user_id
        )

    async def close(self, within: float) -> None:
        """Give the mails still being sent ``within`` seconds, then abandon them."""
        if self._tasks:
            await wait_ended(list(self._tasks), within=within, what="sending reset mail")
