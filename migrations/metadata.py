"""The complete schema: importing every package's models fills `Base.metadata`."""

# Each import registers its tables on Base.metadata; nothing else is used from them.
import billing.models
import billing.voucher_models  # noqa: F401
import booking.models  # noqa: F401
import core.accounts.models
import core.audit
import core.mail  # noqa: F401
import devices.models  # noqa: F401
import telemetry.models  # noqa: F401
from core.db import Base

target_metadata = Base.metadata


# Objects the migrations create with SQL that the models cannot express portably (PostgreSQL only);
# autogenerate and the schema test must not report them as missing from the models.
DATABASE_ONLY_OBJECTS = frozenset({"ix_resource_search_text_trgm", "ix_reservation_live_window"})


def include_object(obj, name, type_, reflected, compare_to) -> bool:
    return name not in DATABASE_ONLY_OBJECTS
