"""The console's own words in Spanish and English: the English text is the key, Spanish is the default language.

The language is the agent's choice (the switch in the nav, kept in the session), else the browser's
Accept-Language, else Spanish. Debtor-facing text lives in bot/templates.py, not here.
"""

from __future__ import annotations

from flask import Blueprint, abort, redirect, request, session
from flask.typing import ResponseReturnValue

from admin.auth import _safe_next

LANGUAGES = ("es", "en")
DEFAULT_LANGUAGE = "es"
SESSION_KEY = "console_lang"
blueprint = Blueprint("language", __name__)

SPANISH: dict[str, str] = {
    # nav and layout
    "Console": "Consola",
    "Cobrabot console": "Consola Cobrabot",
    "Inbox": "Bandeja",
    "Cases": "Casos",
    "Debtors": "Deudores",
    "Reconciliation": "Conciliación",
    "Flows": "Flujos",
    "Templates": "Plantillas",
    "Policies": "Políticas",
    "Dashboard": "Panel",
    "Agents": "Agentes",
    "Accounts": "Cuentas",
    "Sign out": "Cerrar sesión",
    "Language": "Idioma",
    "Change": "Cambiar",
    "agent": "agente",
    "manager": "supervisor",
    "admin": "administrador",
    # dashboard
    "Filters": "Filtros",
    "Creditor": "Acreedor",
    "All creditors": "Todos los acreedores",
    "Segment": "Segmento",
    "All segments": "Todos los segmentos",
    "Period": "Período",
    "This month": "Este mes",
    "Last month": "Mes anterior",
    "Last 30 days": "Últimos 30 días",
    "Last 90 days": "Últimos 90 días",
    "This year": "Este año",
    "Custom": "Personalizado",
    "From": "Desde",
    "To (exclusive)": "Hasta (excluido)",
    "Apply": "Aplicar",
    "Download CSV": "Descargar CSV",
    "Collected": "Recaudado",
    "Recovery rate": "Tasa de recuperación",
    "Promises kept": "Promesas cumplidas",
    "pending": "pendientes",
    "Plans": "Planes",
    "active": "activos",
    "broken": "incumplidos",
    "completed": "completados",
    "Handoffs": "Derivaciones",
    "answered within SLA": "atendidas dentro del SLA",
    "Median wait": "Espera mediana",
    "Median time to resolution": "Tiempo mediano de resolución",
    "resolved within SLA": "resueltas dentro del SLA",
    "A preset ignores the dates; choose “Custom” to use them.": (
        "Un período predefinido ignora las fechas; elija “Personalizado” para usarlas."
    ),
    "Cases resolved within SLA": "Casos resueltos dentro del SLA",
    "Aging of open balance": "Antigüedad del saldo abierto",
    "as of": "al",
    "Not due": "No vencido",
    "days": "días",
    "Collected per period": "Recaudado por período",
    "Channels": "Canales",
    "Channel": "Canal",
    "Delivery rate": "Tasa de entrega",
    "Response rate": "Tasa de respuesta",
    "delivered": "entregados",
    "sent": "enviados",
    "replied": "respondieron",
    "messaged": "contactados",
    "Bucket": "Tramo",
    "Amount": "Monto",
    "Week of": "Semana del",
    "No data for these filters.": "No hay datos para estos filtros.",
    "Definitions": "Definiciones",
    "Chart data": "Datos del gráfico",
    "Value": "Valor",
}

CATALOGS: dict[str, dict[str, str]] = {"es": SPANISH, "en": {}}


def translate(text: str, language: str, **values: object) -> str:
    """The text in `language` (English text when no translation exists), with %(name)s values filled in."""
    result = CATALOGS.get(language, {}).get(text, text)
    return result % values if values else result


def current_language() -> str:
    chosen = session.get(SESSION_KEY)
    if chosen in LANGUAGES:
        return str(chosen)
    return request.accept_languages.best_match(LANGUAGES, default=DEFAULT_LANGUAGE) or DEFAULT_LANGUAGE


def gettext(text: str, **values: object) -> str:
    """`_()` in console templates and views."""
    return translate(text, current_language(), **values)


def template_globals() -> dict[str, object]:
    return {"_": gettext, "console_lang": current_language(), "console_languages": LANGUAGES}


@blueprint.post("/language")
def choose() -> ResponseReturnValue:
    language = request.form.get("language", "")
    if language not in LANGUAGES:
        abort(400, description=f"unknown language {language[:16]!r}: choose one of {', '.join(LANGUAGES)}")
    session[SESSION_KEY] = language
    return redirect(_safe_next(request.form.get("next")), code=303)
