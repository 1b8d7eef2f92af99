"""Process settings from the environment (CORRAL_*), typed, validated and cached."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from corral.errors import ConfigError
from corral.tiktoken_offline import TiktokenUnavailableError, check_o200k_offline

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
# How prompt tokens are estimated (see corral.tokens.resolve_prompt_estimator).
TokenEstimator = Literal["auto", "script", "tiktoken"]


class Settings(BaseSettings):
    """Everything a corral process reads from its environment.

    Timing defaults are chosen so that a job lost with its worker comes back (after the broker's
    visibility timeout) only once no live worker can still be working on it: a prefetched job
    waits at most one job for its slot, then may back off for the longest retry delay, then
    runs one job: a wait for rate-limit capacity plus one request deadline.
    """

    model_config = SettingsConfigDict(env_prefix="CORRAL_", extra="ignore")

    redis_url: str = DEFAULT_REDIS_URL
    # The record store (batches, lines, records, cost ledger): a SQLAlchemy URL,
    # sqlite:///FILE or postgresql+psycopg://…; default a SQLite file in corral's data
    # directory ($XDG_DATA_HOME/corral/corral.db).
    store_url: str | None = None
    # How long a worker keeps retrying a record's write while the store is down (a restart)
    # before it gives the job back unacked.
    store_write_deadline_s: float = Field(default=120.0, gt=0)
    # How long a worker's store transaction waits for its other running lines' records to
    # share it (group commit); 0: never. A lone writer never waits. 10 ms made a gevent
    # worker's line cost 2.1 ms of CPU instead of 2.8 at 0 ms latency.
    store_commit_delay_s: float = Field(default=0.010, ge=0, le=1)
    # Processes that validate a submitted file of 16 MB or more (0: one per CPU; 1: none but
    # the submitting one).
    intake_processes: int = Field(default=0, ge=0)
    broker_url: str | None = None
    config: str | None = None
    # For rediss:// URLs (state and broker): the CA certificate (PEM) that signed the server's
    # certificate; unset: the system's CAs.
    redis_tls_ca_file: str | None = None
    # A client certificate, for a server that asks for one (`tls-auth-clients yes`).
    redis_tls_cert_file: str | None = None
    # The client certificate's key.
    redis_tls_key_file: str | None = None
    # Workers refuse to start on a Redis whose maxmemory-policy evicts keys (it would drop
    # corral's state silently) unless this is set (see corral.redis_durability).
    allow_evicting_redis: bool = False
    # How workers and the CLI write log lines: plain text, or one JSON object per line.
    log_format: Literal["text", "json"] = "text"
    # Celery's two INFO lines per job (received, succeeded): off by default, since writing
    # them costs a worker about a tenth of its throughput.
    log_each_job: bool = False
    # Prompt-token estimate for reservations, context-window checks and budget ceilings:
    # tiktoken's o200k_base when installed with its encoding file already cached, else
    # script-aware character ratios ("auto"); always the ratios ("script"); or tiktoken, and
    # refuse to start without it ("tiktoken"). Submitters and workers should agree.
    token_estimator: TokenEstimator = "auto"
    # Task events (received, started, succeeded) for Flower and `celery events`.
    task_events: bool = True
    # Celery's remote control (`celery inspect`/`control`, Flower's worker pages and buttons).
    remote_control: bool = True
    # How often `corral flower` asks the fleet for its live workers (see producer/flower_app).
    flower_refresh_s: float = Field(default=10.0, gt=0)

    request_deadline_s: float = 300.0
    max_retry_delay_s: float = 60.0
    retry_base_delay_s: float = 1.0
    max_attempts: int = 8
    visibility_timeout_s: float = 3600.0
    connect_timeout_s: float = 10.0

    # The fleet-wide buckets ("shared"), one bucket per worker process at the full limit
    # ("local", only to show what per-worker limiting does), or none ("off").
    rate_limiter: Literal["shared", "local", "off"] = "shared"
    # How long a batch's rows stay in the record store (and its last keys in Redis) after it
    # ends; the workers remove older ones.
    retention_s: int = 7 * 24 * 3600
    # How long a model's circuit stays open after it trips.
    circuit_open_s: float = 300.0
    # How often a worker looks for accepted lines that lost their message (see reconciler).
    reconcile_interval_s: float = 30.0
    rate_period_s: float = 60.0
    max_capacity_wait_s: float = 300.0
    # Lines of one model in the system at once (queued, running or waiting to retry), shared
    # fairly by the batches feeding it; the rest wait in the record store.
    queue_depth: int = Field(default=5000, ge=1)
    # How often each worker looks for open batches nobody is feeding (workers/feeding.py).
    feed_look_s: float = Field(default=2.0, gt=0)
    # The batch lane (providers' Batch APIs): how often a provider batch is polled.
    batch_poll_s: float = Field(default=60.0, gt=0)
    # The turnaround `--deadline` plans assume for a provider's Batch API until finished
    # batches of it have been seen (providers promise 24 h; most batches end far sooner).
    batch_turnaround_s: float = Field(default=3600.0, gt=0)

    @property
    def job_s(self) -> float:
        """The longest one attempt of a job can hold its slot: capacity wait + deadline."""
        return self.max_capacity_wait_s + self.request_deadline_s

    @property
    def effective_broker_url(self) -> str:
        """The Celery broker: CORRAL_BROKER_URL, else the Redis that holds corral's state."""
        return self.broker_url or self.redis_url

    @model_validator(mode="after")
    def _check_timing(self) -> Settings:
        for name in ("request_deadline_s", "max_retry_delay_s", "retry_base_delay_s",
                     "visibility_timeout_s", "connect_timeout_s", "rate_period_s",
                     "max_capacity_wait_s", "retention_s", "circuit_open_s",
                     "reconcile_interval_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"CORRAL_{name.upper()} must be positive")
        if self.max_attempts < 1:
            raise ValueError("CORRAL_MAX_ATTEMPTS must be at least 1")
        if self.retry_base_delay_s > self.max_retry_delay_s:
            raise ValueError("CORRAL_RETRY_BASE_DELAY_S must not exceed CORRAL_MAX_RETRY_DELAY_S")
        needed_s = 2 * self.job_s + self.max_retry_delay_s
        if self.visibility_timeout_s <= needed_s:
            raise ValueError(
                f"CORRAL_VISIBILITY_TIMEOUT_S={self.visibility_timeout_s:g} must exceed prefetch "
                "wait + longest retry delay + one job (capacity wait + request deadline): "
                f"2 x ({self.max_capacity_wait_s:g} + {self.request_deadline_s:g}) + "
                f"{self.max_retry_delay_s:g} = {needed_s:g} s, or a live job would be "
                "delivered twice"
            )
        return self

    @model_validator(mode="after")
    def _check_token_estimator(self) -> Settings:
        if self.token_estimator == "tiktoken":
            try:
                check_o200k_offline()
            except TiktokenUnavailableError as err:
                raise ValueError(f"CORRAL_TOKEN_ESTIMATOR=tiktoken: {err}") from None
        return self

    @model_validator(mode="after")
    def _check_tls(self) -> Settings:
        files = {"CORRAL_REDIS_TLS_CA_FILE": self.redis_tls_ca_file,
                 "CORRAL_REDIS_TLS_CERT_FILE": self.redis_tls_cert_file,
                 "CORRAL_REDIS_TLS_KEY_FILE": self.redis_tls_key_file}
        for name, path in files.items():
            if path and not Path(path).is_file():
                raise ValueError(f"{name}={path} is not a file")
        if self.redis_tls_key_file and not self.redis_tls_cert_file:
            raise ValueError("CORRAL_REDIS_TLS_KEY_FILE needs CORRAL_REDIS_TLS_CERT_FILE")
        uses_tls = any(url.startswith("rediss://")
                       for url in (self.redis_url, self.effective_broker_url))
        if any(files.values()) and not uses_tls:
            # Refuse rather than ignore: the operator believes the connection is encrypted.
            raise ValueError("CORRAL_REDIS_TLS_* files are set but neither CORRAL_REDIS_URL nor "
                             "CORRAL_BROKER_URL is a rediss:// URL")
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once from the environment.

    Raises:
        ConfigError: one line per refused value, without pydantic's decoration.
    """
    try:
        return Settings()
    except ValidationError as err:
        problems = []
        for error in err.errors():
            where = ".".join(str(part) for part in error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"CORRAL_{where.upper()}: {message}" if where else message)
        raise ConfigError("bad settings: " + "; ".join(problems)) from None
