"""Signed one-click unsubscribe links (email's List-Unsubscribe): debtor and channel, no expiry."""

from __future__ import annotations

from itsdangerous import BadSignature, URLSafeSerializer


class UnsubscribeLinks:
    def __init__(self, secret_key: str, public_url: str) -> None:
        self._serializer = URLSafeSerializer(secret_key, salt="cobrabot.unsubscribe")
        self.public_url = public_url.rstrip("/")

    def url(self, debtor_id: int, channel: str) -> str:
        return f"{self.public_url}/u/{self._serializer.dumps([debtor_id, channel])}"

    def read(self, token: str) -> tuple[int, str] | None:
        """(debtor id, channel) from a genuine token, else None."""
        try:
            debtor_id, channel = self._serializer.loads(token)
        except (BadSignature, TypeError, ValueError):
            return None
        if not isinstance(debtor_id, int) or not isinstance(channel, str):
            return None
        return debtor_id, channel
