"""What the Twilio adapter tests share: settings pointing the real SDK at the stand-in, signed requests, payloads."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlencode

from twilio.request_validator import RequestValidator

from bot.config import Settings, load_settings
from bot.domain import WebhookRequest

ACCOUNT_SID = "AC0a1b2c3d4e5f60718293a4b5c6d7e8f9"
AUTH_TOKEN = "test-twilio-auth-token"
PUBLIC_URL = "https://cobrabot.example"
MESSAGES_PATH = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"


def twilio_settings(api_url: str | None) -> Settings:
    return load_settings(
        public_url=PUBLIC_URL,
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_sms_from="+56229381234",
        twilio_whatsapp_from="+14155238886",
        twilio_api_url=api_url,
    )


def signed(form: dict[str, str], url: str, *, signed_url: str | None = None) -> WebhookRequest:
    """A webhook request for `url` whose signature was computed for `signed_url` (default: the same URL)."""
    signature = RequestValidator(AUTH_TOKEN).compute_signature(signed_url or url, form)
    return WebhookRequest(
        url=url, method="POST", headers={"X-Twilio-Signature": signature}, body=urlencode(form).encode(), form=form
    )


def payload(data_dir: Path, name: str) -> dict[str, str]:
    return json.loads((data_dir / "twilio" / name).read_text())
