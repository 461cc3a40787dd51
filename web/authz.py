"""Authorisation for pages: who may see what, decided in one place per rule."""

from __future__ import annotations

from functools import wraps

from flask import abort
from flask_login import current_user, login_required

from core.accounts.models import Role


def roles_required(*roles: Role):
    """Signed-in users holding any of `roles`; others get 403 (anonymous users go to sign in)."""

    def decorate(view):
        @wraps(view)
        @login_required
        def wrapper(*args, **kwargs):
            if not current_user.has_role(*roles):
                abort(403)
            return view(*args, **kwargs)

        return wrapper

    return decorate
