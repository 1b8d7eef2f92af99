"""`corral flower`: Flower on corral's broker, with basic auth from the environment."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import click

from corral.errors import ConfigError
from producer.session import Session

AUTH_ENV = "FLOWER_BASIC_AUTH"


def flower_command(*, port: int | None, address: str | None, extra: tuple[str, ...] = ()) \
        -> list[str]:
    """The command line of Flower on corral's app (Flower reads `FLOWER_*` itself)."""
    command = [sys.executable, "-m", "celery", "-A", "producer.flower_app", "flower"]
    if port is not None:
        command.append(f"--port={port}")
    if address is not None:
        command.append(f"--address={address}")
    return [*command, *extra]


@click.command(context_settings={"ignore_unknown_options": True})
@click.option("--port", type=click.IntRange(min=0, max=65535), default=None,
              help="Port to listen on (default: $FLOWER_PORT, else 5555).")
@click.option("--address", default=None,
              help="Address to listen on (default: $FLOWER_ADDRESS, else all interfaces).")
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def flower(session: Session, port: int | None, address: str | None,
           flower_args: tuple[str, ...]) -> None:
    """Run Flower on corral's broker; FLOWER_BASIC_AUTH=user:password is required.

    Extra arguments go to Flower as they are (e.g. `--persistent=True`).
    """
    if importlib.util.find_spec("flower") is None:
        raise ConfigError("Flower is not installed here: pip install 'corral[flower]'")
    if not os.environ.get(AUTH_ENV):
        raise ConfigError(f"set {AUTH_ENV}=user:password (comma-separated for several users): "
                          "Flower shows every worker and task of the fleet")
    # The Flower process loads the same config to list every model's queue.
    os.environ["CORRAL_CONFIG"] = str(Path(session.config.source).resolve())
    command = flower_command(port=port, address=address, extra=flower_args)
    os.execv(command[0], command)
