"""The `corral` command line (docs/cli.md): answers on stdout, the rest on stderr."""

from __future__ import annotations

import importlib
import json
import os
import sys
from contextlib import suppress
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, cast

import click
import redis

from corral import __version__
from corral.batch_end import expire_if_due
from corral.errors import ConfigError, CorralError
from corral.logs import configure_cli_logging
from corral.settings import get_settings
from producer import lifecycle
from producer.batches import list_batches, read_batch
from producer.durations import parse_duration_s
from producer.estimate import Estimate
from producer.flower import flower
from producer.results import errors_path_for, write_outputs
from producer.session import (
    EXIT_BUG,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    Session,
    exit_code_for,
    finish_submit,
    report_rejected,
    run_feeder,
    submit_batch,
)
from producer.single_machine import demo, run
from producer.submit import check_file
from producer.views import (
    batches_table,
    cost_table,
    plans_table,
    provider_batches_table,
    stdout_console,
    wait_for_batch,
)
from producer.watch import watch_batches

# Commands whose modules are imported only when the command runs (or help lists it): the
# exporter needs prometheus_client, which every other command (a feeder too) would pay for.
LAZY_COMMANDS = {"exporter": "producer.exporter:exporter", "report": "producer.report:report"}


class CorralGroup(click.Group):
    """Maps corral's errors to one stderr line and the exit codes of docs/concepts.md; loads
    LAZY_COMMANDS when they are asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *LAZY_COMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY_COMMANDS:
            module, _, name = LAZY_COMMANDS[cmd_name].partition(":")
            return cast(click.Command, getattr(importlib.import_module(module), name))
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (CorralError, redis.RedisError, ValueError) as err:
            click.echo(f"corral: {err}", err=True)
            ctx.exit(exit_code_for(err))
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as err:
            # No traceback, ever: a bug gets one line, and the traceback only when asked for.
            if os.environ.get("CORRAL_DEBUG"):
                raise
            click.echo(f"corral: unexpected error ({type(err).__name__}: {err}); this is a "
                       "bug in corral, please report it (CORRAL_DEBUG=1 shows the traceback)",
                       err=True)
            ctx.exit(EXIT_BUG)


def parse_usd(text: str | None) -> Decimal | None:
    """A positive dollar amount, exactly as written."""
    if text is None:
        return None
    try:
        value = Decimal(text.lstrip("$"))
    except InvalidOperation:
        value = Decimal(-1)
    if not value.is_finite() or value <= 0:
        raise ValueError(f"--max-cost {text!r} is not a positive amount of dollars")
    return value


@click.group(cls=CorralGroup)
@click.version_option(__version__, prog_name="corral")
@click.option("--config", "config_path", envvar="CORRAL_CONFIG", default=None,
              help="corral.toml to use (else $CORRAL_CONFIG, else ./corral.toml).")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """Run large LLM batches on a Celery fleet, inside rate limits, with exact costs."""
    ctx.obj = Session(config_path)
    with suppress(ConfigError):  # a command that needs the settings says what is wrong
        configure_cli_logging(get_settings().log_format)


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--wait", is_flag=True, help="Block until the batch ends; exit 1 if lines failed.")
@click.option("--skip-invalid", is_flag=True, help="Run the valid lines; file the bad ones as "
              "invalid_request errors.")
@click.option("--completion-window", default="24h", show_default=True)
@click.option("--max-cost", "max_cost", default=None, metavar="USD",
              help="Spending cap for the batch; lines that would pass it end as "
              "budget_exceeded.")
@click.option("--deadline", default=None, metavar="DURATION",
              help="Finish within DURATION (e.g. 6h): lines whose provider has a Batch API "
              "run there at half price where the deadline allows, hedged live near it.")
@click.option("--json", "as_json", is_flag=True, help="Print the batch object as JSON.")
@click.pass_obj
def submit(session: Session, file: Path, wait: bool, skip_invalid: bool,
           completion_window: str, max_cost: str | None, deadline: str | None,
           as_json: bool) -> None:
    """Validate FILE, route every line, and enqueue the batch."""
    parse_duration_s(completion_window)
    batch_id = submit_batch(session, file, skip_invalid=skip_invalid,
                            completion_window=completion_window,
                            max_cost_usd=parse_usd(max_cost), deadline=deadline)
    finish_submit(session, batch_id, wait=wait, as_json=as_json)


@cli.command()
@click.argument("batch_id", required=False)
@click.option("--watch", is_flag=True, help="Follow the batch (or every active batch) live "
              "until it ends; exit 1 if lines failed. With --json: wait, then print it.")
@click.option("--interval", "interval_s", type=click.FloatRange(min=0.05), default=1.0,
              show_default=True, help="Seconds between --watch refreshes.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def status(session: Session, batch_id: str | None, watch: bool, interval_s: float,
           as_json: bool) -> None:
    """Show one batch, or a table of all batches."""
    if watch and not as_json:
        raise SystemExit(watch_batches(session, batch_id, interval_s))
    if batch_id is None:
        batches = list_batches(session.store)
        if as_json:
            click.echo(json.dumps(batches))
        else:
            stdout_console().print(batches_table(batches))
        return
    expire_if_due(session.redis, session.store, session.feeder(batch_id), batch_id)
    batch = (wait_for_batch(session.store, batch_id) if watch
             else session.batch(batch_id).status())
    if as_json:
        click.echo(json.dumps(batch))
        return
    console = stdout_console()
    console.print(batches_table([batch]))
    if batch.get("provider_batches"):
        console.print(provider_batches_table(batch))


@cli.command()
@click.argument("batch_id")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Results file (OpenAI batch output JSONL).")
@click.option("--errors", "errors_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Error records file (default: OUTPUT with .errors before the extension).")
@click.option("--order", type=click.Choice(["completion", "input"]), default="completion",
              show_default=True)
@click.option("--with-route", is_flag=True, help="Add each line's route decision as \"route\".")
@click.pass_obj
def results(session: Session, batch_id: str, output: Path, errors_path: Path | None,
            order: str, with_route: bool) -> None:
    """Write what has finished so far (also mid-batch)."""
    read_batch(session.store, batch_id)
    expire_if_due(session.redis, session.store, session.feeder(batch_id), batch_id)
    errors_path = errors_path or errors_path_for(output)
    counts = write_outputs(session.store, batch_id, output, errors_path,
                           input_order=order == "input", with_route=with_route)
    click.echo(f"corral: wrote {counts.results} results to {output} and {counts.errors} "
               f"errors to {errors_path}", err=True)


@cli.command()
@click.argument("batch_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def cost(session: Session, batch_id: str, as_json: bool) -> None:
    """Tokens and money per model, with savings against list prices."""
    report = session.batch(batch_id).cost_report()
    if as_json:
        click.echo(json.dumps(report.as_json()))
    else:
        stdout_console().print(cost_table(report, title=f"Cost of {batch_id}"))


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True)
@click.option("--skip-invalid", is_flag=True, help="Estimate the valid lines only.")
@click.option("--monthly", type=click.IntRange(min=1), default=None,
              help="Also project N such batches a month, per month and per year.")
@click.option("--deadline", default=None, metavar="DURATION",
              help="Plan lines across the providers' Batch APIs and live calls to finish "
              "within DURATION (e.g. 6h), and show the plan beside all-live and all-batch.")
@click.option("--max-cost", "max_cost", default=None, metavar="USD",
              help="With --deadline: the budget the plan keeps to.")
@click.pass_obj
def estimate(session: Session, file: Path, as_json: bool, skip_invalid: bool,
             monthly: int | None, deadline: str | None, max_cost: str | None) -> None:
    """Tokens, money and time for FILE with the routing applied, before spending anything."""
    deadline_s = None if deadline is None else parse_duration_s(deadline)
    result = Estimate(session.config)
    check = check_file(file, session.config, report_rejected, result.add)
    if check.rejected and not skip_invalid:
        click.echo(f"corral: {check.rejected} bad line(s) in {file} (--skip-invalid "
                   "estimates the valid lines)", err=True)
        raise SystemExit(EXIT_USAGE)
    data = result.as_json(monthly)
    if deadline_s is not None:
        data["deadline_s"] = deadline_s
        data["plans"] = result.plans(deadline_s, session.plan_turnaround_s,
                                     parse_usd(max_cost), session.hedge_margin_s)
        data["live_only"] = result.live_only_reasons()
    if as_json:
        click.echo(json.dumps(data))
        return
    console = stdout_console()
    console.print(cost_table(result.report, title=f"Estimate for {file} (output at the "
                                                  "requested max_tokens ceiling)"))
    console.print(f"least time under the limits: {result.duration_s:,.0f} s "
                  "(plus provider latency)")
    if monthly is not None:
        projection = data["monthly"]
        console.print(f"x {monthly} batches a month: ${projection['cost_usd_per_month']} a "
                      f"month, ${projection['cost_usd_per_year']} a year; saves "
                      f"${projection['savings_usd_per_month']} a month against list prices")
    if deadline is not None:
        console.print(plans_table(data["plans"], title=f"Lanes for a deadline of {deadline}"))
        for reason, count in data["live_only"].items():
            console.print(f"{count:,} line(s) must run live: {reason}")


@cli.command()
@click.pass_obj
def check(session: Session) -> None:
    """Check the config, Redis and its durability, and every provider (with the key the
    workers would use)."""
    from producer.check import check_all  # httpx loads for this command only

    findings = list(check_all(session.config, session.settings.redis_url))
    for finding in findings:
        click.echo(str(finding))
    if not all(finding.ok for finding in findings):
        raise SystemExit(EXIT_UNREACHABLE)


@cli.command()
@click.argument("batch_id")
@click.pass_obj
def cancel(session: Session, batch_id: str) -> None:
    """Stop a batch: unstarted lines end as batch_cancelled; finished results are kept."""
    ended = session.batch(batch_id).cancel()
    batch = read_batch(session.store, batch_id)
    click.echo(f"corral: {batch_id} {batch['status']}: {ended} lines cancelled without a "
               "provider call", err=True)
    click.echo(batch["status"])


@cli.command()
@click.argument("batch_id")
@click.pass_obj
def resume(session: Session, batch_id: str) -> None:
    """Queue again the lines with no record that lost their message (all of them, from the
    record store, if Redis lost the batch), and top the queues up; the workers feed the rest."""
    requeued = lifecycle.resume(session.redis, session.store, session.app, session.config,
                                batch_id)
    feeder = session.feeder(batch_id)
    fed = 0
    with feeder.holding_lock():  # one feeder at a time: the workers feed too
        while sent := feeder.feed_once():
            fed += sent
    click.echo(f"corral: {batch_id}: {requeued} lines in flight without a record sent again, "
               f"{fed} fed; {feeder.state().unfed} wait in the record store for the workers' "
               "feeding", err=True)
    click.echo(requeued + fed)


@cli.command()
@click.argument("batch_id")
@click.pass_obj
def feed(session: Session, batch_id: str) -> None:
    """Send a batch's lines from the record store as the workers drain (the submitting
    process and every worker do this by themselves)."""
    click.echo(run_feeder(session, batch_id))


@cli.command()
@click.argument("batch_id")
@click.option("--codes", default=None, help="Comma-separated error codes to re-run "
              "(default: every failed line that has a stored request).")
@click.pass_obj
def retry(session: Session, batch_id: str, codes: str | None) -> None:
    """Run failed lines again, e.g. after fixing a key; old records go to the history."""
    wanted = [code.strip() for code in codes.split(",")] if codes else None
    retried = session.batch(batch_id).retry(wanted)
    click.echo(f"corral: {batch_id}: {retried.enqueued} failed lines enqueued again", err=True)
    if retried.not_stored:
        click.echo(f"corral: {batch_id}: {retried.not_stored} failed lines left as they are: "
                   "they were refused at submit, so no request was stored; to run them, fix "
                   "and submit them again (the errors file of `corral results` lists them)",
                   err=True)
    click.echo(retried.enqueued)


@cli.command()
@click.argument("batch_id")
@click.pass_obj
def delete(session: Session, batch_id: str) -> None:
    """Remove a batch's records from the store and its state from Redis now (both also go
    CORRAL_RETENTION_S after it ends)."""
    lifecycle.delete(session.redis, session.store, batch_id)
    click.echo(f"corral: deleted {batch_id}", err=True)


@cli.command()
@click.option("--models", default=None, help="Comma-separated models whose queues to consume "
              "(default: all configured).")
@click.option("--concurrency", type=click.IntRange(min=1), default=32, show_default=True,
              help="Task slots (threads or greenlets) in this process.")
@click.option("--pool", type=click.Choice(["threads", "gevent"]), default="threads",
              show_default=True, help="gevent needs the gevent package (pip install "
              "'corral[gevent]'); it is the faster pool when calls are short.")
@click.pass_obj
def worker(session: Session, models: str | None, concurrency: int, pool: str) -> None:
    """Run one worker process on the models' queues (logs `ready` once it consumes)."""
    from producer.local_stack import worker_command

    config = session.config
    names = [m.strip() for m in models.split(",")] if models else sorted(config.models)
    unknown = [name for name in names if config.resolve(name) is None]
    if unknown:
        raise ConfigError(f"unknown model(s) for --models: {', '.join(unknown)}")
    queues = sorted({config.resolve(name).queue for name in names})  # type: ignore[union-attr]
    os.environ["CORRAL_CONFIG"] = str(Path(config.source).resolve())
    command = worker_command(queues=queues, concurrency=concurrency,
                             name=f"corral-{os.getpid()}", pool=pool)
    os.execv(command[0], command)


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                               "help_option_names": []})
@click.argument("sim_args", nargs=-1, type=click.UNPROCESSED)
def sim(sim_args: tuple[str, ...]) -> None:
    """Run the provider simulator (`corral sim --help` for its flags)."""
    os.execv(sys.executable, [sys.executable, "-m", "simulator", *sim_args])


cli.add_command(run)
cli.add_command(demo)
cli.add_command(flower)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="corral")
