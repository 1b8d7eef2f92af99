"""`corral estimate`: tokens, money and least time under the limits, with no Redis involved."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

from click.testing import CliRunner

from producer.cli import cli


def write_lines(path: Path, count: int, extra: str = "") -> Path:
    lines = [json.dumps({"custom_id": f"e{i}", "method": "POST", "url": "/v1/chat/completions",
                         "body": {"model": "small", "messages": [
                             {"role": "user", "content": "abcdefgh"}]}})
             for i in range(count)]
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def test_estimate_counts_tokens_money_and_the_time_the_limits_need(tmp_path: Path,
                                                                    write_config) -> None:
    config = write_config(small_tpm=1000)
    batch = write_lines(tmp_path / "b.jsonl", 100)
    result = CliRunner().invoke(cli, ["--config", str(config), "estimate", str(batch),
                                      "--json", "--monthly", "10"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["batch_id"] is None
    total = data["total"]
    assert (total["requests"], total["input_tokens"], total["output_tokens"]) == (100, 200,
                                                                                   12800)
    # small: $0.1 in, $0.4 out per MTok; the output is the 128-token default ceiling
    assert Decimal(total["cost_usd"]) == (200 * Decimal("0.1") + 12800 * Decimal("0.4")) \
        / 1_000_000
    # 13,000 tokens against 1,000 a minute, the first 1,000 at once: 12 more minutes
    assert data["duration_s"] == 720.0
    assert data["scopes"]["sim:sim-small"] == {"requests": 100, "tokens": 13000,
                                               "least_s": 720.0}
    assert Decimal(data["monthly"]["cost_usd_per_year"]) == Decimal(total["cost_usd"]) * 120


def test_estimate_refuses_a_file_with_bad_lines_like_submit(tmp_path: Path,
                                                            write_config) -> None:
    batch = write_lines(tmp_path / "b.jsonl", 3, extra="{oops\n")
    result = CliRunner().invoke(cli, ["--config", str(write_config()), "estimate", str(batch)])
    assert result.exit_code == 2
    assert "line 4: malformed JSON" in result.stderr
    skipped = CliRunner().invoke(cli, ["--config", str(write_config()), "estimate",
                                       str(batch), "--skip-invalid", "--json"])
    assert json.loads(skipped.stdout)["total"]["requests"] == 3
