"""Signed, expiring links to a debtor's self-service portal."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from itsdangerous import BadSignature, URLSafeSerializer

from bot.domain import utcnow


class InvalidPortalToken(Exception):
    """The token was not signed by us or is malformed."""


class ExpiredPortalToken(Exception):
    """The token is genuine but past its expiry; the debtor needs a fresh link."""


class PortalTokens:
    def __init__(self, secret_key: str, public_url: str) -> None:
        self._serializer = URLSafeSerializer(secret_key, salt="cobrabot.portal")
        self.public_url = public_url.rstrip("/")

    def issue(self, debtor_id: int, valid_for: timedelta, now: datetime | None = None) -> tuple[str, datetime]:
        expires_at = (now or utcnow()) + valid_for
        # The nonce makes every token unique: two links issued in the same second must not collide.
        token = self._serializer.dumps({"d": debtor_id, "e": int(expires_at.timestamp()), "n": secrets.token_hex(4)})
        return token, expires_at.replace(microsecond=0)

    def verify(self, token: str, now: datetime | None = None) -> int:
        """The debtor id inside a genuine, unexpired token."""
        try:
            payload = self._serializer.loads(token)
            debtor_id, expires = int(payload["d"]), int(payload["e"])
        except (BadSignature, KeyError, TypeError, ValueError) as exc:
            raise InvalidPortalToken("invalid portal link") from exc
        if (now or utcnow()).timestamp() > expires:
            raise ExpiredPortalToken("this portal link has expired")
        return debtor_id

    def url(self, token: str) -> str:
        return f"{self.public_url}/p/{token}"
