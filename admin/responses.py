"""How every console action answers: done or refused, both back on the page it came from (303)."""

from __future__ import annotations

from collections.abc import Callable

from flask import abort, flash, redirect
from flask.typing import ResponseReturnValue

from admin.services import ConsoleError, NotAllowed, NotFound


def run_action(page: str, action: Callable[[], object], done: str) -> ResponseReturnValue:
    """Run one action; a refusal is shown on `page` and changes nothing (the action's transaction rolls back)."""
    try:
        action()
    except NotFound:
        abort(404)
    except NotAllowed:
        abort(403)
    except ConsoleError as exc:
        flash(str(exc), "error")
        return redirect(page, code=303)
    flash(done, "info")
    return redirect(page, code=303)
