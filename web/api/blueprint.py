"""The /api/v1 blueprint that every API module adds its routes to."""

from flask_smorest import Blueprint

blp = Blueprint("api_v1", __name__, url_prefix="/api/v1", description="LabShare API v1")
