"""CSRF tokens: every state-changing form carries one, bound to the browser's session.

A token is the session's CSRF secret, signed with ``SECRET_KEY`` and timestamped
(itsdangerous). A form is accepted only when its token's signature is ours, it is not older
than the session, and it names *this* session's secret: a token lifted from another session
(or another user) is refused like a missing one. ``SameSite=Lax`` keeps the cookie off a
cross-site POST as a second line of defence.
"""

from __future__ import annotations

import hmac

from itsdangerous import BadData, URLSafeTimedSerializer

from mercato.storefront.sessions import Session

#: The form field every state-changing form carries.
FIELD = "csrf_token"


class CsrfTokens:
    def __init__(self, secret: str, *, max_age: float) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt="mercato.storefront.csrf")
        self.max_age = max_age

    def issue(self, session: Session) -> str:
        return self._serializer.dumps(session.csrf)

    def valid(self, token: object, session: Session) -> bool:
        if not isinstance(token, str) or not token:
            return False
        try:
            secret = self._serializer.loads(token, max_age=int(self.max_age))
        except BadData:
            return False
        return isinstance(secret, str) and hmac.compare_digest(secret, session.csrf)
