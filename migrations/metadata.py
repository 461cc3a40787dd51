"""The complete schema: importing every package's models fills `Base.metadata`."""

import booking.models  # noqa: F401
import core.accounts.models
import core.audit  # noqa: F401
from core.db import Base

target_metadata = Base.metadata
