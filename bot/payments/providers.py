"""Which hosted checkout a creditor's debtors pay through: Stripe, Mercado Pago, or none (the portal's page)."""

from __future__ import annotations

import logging

from bot.config import Settings
from bot.models import Creditor
from bot.payments.links import PaymentProvider
from bot.payments.mercadopago_provider import MercadoPagoProvider
from bot.payments.stripe_provider import StripeProvider

logger = logging.getLogger(__name__)
HOSTED = ("stripe", "mercadopago")


def checkout_provider(settings: Settings, creditor: Creditor) -> PaymentProvider | None:
    """The creditor's choice (`settings["payment_provider"]`: stripe, mercadopago or portal) when that provider
    is configured; otherwise Stripe, then Mercado Pago, whichever has credentials; None means the portal."""
    configured: dict[str, PaymentProvider | None] = {
        "stripe": StripeProvider.from_settings(settings),
        "mercadopago": MercadoPagoProvider.from_settings(settings),
    }
    chosen = str((creditor.settings or {}).get("payment_provider") or "")
    if chosen == "portal":
        return None
    if chosen in HOSTED:
        if configured[chosen] is not None:
            return configured[chosen]
        logger.warning("creditor %s chose %s, which is not configured; using the default", creditor.slug, chosen)
    return configured["stripe"] or configured["mercadopago"]
