"""Keyword safety net for the legally critical intents: opt-out, dispute and asking for a human.

A missed "STOP" or "no reconozco esta deuda" has legal consequences, so these phrases never depend on the
classifier's mood: when a rule matches, it wins. Rules read `bot.nlu.normalize()` output (lowercase, no accents,
shorthand expanded, numbers as "0"). They are deliberately narrow: "stop by the office", "had to stop paying",
"no puedo pagar" and "el monto es muy alto" are left to the classifier. Checked in order: opt-out first (a request
to stop contact must be honoured even when it also disputes the debt), then dispute, then human.
"""

from __future__ import annotations

import re

from bot.domain import Intent
from bot.nlu import word_set

# Words that do not change a one-word command: "STOP please", "baja gracias", "a human".
_FILLERS = word_set(
    "please por favor ok okay ya gracias thanks thank you now ahora already a an un una the el la me mi my it "
    "this esto todo all"
)

_STANDALONE = {
    Intent.OPT_OUT: word_set(
        "stop stopall unsubscribe unsub cancel cancelar end quit optout revoke baja alto parar detener "
        "desuscribir desuscribirme"
    ),
    Intent.HUMAN: word_set(
        "human humano humana agent agente agentes ejecutivo ejecutiva asesor asesora operator operador operadora "
        "representative rep representante supervisor supervisora persona person"
    ),
    Intent.DISPUTE: word_set("fraud fraude fraudulento dispute disputa"),
}
_STANDALONE_PHRASES = {
    Intent.OPT_OUT: frozenset({"stop all", "opt out", "stop it", "de baja", "no more", "stop stop"}),
    Intent.HUMAN: frozenset(
        {"live agent", "real person", "persona real", "customer service", "servicio al cliente", "ser humano"}
    ),
    Intent.DISPUTE: frozenset(),
}

_CONTACT_ES = r"(?:escri[bv]|llam|contact|molest|mand|envi|hostig|acos|jod)\w*"
# Subjunctive/imperative only: "no me escriban" asks to stop, "ya no me mandan el link" complains.
_CONTACT_ES_ASK = r"(?:(?:llam|contact|molest|mand|envi|hostig|acos|jod)(?:en|es|e)|escri[bv](?:an|as|a))\b"
_CONTACT_EN = r"(?:text|txt|messag|msg|call|contact|email|e mail|writ|bother|harass|spam|send|sms)\w*"
_HUMAN_ES = (
    r"(?:persona real|persona|humano|humana|ser humano|ejecutiv[oa]|agente|asesor[a]?|operador[a]?|representante"
    r"|supervisor[a]?|encargad[oa]|alguien real|alguien de verdad)"
)
_HUMAN_EN = (
    r"(?:real person|human being|human|person|live agent|agent|representative|rep|operator|supervisor|manager"
    r"|someone real|somebody real|real human)"
)

_RULES: tuple[tuple[Intent, re.Pattern[str]], ...] = tuple(
    (intent, re.compile(pattern))
    for intent, pattern in (
        # Spanish opt-out.
        (Intent.OPT_OUT, rf"\bya no (?:me|nos) (?:sigan |vuelvan a )?{_CONTACT_ES_ASK}"),
        (Intent.OPT_OUT, rf"\bno (?:me|nos) {_CONTACT_ES_ASK} (?:\w+ )?(?:mas|nunca)\b"),
        (Intent.OPT_OUT, rf"\bno (?:me|nos) (?:sigan )?{_CONTACT_ES_ASK}(?: por favor)?$"),
        (Intent.OPT_OUT, rf"\bno (?:me|nos) (?:vuelvan|vuelvas|vuelva|sigan|sigas|siga) a? ?{_CONTACT_ES}"),
        (Intent.OPT_OUT, rf"\b(?:dejen|deja|deje|dejar|paren|pare|parar|basta) de {_CONTACT_ES}"),
        (Intent.OPT_OUT, r"\bbasta de (?:mensajes|llamadas|correos|whatsapp|notificaciones|sms)"),
        (
            Intent.OPT_OUT,
            r"\bno (?:quiero|deseo|quisiera) (?:recibir |seguir recibiendo |que me (?:sigan )?(?:\w+ )?)?(?:mas )?"
            r"(?:mensajes|notificaciones|llamadas|correos|sms|whatsapp|escriban|llamen|contacten|manden)",
        ),
        (Intent.OPT_OUT, r"\b(?:darme|dar|dame|denme|deme|doy|darse|dio) de baja\b"),
        (Intent.OPT_OUT, r"\b(?:quiero|solicito|pido|pedir|deseo) (?:la|mi) baja\b"),
        # Imperatives only: "borren mi número" opts out, "¿de dónde sacaron mi número?" is a question.
        (
            Intent.OPT_OUT,
            r"\b(?:borr(?:en|a|e|ar)|elimin(?:en|a|e|ar)|quit(?:en|a|e|ar)|saqu(?:en|e)|sac(?:a|ar)) (?:mi|mis) "
            r"(?:numero|telefono|celular|datos|contacto)",
        ),
        (Intent.OPT_OUT, r"\b(?:saqu|sac|quit|borr|elimin)\w*me de (?:su|sus|la|esta|esa|las) (?:lista|base)"),
        (Intent.OPT_OUT, r"\bcancelar (?:la |mi )?(?:suscripcion|subscripcion|mensajes|notificaciones)"),
        # English opt-out.
        (Intent.OPT_OUT, rf"\bstop {_CONTACT_EN}"),
        (Intent.OPT_OUT, rf"\b(?:quit|cease) {_CONTACT_EN}"),
        (
            Intent.OPT_OUT,
            rf"\b(?:do not|never) (?:ever )?{_CONTACT_EN} (?:me|us)(?: again| anymore| any more| ever| please)*"
            rf"(?:$| ?[?,.]| (?:or|and|i|you|leave|this|thanks|thank)\b)",
        ),
        (Intent.OPT_OUT, r"\b(?:do not|never) contact me\b"),
        (Intent.OPT_OUT, r"\b(?:remove|take|delete|unsubscribe) me (?:off|from)\b"),
        (Intent.OPT_OUT, r"\b(?:remove|delete) my (?:number|phone|contact|info|details)\b"),
        (Intent.OPT_OUT, r"\bunsubscribe\b|\bopt(?:ing)? (?:me )?out\b|\bcease and desist\b|\bleave me alone\b"),
        (Intent.OPT_OUT, r"\bno more (?:texts|messages|calls|emails|msgs)\b"),
        (Intent.OPT_OUT, r"\b(?:please|pls) stop$"),
        # Spanish dispute.
        (
            Intent.DISPUTE,
            r"\bno (?:la |lo |las |los )?recono[csz]+o\b(?: \w+){0,3} "
            r"(?:deuda|cobro|cargo|monto|compra|credito|cuenta|saldo|prestamo|obligacion)",
        ),
        (Intent.DISPUTE, r"\bno (?:la |lo )recono[csz]+o\b"),
        (Intent.DISPUTE, r"\bdesconozco (?:\w+ )?(?:deuda|cobro|cargo|monto|compra|credito|prestamo)"),
        (Intent.DISPUTE, r"\b(?:deuda|cobro|credito|cargo|prestamo|compra)s? no (?:es|son) mi[ao]s?\b"),
        (Intent.DISPUTE, r"\bno (?:es|son) mis? (?:deuda|cobro|credito|cargo|prestamo|compra)s?\b"),
        (Intent.DISPUTE, r"\bfraude\b|\bfraudulent[oa]s?\b|\b(?:suplantacion|robo) de identidad\b"),
        (Intent.DISPUTE, r"\bcobr\w* (?:\w+ )?(?:dos veces|doble|duplicado)\b|\bcobro duplicado\b"),
        (
            Intent.DISPUTE,
            r"\b(?:monto|saldo|cobro|cargo|cifra)s? (?:esta|estan|es|son) (?:mal|equivocad|incorrect|erron)\w*",
        ),
        (Intent.DISPUTE, r"\bme (?:robaron|suplantaron) (?:la |mi )?identidad\b"),
        (Intent.DISPUTE, r"\b(?:impugn|disput|objet)\w* (?:\w+ )?(?:deuda|cobro|cargo|monto)"),
        (
            Intent.DISPUTE,
            r"\b(?:nunca|jamas) (?:he |le |les )?(?:contrat|solicit|ped|tuve|tenido|abri|firm)\w*\b.{0,30}"
            r"\b(?:cuenta|credito|tarjeta|prestamo|servicio|contrato|deuda|plan|linea|nada)\b",
        ),
        (Intent.DISPUTE, r"\byo no (?:contrat|solicit|firm)\w*\b"),
        # English dispute.
        (Intent.DISPUTE, r"\bi (?:do not|did not) owe (?:this|that|anything|you|it|nothing|any|them)\b"),
        (Intent.DISPUTE, r"\bi owe (?:nothing|you nothing|no one|nobody)\b"),
        (Intent.DISPUTE, r"\b(?:is not|not) my (?:debt|account|loan|bill|charge|balance)\b"),
        (Intent.DISPUTE, r"\b(?:this|that|it|debt|account|charge|loan) is not mine\b"),
        (
            Intent.DISPUTE,
            r"\bi (?:never|did not) (?:open|sign|appl|took|take|authori[sz]|borrow)\w*\b.{0,25}"
            r"\b(?:account|loan|card|purchase|charge|debt|up|anything|credit)\b",
        ),
        (Intent.DISPUTE, r"\bi do not recogni[sz]e (?:this|that|the|these|it|any)\b"),
        (Intent.DISPUTE, r"\bfraud\w*\b|\bidentity theft\b|\bstole my identity\b|\bidentity (?:was )?stolen\b"),
        (Intent.DISPUTE, r"\bcharg\w* (?:me )?twice\b|\bdouble (?:charged|charge|billed)\b"),
        (Intent.DISPUTE, r"\b(?:amount|balance|charge|bill)s? (?:is|are|was) (?:wrong|incorrect|not right)\b"),
        (Intent.DISPUTE, r"\bi (?:want to |wish to |would like to |will |am )?disput\w*\b|\bdebt validation\b"),
        # Human handover. No negation check: normalising drops the comma that separates "No, quiero hablar con
        # un ejecutivo" from "no quiero hablar con...", and an unneeded handover costs less than a missed one.
        (
            Intent.HUMAN,
            rf"\b(?:hablar|hablo|conversar|comunic\w*|pas\w*me|pase|transfier\w*|deriv\w*|atien\w*|quiero|necesito"
            rf"|deseo|pido|solicito|prefiero|dame|deme|denme)\b(?: \w+){{0,2}}? (?:con )?(?:un |una |algun |alguna "
            rf"|el |la |al |a un |a una )?{_HUMAN_ES}\b",
        ),
        (Intent.HUMAN, r"\b(?:hablar|conversar|comunicarme) con alguien\b"),
        # English human handover.
        (
            Intent.HUMAN,
            rf"\b(?:talk|speak|chat|connect|transfer|put|get|want|need|give)\b(?: \w+){{0,2}}? (?:to |with )?"
            rf"(?:a |an |the |some |your |a real |a live )?{_HUMAN_EN}\b",
        ),
        (Intent.HUMAN, r"\b(?:talk|speak) (?:to|with) (?:someone|somebody)\b"),
    )
)


def match_rule(normalized: str) -> Intent | None:
    """The legally critical intent a normalised message unmistakably expresses, or None."""
    for intent in (Intent.OPT_OUT, Intent.DISPUTE, Intent.HUMAN):
        if _standalone(normalized, intent):
            return intent
    for intent, pattern in _RULES:
        if pattern.search(normalized):
            return intent
    return None


def _standalone(normalized: str, intent: Intent) -> bool:
    words = [word for word in normalized.replace("?", " ").split() if word not in _FILLERS]
    if not words:
        return False
    if len(words) == 1:
        return words[0] in _STANDALONE[intent]
    return " ".join(words) in _STANDALONE_PHRASES[intent]
