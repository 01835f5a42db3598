"""Connection strings (DSNs): mask, label and scrub them so no password ever reaches output.

Two DSN syntaxes exist, both parsed by libpq: URIs (``postgresql://user:pw@host/db?k=v``)
and key=value strings (``host=h password='se cret'``). libpq decides what a DSN means, so
parsing goes through ``psycopg.conninfo``; the text-level work here only finds *where* a
secret sits, so that the rest of the DSN can be shown as the user wrote it.

When in doubt, hide more: a DSN libpq rejects is rendered as ``<unparseable DSN>`` rather
than echoed, and a URI password holding an unencoded ``@`` or ``/`` (which libpq misreads
into the host or dbname) is still hidden whole.
"""

from dbopt.dsn.describe import (
    IDENTITY_KEYWORDS,
    EnvironmentPart,
    PortableDsn,
    describe_target,
    environment_parts,
    portable_dsn,
    target_name,
)
from dbopt.dsn.expand import expand_env
from dbopt.dsn.mask import MASK, SECRET_KEYWORDS, UNPARSEABLE, mask_dsn, scrub, secrets_of

__all__ = [
    "IDENTITY_KEYWORDS",
    "MASK",
    "SECRET_KEYWORDS",
    "UNPARSEABLE",
    "EnvironmentPart",
    "PortableDsn",
    "describe_target",
    "environment_parts",
    "expand_env",
    "mask_dsn",
    "portable_dsn",
    "scrub",
    "secrets_of",
    "target_name",
]
