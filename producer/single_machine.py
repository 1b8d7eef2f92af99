"""`run` and `demo`: one machine, start what is missing, run a file to the end, clean up."""

from __future__ import annotations

import os
import secrets
import shutil
import tomllib
from importlib import resources
from pathlib import Path

import click

from corral.config import example_config_text, parse_config
from producer.costs import batch_cost
from producer.local_stack import LocalStack
from producer.results import errors_path_for, write_outputs
from producer.session import EXIT_FAILED_LINES, Session, submit_batch
from producer.views import cost_table, stdout_console

DEMO_BATCH_NAME = "demo_batch.jsonl"
EXAMPLE_BASE_URL = "http://127.0.0.1:8100/v1"
EXAMPLE_KEY_ENV = "CORRAL_GATEWAY_KEY"


def run_file(session: Session, stack: LocalStack, file: Path, output: Path | None, *,
             processes: int, concurrency: int, skip_invalid: bool,
             deadline: str | None = None) -> None:
    """Submit `file`, run it on local workers, write outputs, print the cost table."""
    session.use_redis(stack.ensure_redis(session.settings.redis_url))
    stack.env.update(CORRAL_REDIS_URL=session.settings.redis_url,
                     CORRAL_CONFIG=str(Path(session.config.source).resolve()))
    batch_id = submit_batch(session, file, skip_invalid=skip_invalid, deadline=deadline)
    queues = sorted({model.queue for model in session.config.models.values()})
    stack.start_workers(queues=queues, processes=processes, concurrency=concurrency)
    batch = session.batch(batch_id).wait(progress=True)
    output = output or file.with_name(f"{file.stem}.results.jsonl")
    errors = errors_path_for(output)
    counts = write_outputs(session.store, batch_id, output, errors)
    stdout_console().print(cost_table(batch_cost(session.store, batch_id, session.config),
                                      title=f"Cost of {batch_id}"))
    click.echo(f"corral: batch {batch_id} {batch['status']}: {counts.results} results in "
               f"{output}, {counts.errors} errors in {errors}", err=True)
    if batch["request_counts"]["failed"]:
        raise SystemExit(EXIT_FAILED_LINES)


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Results file (default: FILE's name with .results.jsonl).")
@click.option("--workers", "processes", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--concurrency", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--skip-invalid", is_flag=True)
@click.option("--deadline", default=None, metavar="DURATION",
              help="As submit --deadline: the providers' Batch APIs where the deadline "
              "allows.")
@click.pass_obj
def run(session: Session, file: Path, output: Path | None, processes: int, concurrency: int,
        skip_invalid: bool, deadline: str | None) -> None:
    """Run FILE on this machine, starting Redis and workers if needed."""
    with LocalStack() as stack:
        run_file(session, stack, file, output, processes=processes, concurrency=concurrency,
                 skip_invalid=skip_invalid, deadline=deadline)


@click.command()
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("corral-demo"), show_default=True,
              help="Where the demo batch, its config and its results are written.")
@click.option("--latency-ms", type=click.IntRange(min=0), default=40, show_default=True,
              help="The simulator's fixed latency per call.")
@click.pass_obj
def demo(session: Session, out_dir: Path, latency_ms: int) -> None:
    """Run the packaged demo batch end to end against the bundled simulator."""
    out_dir.mkdir(parents=True, exist_ok=True)
    batch_file = out_dir / DEMO_BATCH_NAME
    with resources.files("corral").joinpath("data", DEMO_BATCH_NAME).open("rb") as src, \
            open(batch_file, "wb") as dst:
        shutil.copyfileobj(src, dst)
    key = secrets.token_hex(16)
    with LocalStack() as stack:
        config_text = example_config_text()
        models = parse_config(tomllib.loads(config_text)).models.values()
        sim_args = ["--api-key", key, "--latency-ms", str(latency_ms),
                    "--latency-jitter-ms", str(latency_ms // 4)]
        for model in models:
            sim_args += ["--model", f"{model.upstream}:rpm={model.rpm},tpm={model.tpm},"
                                    f"ctx={model.context_window},"
                                    f"max_tokens={model.default_max_tokens}"]
        base_url = stack.start_simulator(sim_args)
        config_path = out_dir / "corral.toml"
        config_path.write_text(config_text.replace(EXAMPLE_BASE_URL, f"{base_url}/v1"),
                               encoding="utf-8")
        session.use_config(str(config_path))
        # The key reaches the workers through their environment only.
        stack.env[EXAMPLE_KEY_ENV] = key
        os.environ.pop(EXAMPLE_KEY_ENV, None)
        run_file(session, stack, batch_file, None, processes=1, concurrency=32,
                 skip_invalid=False)
