"""The baseline for bench/webhook.py: a bare Flask app with one route that reads the form and answers TwiML.

Served by gunicorn with the same worker settings as Cobrabot, so the ratio between the two isolates what the
webhook path itself costs (signature, dedupe, engine, transaction, outbox) from HTTP and WSGI overhead.
"""

from __future__ import annotations

from flask import Flask, Response, request

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'

app = Flask(__name__)


@app.post("/webhooks/twilio/sms")
def twilio_sms() -> Response:
    # Touch the form like the real route does, so parsing the body is part of the baseline.
    request.form.to_dict()
    return Response(EMPTY_TWIML, mimetype="text/xml")


@app.get("/healthz")
def healthz() -> Response:
    return Response("ok", mimetype="text/plain")
