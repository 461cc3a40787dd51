"""The application factory."""

from __future__ import annotations

import logging
from datetime import timedelta

from flask import Flask
from flask_login import LoginManager
from flask_wtf.csrf import CSRFProtect
from sqlalchemy.engine import Engine

from core.accounts.models import User
from core.db import make_engine, make_sessionmaker
from core.i18n import TRANSLATIONS_DIR
from core.settings import Settings, load_settings
from web import database, errors, i18n
from web.database import get_db

csrf = CSRFProtect()
login_manager = LoginManager()


def create_app(settings: Settings | None = None, *, engine: Engine | None = None, testing: bool = False) -> Flask:
    settings = settings or load_settings()
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=settings.secret_key,
        TESTING=testing,
        LABSHARE_SETTINGS=settings,
        BABEL_DEFAULT_LOCALE=settings.default_locale,
        BABEL_DEFAULT_TIMEZONE=settings.timezone,
        BABEL_TRANSLATION_DIRECTORIES=str(TRANSLATIONS_DIR),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.session_cookie_secure,
        REMEMBER_COOKIE_SECURE=settings.session_cookie_secure,
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session
        MAX_CONTENT_LENGTH=16 * 1024 * 1024,
        API_TITLE="LabShare API",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api/v1",
        OPENAPI_JSON_PATH="openapi.json",
    )
    logging.basicConfig(level=settings.log_level.upper())

    engine = engine or make_engine(settings.effective_database_url)
    app.extensions["labshare.engine"] = engine
    database.init_app(app, make_sessionmaker(engine))

    csrf.init_app(app)
    i18n.init_app(app)
    _init_login(app)
    errors.init_app(app)

    from web import calendar, health, photos, templating
    from web.account.routes import bp as account_bp
    from web.admin.routes import bp as admin_bp
    from web.api import init_api
    from web.auth.routes import bp as auth_bp
    from web.booking.manage_routes import bp as booking_manage_bp
    from web.booking.routes import bp as booking_bp
    from web.devices.routes import bp as devices_manage_bp
    from web.finance.routes import bp as finance_bp
    from web.home.routes import bp as home_bp
    from web.imports.routes import bp as imports_bp
    from web.live.routes import bp as live_bp
    from web.manage.routes import bp as manage_bp
    from web.metrics import bp as metrics_bp
    from web.register.routes import bp as register_bp
    from web.reports.routes import bp as reports_bp

    templating.init_app(app)
    for blueprint in (auth_bp, home_bp, account_bp, admin_bp, manage_bp, booking_bp, booking_manage_bp, health.bp,
                      calendar.bp, photos.bp, devices_manage_bp, live_bp, metrics_bp, finance_bp, register_bp,
                      imports_bp, reports_bp):
        app.register_blueprint(blueprint)
    init_api(app)
    _security_headers(app)
    return app


def _security_headers(app: Flask) -> None:
    # Every script and asset comes from this app (no CDN), so the policy can be strict about sources.
    policy = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
              "font-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'")

    @app.after_request
    def _headers(response):
        response.headers.setdefault("Content-Security-Policy", policy)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response


def _init_login(app: Flask) -> None:
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message = None  # the sign-in page explains itself
    login_manager.session_protection = "strong"

    @login_manager.user_loader
    def _load_user(user_id: str) -> User | None:
        if not user_id.isdigit():
            return None
        user = get_db().get(User, int(user_id))
        return user if user is not None and user.active else None
