"""What every provider webhook does after its adapter parsed it: find the debtor, run the conversation,
apply delivery statuses. Framework-free: bot/web/webhooks.py calls it."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

from bot.conversations import ConversationService, Received, lock_key
from bot.dispatch import record_status
from bot.domain import Clock, InboundMessage, Parsed
from bot.identify import TelegramLinks, find_debtor, find_debtor_id, link_telegram_chat
from bot.store import Database
from bot.turn_batch import receive_batch

logger = logging.getLogger(__name__)


@dataclass
class InboundSummary:
    handled: int = 0
    duplicates: int = 0
    unknown_senders: int = 0
    statuses: int = 0


@dataclass
class InboundService:
    database: Database
    conversations: ConversationService
    telegram_links: TelegramLinks
    clock: Clock

    def handle(self, parsed: Parsed) -> InboundSummary:
        summary = InboundSummary()
        for message in parsed.messages:
            if message.metadata.get("start_payload"):
                # "/start <token>" opens the chat; its digits must not be read as an answer to anything.
                message = replace(message, text="/start")
            received = self._receive(message)
            if received is None:
                # Nothing is said to an unknown address: it might not be a debtor at all.
                logger.info("inbound on %s from an unknown address ignored", message.channel)
                summary.unknown_senders += 1
                continue
            summary.duplicates += received.duplicate
            summary.handled += not received.duplicate
        if parsed.statuses:
            with self.database.unit_of_work() as uow:
                for status in parsed.statuses:
                    summary.statuses += record_status(uow.session, status, self.clock())
                uow.commit()
        return summary

    def handle_batch(self, messages: Sequence[InboundMessage]) -> set[int]:
        """Run in one transaction the turns of the messages that can share one (bot/turn_batch.py); the indices
        of those it ran. The rest, and all of them if this raises, are for `handle`, one by one."""
        return set(receive_batch(self.conversations, messages))

    def _receive(self, message: InboundMessage) -> Received | None:
        if self.database.dialect == "postgresql" and not message.metadata.get("start_payload"):
            received = self._receive_in_one_transaction(message)
            if received is not None:
                return received
        debtor_id = self._debtor_of(message)
        return None if debtor_id is None else self.conversations.receive(message, debtor_id)

    def _receive_in_one_transaction(self, message: InboundMessage) -> Received | None:
        """Look the sender up in the conversation's own transaction: one connection and transaction a webhook.

        Safe on PostgreSQL only: the lookup takes no row locks, so waiting for the conversation lock inside this
        transaction cannot deadlock. On SQLite the transaction would already hold the database write lock
        (BEGIN IMMEDIATE) while waiting for a lock whose holder needs it.
        """
        with self.database.unit_of_work() as uow:
            # Kept referenced: the session's identity map is weak, and receive_in gets the debtor from it.
            debtor = uow.first_read(lambda session: find_debtor(session, message.channel, message.sender))
            if debtor is None:
                return None  # unknown, or a Telegram chat still to link: the general path decides
            with self.conversations.locks.hold(lock_key(debtor.id, message.channel)):
                return self.conversations.receive_in(uow, message, debtor.id)

    def _debtor_of(self, message: InboundMessage) -> int | None:
        with self.database.unit_of_work() as uow:
            debtor_id = uow.first_read(lambda session: find_debtor_id(session, message.channel, message.sender))
            if debtor_id is None and message.channel == "telegram":
                debtor_id = link_telegram_chat(uow.session, self.telegram_links, message)
                uow.commit()
            return debtor_id
