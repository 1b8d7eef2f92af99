"""Brings a store's schema to the newest Alembic revision, from code (no alembic.ini)."""

from __future__ import annotations

from importlib import resources

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine


def alembic_config(engine: Engine) -> Config:
    """Alembic's config for corral's migrations, bound to `engine`."""
    config = Config()
    config.set_main_option("script_location",
                           str(resources.files("corral.store").joinpath("migrations")))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine) -> None:
    """Create or update every table (idempotent; safe from many processes at once on
    PostgreSQL, where Alembic's version table is updated in the migration's transaction)."""
    command.upgrade(alembic_config(engine), "head")
