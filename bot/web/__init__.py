"""The HTTP edge: Flask blueprints for the REST API, the debtor portal and operations endpoints.

Like bot/app.py, this package may import Flask; the rest of bot/ never does.
"""
