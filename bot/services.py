"""Wiring: build the real services from settings once per process (cosmicpython's bootstrap)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from prometheus_client import CollectorRegistry

from bot.config import Settings
from bot.conversations import ConversationService, Rephraser
from bot.dispatch import Dispatcher
from bot.domain import Clock, utcnow
from bot.engine import DialogEngine
from bot.flow_store import PublishedFlows
from bot.identify import TelegramLinks
from bot.inbound import InboundService
from bot.inbox import Inbox, InboxWorker
from bot.nlu import Understander
from bot.portal import PortalTokens
from bot.ports import ChannelRegistry
from bot.ratelimit import make_rate_limiter
from bot.store import ConversationLocks, Database, make_locks
from bot.unsubscribe import UnsubscribeLinks
from knowledge.retriever import KnowledgeBase

logger = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    database: Database
    locks: ConversationLocks
    conversations: ConversationService
    portal: PortalTokens
    registry: ChannelRegistry
    dispatcher: Dispatcher
    telegram_links: TelegramLinks
    inbound: InboundService
    inbox: Inbox
    clock: Clock = utcnow
    metrics: CollectorRegistry = field(default_factory=CollectorRegistry)

    def inbox_worker(self, *, batch_size: int = 32, threads: int = 1) -> InboxWorker:
        """A worker draining the inbound queue (COBRABOT_INBOUND_QUEUE) through the same InboundService.

        With an LLM configured a turn can wait seconds on the model: 32 of them in one transaction would hold their
        conversation locks (and the Redis lease) for minutes, so each turn commits alone and the threads overlap
        the model calls instead."""
        batched = not self.settings.llm_enabled
        return InboxWorker(
            self.database, self.inbound, self.clock, batch_size=batch_size, threads=threads, batched=batched
        )

    @property
    def portal_link_lifetime(self) -> timedelta:
        return timedelta(days=self.settings.portal_link_days)


def bootstrap(
    settings: Settings,
    *,
    database: Database | None = None,
    clock: Clock = utcnow,
    nlu: Understander | None = None,
    registry: ChannelRegistry | None = None,
) -> Services:
    """Wire the services; `registry` holds the channel adapters (built by the edge: the core never imports them)."""
    database = database or Database(settings.database_url)
    locks = make_locks(settings.redis_url)
    for channel, reason in settings.channel_status().items():
        if reason:
            logger.warning("channel %s disabled: %s", channel, reason)
    logger.info("channels enabled: %s", ", ".join(settings.enabled_channels()))
    portal = PortalTokens(settings.secret_key, settings.public_url)
    metrics = CollectorRegistry()
    rephraser = None
    if nlu is None:
        from bot.nlu.offline import OfflineNLU  # trains a small model: only when no understander is injected

        nlu = OfflineNLU()
        if settings.llm_enabled:
            nlu, rephraser = _language_model(settings, nlu, metrics)
    engine = DialogEngine(nlu, PublishedFlows(database))  # managers' published flows win over the files
    registry = registry or ChannelRegistry()
    conversations = ConversationService(
        database,
        locks,
        engine,
        clock,
        portal,
        settings.secret_key,
        KnowledgeBase(settings.knowledge_dir),
        rephraser=rephraser,
    )
    telegram_links = TelegramLinks(settings.secret_key)
    return Services(
        settings=settings,
        registry=registry,
        dispatcher=Dispatcher(
            database,
            registry,
            clock,
            whatsapp_templates=settings.whatsapp_templates,
            limiter=make_rate_limiter(settings.redis_url),
            unsubscribe=UnsubscribeLinks(settings.secret_key, settings.public_url),
        ),
        telegram_links=telegram_links,
        inbound=InboundService(database, conversations, telegram_links, clock),
        inbox=Inbox(database, clock),
        database=database,
        locks=locks,
        conversations=conversations,
        portal=portal,
        clock=clock,
        metrics=metrics,
    )


def _language_model(
    settings: Settings, offline: Understander, registry: CollectorRegistry
) -> tuple[Understander, Rephraser | None]:
    """OPENAI_API_KEY and COBRABOT_LLM_MODEL set: the LLM reads messages (the offline NLU is its fallback) and,
    with COBRABOT_LLM_REPHRASE, may reword replies. langchain is imported only here."""
    from bot.nlu.llm import LLMMetrics, llm_understander, openai_chat_model
    from bot.nlu.rephrase import Rephraser as LLMRephraser

    metrics = LLMMetrics(registry)
    understander = llm_understander(settings, offline, metrics)
    if not settings.llm_rephrase or settings.openai_api_key is None:
        return understander, None
    timeout = settings.llm_timeout_seconds
    model = openai_chat_model(settings.openai_api_key, settings.llm_model, timeout, json_mode=False)
    return understander, LLMRephraser(model, metrics, timeout=timeout)
