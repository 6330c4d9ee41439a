"""REST API v1 for ERPs and CRMs (bearer token). Being built: see issue 2."""

from flask import Blueprint

blueprint = Blueprint("api", __name__)
