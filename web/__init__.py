"""The web app: HTML pages for the three roles, the REST API under /api/v1, and the `labshare` CLI.

Production: `gunicorn "web:create_app()"`.
"""

from web.app import create_app

__all__ = ["create_app"]
