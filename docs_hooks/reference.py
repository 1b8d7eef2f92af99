"""MkDocs hook: fills the reference tables of the docs from the code at build time.

A page asks for a table with a marker on a line of its own:

    <!-- generated: settings -->       corral.settings.Settings (the CORRAL_* environment)
    <!-- generated: config -->         the corral.toml models of corral.config
    <!-- generated: simulator -->      the flags of `corral sim` (simulator.__main__)

It also blanks the "Sentinel.UNSET" defaults that mkdocs-click writes for click 8.3's options.

Descriptions come from each field's `description`, else the comment above the field (or at
the end of its line) in the source, else FALLBACK below; a field with none of them is a build
warning, so `mkdocs build --strict` fails until it is described.
"""

from __future__ import annotations

import ast
import functools
import inspect
import io
import logging
import re
import textwrap
import tokenize
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

log = logging.getLogger("mkdocs.hooks.reference")

MARKER = re.compile(r"^<!-- generated: (?P<name>[a-z-]+) -->$", re.MULTILINE)

# Descriptions of the fields the source leaves without a comment. The source wins as soon as
# it describes a field, so these go stale silently only if the meaning changes: keep them short.
FALLBACK: dict[str, str] = {
    "Settings.redis_url": (
        "Redis: what is in flight (queues, leases, buckets, live counters), and the Celery "
        "broker unless `CORRAL_BROKER_URL` is set. Passwords, ACL users and `rediss://` work "
        "(see Operations, Security)."),
    "Settings.broker_url": (
        "The Celery broker, when it is not the Redis of `CORRAL_REDIS_URL` (it may be "
        "RabbitMQ, `amqp://`); unset: the Redis URL."),
    "Settings.config": (
        "The corral.toml to use, when `--config` is not given; unset: `./corral.toml`."),
    "Settings.request_deadline_s": (
        "Total wall-clock limit of one provider call (httpx's timeouts are per phase); also "
        "the workers' soft shutdown timeout."),
    "Settings.max_retry_delay_s": "Longest backoff between two attempts of a line.",
    "Settings.retry_base_delay_s": (
        "First backoff ceiling; it doubles per attempt (full jitter), is never below the "
        "server's `Retry-After` and never above `CORRAL_MAX_RETRY_DELAY_S`."),
    "Settings.max_attempts": (
        "Attempts before a retryable failure becomes an error record; also how many times a "
        "line may start without finishing before it ends as `attempts_exhausted`."),
    "Settings.visibility_timeout_s": (
        "When the broker delivers again a job that was taken and never acknowledged (its "
        "worker died). Checked at start-up against the other timings (see below)."),
    "Settings.connect_timeout_s": "Connect timeout of a provider call.",
    "Settings.rate_period_s": 'The "minute" of RPM and TPM (tests shorten it).',
    "Settings.max_capacity_wait_s": (
        "Longest a job waits in its slot for rate-limit capacity before it goes back to its "
        "queue (no attempt spent)."),
    "ProviderConfig.name": "The table's key, `[providers.NAME]`; not written in the table.",
    "ProviderConfig.base_url": (
        "The provider's OpenAI-compatible API, up to and including `/v1`; corral POSTs to "
        "`{base_url}/chat/completions`. Operator config only, never from a request line."),
    "ProviderConfig.api_key_env": (
        "The NAME of the environment variable that holds the key, read by the workers at "
        "call time."),
    "ProviderConfig.api_key_file": (
        "A file that holds the key (e.g. a mounted secret), read at call time when the "
        "variable of `api_key_env` is unset or empty."),
    "ProviderConfig.accounting": (
        "How the provider counts tokens against its limits. `openai`: prompt estimate + "
        "output ceiling, charged at admission. `anthropic` is accepted but not built yet: "
        "it is charged the `openai` way."),
    "ProviderConfig.headers": (
        'Extra HTTP headers sent with every call, e.g. `{ "OpenAI-Organization" = "org-1" }`.'),
    "ModelConfig.name": (
        'The table\'s key, `[models."NAME"]`: the name requests use in `body.model`, and the '
        "queue `corral.NAME`."),
    "ModelConfig.provider": "The `[providers.*]` table that serves this model.",
    "ModelConfig.upstream": (
        "The model id sent upstream, and the rate-limit scope (provider, upstream): two names "
        "with one upstream share one pair of buckets, the smaller limits winning. Empty: the "
        "name."),
    "ModelConfig.aliases": "Other names a request may use for this model.",
    "ModelConfig.rpm": "Requests per minute, for the whole fleet.",
    "ModelConfig.tpm": "Tokens per minute, for the whole fleet.",
    "ModelConfig.context_window": (
        "Tokens; a line whose estimated prompt exceeds it is refused at submit."),
    "ModelConfig.default_max_tokens": (
        "The output ceiling reserved for a request that sets neither `max_tokens` nor "
        "`max_completion_tokens`."),
    "ModelConfig.tags": "Labels that a router rule's `tag` picks from.",
    "ModelConfig.price": "What the provider charges you, $ per million tokens (see Price).",
    "ModelConfig.list_price": (
        "The maker's list price, for the savings report; unset: `price`."),
    "Price.input": "$ per million prompt tokens.",
    "Price.output": "$ per million completion tokens.",
    "Price.cached_input": "$ per million cached prompt tokens; unset: `input`.",
    "RouterConfig.default": "The model (or alias) of a line `auto` that no rule matches.",
    "RouterConfig.rules": "The `[[router.rules]]`, tried in order; the first match wins.",
    "RouterRule.name": "Shown in each line's route decision; unset: `rule-N`.",
    "RouterRule.model": "The model (or alias) this rule sends to; or set `tag`.",
    "RouterRule.tag": (
        "Instead of a model: the cheapest model with this tag (by the estimated cost of this "
        "request) whose context window and TPM fit it."),
    "RouterRule.keywords": (
        "Case-insensitive substrings of the messages' text; any one suffices."),
    "RouterRule.regex": "Searched in the messages' text, case-insensitive.",
    "RouterRule.metadata": "Must equal the line's `metadata`, field by field.",
    "RouterRule.min_prompt_tokens": "The estimated prompt must be at least this.",
    "RouterRule.max_prompt_tokens": "The estimated prompt must be at most this.",
    "CorralConfig.providers": "`[providers.NAME]` tables.",
    "CorralConfig.models": '`[models."NAME"]` tables.',
    "CorralConfig.router": "The `[router]` table.",
}

# Help for the simulator's flags that argparse leaves without (or with too short a) help.
SIMULATOR_FALLBACK: dict[str, str] = {
    "--model": (
        "serve a model (repeatable): `NAME:rpm=R,tpm=T,ctx=C,max_tokens=M`, every option "
        "optional; without any `--model`, every model name is served unlimited"),
    "--limiter": (
        "how the simulator enforces RPM/TPM: a continuous token bucket that starts full, or a "
        "strict sliding window"),
    "--latency-ms": "fixed latency of every call, in ms",
    "--latency-per-token-ms": "latency added per completion token, in ms",
    "--latency-jitter-ms": "latency varies uniformly by up to this much either way, in ms",
}

# Defaults that the model does not show: keys filled in from the TOML table's key or position.
DEFAULT_TEXT: dict[str, str] = {
    "ProviderConfig.name": "the key",
    "ModelConfig.name": "the key",
    "ModelConfig.upstream": "the name",
    "RouterRule.name": "`rule-N`",
}

# Fields that are not configuration: set by corral itself.
SKIP = {"CorralConfig.source"}


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    """Replace each marker with its generated table."""

    def render(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in GENERATORS:
            log.warning("%s: unknown generated table %r", page.file.src_path, name)
            return match.group(0)
        return GENERATORS[name]()

    return MARKER.sub(render, markdown)


# mkdocs-click 0.9 prints click 8.3's marker for "no default" as a default; blank it.
UNSET_DEFAULT_CELL = "<td><code>Sentinel.UNSET</code></td>"


def on_page_content(html: str, **_: Any) -> str:
    """Blank the default cells mkdocs-click fills with click's UNSET marker."""
    return html.replace(UNSET_DEFAULT_CELL, "<td></td>")


def settings_table() -> str:
    """One row per CORRAL_* variable."""
    from corral.settings import Settings

    prefix = Settings.model_config.get("env_prefix", "")
    rows = ["| variable | type | default | meaning |", "|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        rows.append(f"| `{prefix}{name.upper()}` | {type_text(field)} | "
                    f"{default_text(field)} | {describe(Settings, name, field)} |")
    return "\n".join(rows)


def config_tables() -> str:
    """One table per corral.toml model, each under a heading named for where it goes."""
    from corral import config

    sections = [
        ("`[providers.NAME]`", config.ProviderConfig),
        ('`[models."NAME"]`', config.ModelConfig),
        ("`price`, `list_price` (inline tables of a model)", config.Price),
        ("`[router]`", config.RouterConfig),
        ("`[[router.rules]]`", config.RouterRule),
        ("The whole file", config.CorralConfig),
    ]
    out = []
    for title, model in sections:
        out.append(f"### {title}\n")
        doc = model.__dict__.get("__doc__")  # its own, not BaseModel's
        if doc and model is not config.CorralConfig:  # its docstring speaks of `source`
            out.append(inspect.cleandoc(doc) + "\n")
        out.append(f"Model: `corral.config.{model.__name__}`.\n")
        rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
        for name, field in model.model_fields.items():
            if f"{model.__name__}.{name}" in SKIP:
                continue
            default = DEFAULT_TEXT.get(f"{model.__name__}.{name}") or default_text(field)
            rows.append(f"| `{name}` | {type_text(field)} | {default} | "
                        f"{describe(model, name, field)} |")
        out.append("\n".join(rows) + "\n")
    return "\n".join(out)


def simulator_table() -> str:
    """One row per flag of `python -m simulator` (what `corral sim` runs)."""
    from simulator.__main__ import build_parser

    rows = ["| flag | default | meaning |", "|---|---|---|"]
    for action in build_parser()._actions:
        if not action.option_strings or action.dest == "help":
            continue
        flag = ", ".join(f"`{option}`" for option in action.option_strings)
        if action.metavar:
            flag += f" `{action.metavar}`"
        elif action.choices:
            flag += " " + " or ".join(f"`{choice}`" for choice in action.choices)
        default = "" if action.default in (None, []) else f"`{action.default}`"
        meaning = SIMULATOR_FALLBACK.get(action.option_strings[0]) or action.help or ""
        if not meaning:
            log.warning("simulator flag %s has no help", action.option_strings[0])
        meaning = meaning.replace("|", "&#124;")
        rows.append(f"| {flag} | {default} | {meaning} |")
    return "\n".join(rows)


GENERATORS = {"settings": settings_table, "config": config_tables,
              "simulator": simulator_table}


def describe(model: type[BaseModel], name: str, field: FieldInfo) -> str:
    """The field's description: its `description`, its source comment, else FALLBACK."""
    key = f"{model.__name__}.{name}"
    text = field.description or source_comments(model).get(name) or FALLBACK.get(key)
    if not text:
        log.warning("%s has no description: give it a comment in the source (or an entry in "
                    "docs_hooks/reference.py FALLBACK)", key)
        return ""
    return text.replace("|", "&#124;")


@functools.cache
def source_comments(model: type[BaseModel]) -> dict[str, str]:
    """Field name -> the comment lines right above its assignment in the class body (no blank
    line between), or the comment at the end of its line."""
    source = textwrap.dedent(inspect.getsource(model))
    lines = source.splitlines()
    inline: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT and lines[token.start[0] - 1].strip() != token.string:
            inline[token.start[0]] = token.string.lstrip("#").strip()
    comments: dict[str, str] = {}
    body = ast.parse(source).body[0]
    assert isinstance(body, ast.ClassDef)
    for node in body.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above: list[str] = []
        index = node.lineno - 2  # the line above, 0-based
        while index >= 0 and lines[index].strip().startswith("#"):
            above.insert(0, lines[index].strip().lstrip("#").strip())
            index -= 1
        text = " ".join(above) or inline.get(node.lineno, "")
        if text:
            comments[node.target.id] = sentence(text)
    return comments


def sentence(text: str) -> str:
    """Capitalised, ending with a full stop."""
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def type_text(field: FieldInfo) -> str:
    """The annotation in words, with its bounds (`> 0`)."""
    text = annotation_text(field.annotation)
    bounds = []
    for item in field.metadata:
        for attribute, sign in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤")):
            value = getattr(item, attribute, None)
            if value is not None:
                bounds.append(f"{sign} {value}")
    return text + (f", {', '.join(bounds)}" if bounds else "")


def annotation_text(annotation: Any) -> str:
    """`str or none`, `"text" or "json"`, `list of str`, `table of str to str`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " or ".join(f'`"{arg}"`' if isinstance(arg, str) else f"`{arg}`" for arg in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("none" if arg is type(None) else annotation_text(arg) for arg in args)
    if origin is tuple:
        return f"list of {annotation_text(args[0])}"
    if origin is dict:
        return f"table of {annotation_text(args[0])} to {annotation_text(args[1])}"
    if annotation is typing.Any:
        return "any"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"table ({annotation.__name__})"
    if isinstance(annotation, type):
        return {"Decimal": "number", "float": "number", "str": "string", "int": "integer",
                "bool": "boolean"}.get(annotation.__name__, annotation.__name__)
    return str(annotation)


def default_text(field: FieldInfo) -> str:
    """The default as written in TOML or the environment; `required` when there is none."""
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float):
        return f"`{value:g}`"
    if isinstance(value, tuple | list):
        return "`[]`" if not value else f"`{list(value)}`"
    if isinstance(value, dict):
        return "`{}`" if not value else f"`{value}`"
    if value == "":
        return '`""`'
    return f"`{value}`"
