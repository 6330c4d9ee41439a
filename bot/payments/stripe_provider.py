"""Stripe Checkout as a payment provider: Cobrabot creates a hosted Checkout Session and redirects the debtor
to it, so card data never reaches us; the result comes back as a signed webhook (bot/payments/webhook.py)."""

from __future__ import annotations

import logging

import stripe

from bot.config import Settings
from bot.domain import Money
from bot.i18n import language_of
from bot.payments.links import CheckoutRequest

logger = logging.getLogger(__name__)

# Stripe's own lists (docs.stripe.com/currencies): amounts are in whole units for these ...
ZERO_DECIMAL = frozenset(
    ["BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF"]
)
# ... in thousandths for these (the last digit must be 0), and in hundredths for every other currency.
THREE_DECIMAL = frozenset(["BHD", "JOD", "KWD", "OMR", "TND"])


class UnsupportedAmount(ValueError):
    """The amount cannot be expressed in Stripe's units for its currency without rounding."""


def _stripe_digits(currency: str) -> int:
    if currency in ZERO_DECIMAL:
        return 0
    return 3 if currency in THREE_DECIMAL else 2


def to_stripe_amount(money: Money) -> int:
    """Cobrabot minor units (Babel's digits) to Stripe's `unit_amount`; equal for CLP, JPY and USD."""
    shift = _stripe_digits(money.currency) - money.digits
    if shift >= 0:
        return money.minor * 10**shift
    whole, rest = divmod(money.minor, 10**-shift)
    if rest:
        raise UnsupportedAmount(f"{money.currency} amounts on Stripe cannot carry that many decimals")
    return whole


def from_stripe_amount(amount: int, currency: str) -> Money:
    """Stripe's integer amount and lower-case currency back to Cobrabot's Money."""
    code = currency.upper()
    shift = Money(0, code).digits - _stripe_digits(code)
    if shift >= 0:
        return Money(amount * 10**shift, code)
    whole, rest = divmod(amount, 10**-shift)
    if rest:
        raise UnsupportedAmount(f"Stripe sent a {code} amount with more decimals than the currency has")
    return Money(whole, code)


class StripeProvider:
    """Checkout Sessions through the real SDK; `api_url` points it at a stand-in or a staging proxy."""

    name = "stripe"

    def __init__(self, api_key: str, api_url: str | None = None) -> None:
        # A client object, not stripe.api_key/api_base globals: two apps in one process stay independent.
        self._client = stripe.StripeClient(
            api_key, base_addresses={"api": api_url} if api_url else None, max_network_retries=2
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> StripeProvider | None:
        """The provider when STRIPE_API_KEY is set, else None (the portal provider is used instead)."""
        if not settings.stripe_api_key:
            return None
        return cls(settings.stripe_api_key, settings.stripe_api_url)

    def create_checkout(self, request: CheckoutRequest) -> tuple[str, str | None]:
        metadata = {"payment_link_id": str(request.link_id), "debtor_id": str(request.debtor_id)}
        session = self._client.v1.checkout.sessions.create(
            params={
                "mode": "payment",
                "line_items": [
                    {
                        "quantity": 1,
                        "price_data": {
                            "currency": request.amount.currency.lower(),
                            "unit_amount": to_stripe_amount(request.amount),
                            "product_data": {"name": request.description},
                        },
                    }
                ],
                "client_reference_id": str(request.link_id),
                "metadata": metadata,
                "payment_intent_data": {"metadata": metadata},
                "locale": language_of(request.locale),
                "success_url": request.success_url,
                "cancel_url": request.cancel_url,
            },
            # Stripe replays the first answer for a retried key, so a network retry never makes two sessions.
            options={"idempotency_key": f"cobrabot-payment-link-{request.link_id}-{request.token[-12:]}"},
        )
        logger.info("stripe checkout session %s created for payment link %s", session.id, request.link_id)
        return str(session.url), str(session.id)
