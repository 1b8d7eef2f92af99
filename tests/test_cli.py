"""The command line's start-up: heavy modules load only for the commands that need them."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from producer.cli import cli


def test_the_cli_starts_without_the_exporters_and_checks_libraries() -> None:
    # A fresh interpreter: this test process may have imported them already.
    probe = ("import sys, producer.cli; "
             "print(sorted(m for m in ('prometheus_client', 'httpx') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True).stdout.strip()
    assert loaded == "[]"


def test_a_lazy_command_is_listed_and_runs() -> None:
    runner = CliRunner()
    listing = runner.invoke(cli, ["--help"])
    assert listing.exit_code == 0
    assert "exporter" in listing.output and "submit" in listing.output
    exporter_help = runner.invoke(cli, ["exporter", "--help"])
    assert exporter_help.exit_code == 0
    assert "/metrics" in exporter_help.output


def test_exit_1_is_only_for_failed_lines() -> None:
    from corral.errors import BatchNotFoundError, CorralError
    from corral.store.intake import IntakeRefusedError
    from producer.local_stack import ProcessFailedError
    from producer.session import exit_code_for

    assert exit_code_for(IntakeRefusedError("batch_1", "UNIQUE constraint failed")) == 2
    assert exit_code_for(ProcessFailedError("worker-1 did not start")) == 3
    assert exit_code_for(BatchNotFoundError("no batch")) == 4
    assert exit_code_for(CorralError("anything else explained")) == 2
