"""`corral report BATCH -o FILE.html`: gather a batch's timeline, costs and top calls from the
record store, and write them as one self-contained page (producer/report_html.py)."""

from __future__ import annotations

from pathlib import Path

import click
import redis

from corral.config import CorralConfig
from corral.errors import ConfigError
from corral.store import Store
from corral.store.timeline import batch_timeline
from producer.batches import read_batch
from producer.costs import batch_cost
from producer.report_html import ReportData, render_report
from producer.session import Session


def gather(store: Store, batch_id: str, config: CorralConfig | None = None,
           client: redis.Redis | None = None) -> ReportData:
    """What the page shows, read from the store (with `client`, the calls in flight now are
    in the cost table as unsettled; with `config`, the models' TPM limits and unsettled calls
    priced at their worst case).

    Raises:
        BatchNotFoundError: no such batch.
    """
    batch = read_batch(store, batch_id, client)
    cost = batch_cost(store, batch_id, config, client)
    timeline = batch_timeline(store.engine, batch_id, int(batch["created_at"]))
    tpm = {name: model.tpm for name, model in config.models.items()} if config else {}
    return ReportData(batch, cost.as_json(), timeline, tpm)


@click.command()
@click.argument("batch_id")
@click.option("-o", "--output", required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="The HTML file to write.")
@click.pass_obj
def report(session: Session, batch_id: str, output: Path) -> None:
    """One self-contained HTML page: charts over time, the cost table, the slowest and the
    most expensive lines."""
    try:
        config = session.config
    except ConfigError:
        config = None  # the store has the data; only the TPM lines and unsettled prices go
    page = render_report(gather(session.store, batch_id, config, session.redis))
    output.write_text(page, encoding="utf-8")
    click.echo(f"corral: wrote report of {batch_id} to {output}", err=True)
