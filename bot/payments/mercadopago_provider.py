"""Mercado Pago Checkout Pro as a payment provider: Cobrabot creates a preference and redirects the debtor to its
`init_point`, so card data never reaches us; Mercado Pago then notifies `/webhooks/payments/mercadopago` and we
read the payment itself back from its API (bot/payments/webhook.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import mercadopago
import requests
from mercadopago.config import RequestOptions
from mercadopago.config.config import Config
from mercadopago.errors.exceptions import MercadoPagoError as SdkError
from mercadopago.http.http_client import HttpClient

from bot.config import Settings
from bot.domain import Money
from bot.payments.links import CheckoutRequest

logger = logging.getLogger(__name__)
# external_reference of our preferences: the prefix keeps other systems' payments on the same account apart.
REFERENCE_PREFIX = "cobrabot-link-"
WEBHOOK_PATH = "/webhooks/payments/mercadopago"
TIMEOUT_SECONDS = 15.0


class MercadoPagoFailure(Exception):
    """Mercado Pago answered with an error (or not at all); `status` is its HTTP status, 0 when unreachable."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class RebasedHttpClient(HttpClient):
    """The SDK's own transport, with its fixed API base (`Config.api_base_url`) swapped for ours.

    The SDK joins that constant with each resource's path (`/checkout/preferences`, `/v1/payments/<id>`) and
    accepts a custom `HttpClient`; rewriting the prefix here keeps every other SDK behaviour (headers, JSON,
    retries, error wrapping) as shipped.
    """

    def __init__(self, api_url: str) -> None:
        self.api_url = api_url.rstrip("/")
        self.sdk_base = Config().api_base_url

    def request(  # type: ignore[no-untyped-def]
        self, method, url, maxretries=None, retry_on=None, backoff_factor=None, **kwargs
    ):
        if url.startswith(self.sdk_base):
            url = self.api_url + url[len(self.sdk_base) :]
        return super().request(method, url, maxretries, retry_on, backoff_factor, **kwargs)


def to_mercadopago_amount(money: Money) -> int | float:
    """Mercado Pago takes major units as a JSON number: whole pesos for CLP, 120.5 for USD 120.50."""
    if money.digits == 0:
        return money.minor
    return float(money.amount)


def from_mercadopago_amount(amount: Any, currency: str) -> Money:
    """A JSON number in major units back to Money; raises ValueError for an amount the currency cannot hold."""
    if isinstance(amount, bool) or not isinstance(amount, int | float | str):
        raise ValueError(f"not an amount: {amount!r}")
    return Money.from_amount(Decimal(str(amount)), str(currency).upper())


def link_id_of(external_reference: Any) -> int | None:
    text = str(external_reference or "")
    suffix = text.removeprefix(REFERENCE_PREFIX)
    return int(suffix) if text.startswith(REFERENCE_PREFIX) and suffix.isdigit() else None


class MercadoPagoProvider:
    """Checkout Pro preferences and payment look-ups through the official SDK; `api_url` points it elsewhere."""

    name = "mercadopago"

    def __init__(self, access_token: str, public_url: str, api_url: str | None = None) -> None:
        options = RequestOptions(connection_timeout=TIMEOUT_SECONDS, max_retries=2)
        http_client = RebasedHttpClient(api_url) if api_url else None
        self._sdk = mercadopago.SDK(access_token, http_client=http_client, request_options=options)
        # Not sent as the preference's `notification_url`: Mercado Pago signs (x-signature) the notifications of
        # the webhook configured under "Your integrations", a per-preference URL would take precedence over it,
        # and the SDK deprecates it. The operator registers this URL there (docs/payments.md).
        self.webhook_url = public_url.rstrip("/") + WEBHOOK_PATH

    @classmethod
    def from_settings(cls, settings: Settings) -> MercadoPagoProvider | None:
        """The provider when COBRABOT_MERCADOPAGO_ACCESS_TOKEN is set, else None."""
        if not settings.mercadopago_access_token:
            return None
        return cls(settings.mercadopago_access_token, settings.public_url, settings.mercadopago_api_url)

    def create_checkout(self, request: CheckoutRequest) -> tuple[str, str | None]:
        preference = {
            "items": [
                {
                    "id": str(request.link_id),
                    "title": request.description,
                    "quantity": 1,
                    "currency_id": request.amount.currency,
                    "unit_price": to_mercadopago_amount(request.amount),
                }
            ],
            "external_reference": f"{REFERENCE_PREFIX}{request.link_id}",
            "metadata": {"payment_link_id": request.link_id, "debtor_id": request.debtor_id},
            "back_urls": {"success": request.success_url, "pending": request.cancel_url, "failure": request.cancel_url},
            "auto_return": "approved",
            # The preference must not outlive the link it pays.
            "expires": True,
            "expiration_date_to": request.expires_at.isoformat(timespec="milliseconds"),
        }
        # A retried create with the same key returns the first preference instead of a second one.
        options = RequestOptions(
            connection_timeout=TIMEOUT_SECONDS,
            max_retries=2,
            custom_headers={"X-Idempotency-Key": f"cobrabot-payment-link-{request.link_id}-{request.token[-12:]}"},
        )
        result = self._call(lambda: self._sdk.preference().create(preference, options), "creating a preference")
        body = self._body(result, "creating a preference")
        url, preference_id = body.get("init_point"), body.get("id")
        if not url or not preference_id:
            raise MercadoPagoFailure("Mercado Pago returned a preference without init_point or id", result["status"])
        logger.info("mercadopago preference %s created for payment link %s", preference_id, request.link_id)
        return str(url), str(preference_id)

    def fetch_payment(self, payment_id: str) -> dict[str, Any] | None:
        """The payment as Mercado Pago knows it (the notification itself carries only its id); None if unknown."""
        result = self._call(lambda: self._sdk.payment().get(payment_id), f"reading payment {payment_id}")
        if result["status"] == 404:
            return None
        return self._body(result, f"reading payment {payment_id}")

    @staticmethod
    def _call(request: Callable[[], dict[str, Any]], doing: str) -> dict[str, Any]:
        try:
            return request()
        except (requests.RequestException, SdkError) as exc:
            raise MercadoPagoFailure(f"Mercado Pago unreachable while {doing}: {exc}") from exc

    @staticmethod
    def _body(result: dict[str, Any], doing: str) -> dict[str, Any]:
        status, body = result["status"], result.get("response")
        if not 200 <= status < 300 or not isinstance(body, dict):
            message = body.get("message") if isinstance(body, dict) else None
            raise MercadoPagoFailure(f"Mercado Pago answered {status} while {doing}: {message or 'no details'}", status)
        return body
