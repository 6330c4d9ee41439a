"""Conversation flows as data (YAML), their schema and loader; default message templates per locale."""

from pathlib import Path

FLOWS_DIR = Path(__file__).parent
TEMPLATES_DIR = FLOWS_DIR / "templates"
