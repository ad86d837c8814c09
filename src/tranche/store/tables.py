"""The store's own tables: who owns each singleton job (see :mod:`tranche.store.ownership`)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Integer, String, Table

from tranche.store.schema import metadata

job_owners = Table(
    "job_owners",
    metadata,
    Column("job", String(128), primary_key=True),
    # The fencing token: raised by one on every change of owner, never lowered.
    Column("epoch", BigInteger, nullable=False),
    Column("owner", String(255), nullable=True),  # None: released, free for the next claimant
    Column("acquired_at", DateTime(timezone=True), nullable=True),
    # Milliseconds since 1970 on the database's clock, so that hosts whose clocks disagree still agree.
    Column("heartbeat_ms", BigInteger, nullable=False),
    Column("expires_ms", BigInteger, nullable=False),
    # PostgreSQL: the server process of the session holding the job's advisory lock.
    Column("backend_pid", Integer, nullable=True),
)
