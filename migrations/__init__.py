"""Alembic migrations for Cobrabot's database (run with `cobrabot db upgrade`)."""
