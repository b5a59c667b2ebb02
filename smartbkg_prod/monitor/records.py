"""Monitor tables on the shared :class:`~smartbkg_prod.store.Base` (created by ``Store``).

``monitor_backend_states`` keeps the last state a backend reported for each attempt
(``held`` with its hold reason, ``running`` at a site, ...). It is kept apart from
``attempts.state`` on purpose: the campaign driver owns that column and uses it to find
attempts left running; a poll by the monitor must never change what the driver resumes.
"""

from __future__ import annotations

from sqlalchemy import Float, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from smartbkg_prod.store import Base


class BackendStateRow(Base):
    __tablename__ = "monitor_backend_states"
    __table_args__ = (UniqueConstraint("campaign_id", "job_index", "attempt"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    campaign_id: Mapped[str] = mapped_column(String(128), index=True)
    job_index: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer)
    backend: Mapped[str] = mapped_column(String(32))
    backend_job_id: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16), index=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    native_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    native_reason: Mapped[str] = mapped_column(Text, default="")
    site: Mapped[str | None] = mapped_column(String(128), nullable=True)
    observed_at: Mapped[float] = mapped_column(Float)
