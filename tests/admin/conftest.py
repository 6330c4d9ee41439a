"""Fixtures every console test shares: the app with the console, and signed-in managers and agents."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from bot.services import Services
from bot.store import Database
from tests.admin import console_app, signed_in


@pytest.fixture
def console(services: Services) -> Flask:
    return console_app(services)


@pytest.fixture
def boss(console: Flask, db: Database) -> FlaskClient:
    """Marta, a manager, signed in."""
    return signed_in(console, db, "marta@cobrabot.example", "manager")


@pytest.fixture
def agent(console: Flask, db: Database) -> FlaskClient:
    """Ana, an agent, signed in."""
    return signed_in(console, db, "ana@cobrabot.example", "agent")
