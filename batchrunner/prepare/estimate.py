"""
``--dry-run``: what a job will send, cost and take, worked out without sending.

Prompt tokens are counted exactly and offline (``tokens.TokenCounter``); completion
tokens are bounded by ``max_tokens`` (or ``max_completion_tokens``) × ``n``, the most
the service may bill; the cost uses the price table (``prices:`` in the settings,
built-in list prices otherwise), and the duration is the least the given
``--tpm``/``--rpm`` budgets allow, charging each request as Azure's limiter does.
Rows whose request repeats another row's, or whose answer is in ``--cache``, are
not sent, so they are not counted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

from batchrunner.config.settings import Settings, price_name
from batchrunner.prepare.builder import completion_allowance
from batchrunner.prepare.identity import run_key
from batchrunner.prepare.tokens import TokenCounter
from batchrunner.records import Api, Request

log = logging.getLogger("batchrunner")


@dataclass
class Estimate:
    """The figures of a dry run."""

    rows: int = 0
    #: Rows whose identical request another row sends (answered once, shared).
    duplicates: int = 0
    #: Rows answered from the ``--cache`` directory.
    cached: int = 0
    requests: int = 0
    prompt_tokens: int = 0
    #: The most completion tokens the requests may produce; None when unbounded.
    completion_tokens: int | None = 0
    #: What Azure's rate limiter charges: prompt + max_tokens × n a request.
    charged_tokens: int = 0
    #: US dollars at most (at least, when completions are unbounded); None: no price.
    cost: float | None = None
    #: Seconds the budgets allow at the fastest; None without --tpm/--rpm.
    seconds: float | None = None
    #: Batch mode: what the same requests would cost online (``cost`` is batch's).
    online_cost: float | None = None


def estimate(
    requests: Iterable[Request],
    settings: Settings,
    cached: Callable[[Request], bool] | None,
) -> Estimate:
    """
    The estimate for sending *requests* under *settings*; *cached* tells the
    requests that ``--cache`` already holds an answer for.
    """
    result = Estimate()
    seen: set[int] = set()
    share = settings.dedupe
    for request in requests:
        result.rows += 1
        if share:
            key = hash(run_key(request))
            if key in seen:
                result.duplicates += 1
                continue
            seen.add(key)
        if cached is not None and cached(request):
            result.cached += 1
            continue
        result.requests += 1
        result.prompt_tokens += request.prompt_tokens
        result.charged_tokens += request.charged_tokens
    _bound_completions(result, settings)
    result.cost = _cost(result, settings.price_for(None))
    if settings.mode == "batch":
        result.online_cost = _cost(result, settings.price_for(None, batch=False))
    result.seconds = expected_duration(result.charged_tokens, result.requests, settings)
    return result


def _cost(result: Estimate, price: tuple[float, float] | None) -> float | None:
    if price is None:
        return None
    completion = result.completion_tokens or 0
    return (result.prompt_tokens * price[0] + completion * price[1]) / 1e6


def unbounded(settings: Settings) -> bool:
    """True when nothing caps a chat answer's length (no max_tokens)."""
    request = settings.request
    return settings.api is Api.CHAT and not (
        request.get("max_tokens") or request.get("max_completion_tokens")
    )


def _bound_completions(result: Estimate, settings: Settings) -> None:
    if unbounded(settings):
        result.completion_tokens = None
    else:
        allowance = completion_allowance(settings.api, settings.request)
        result.completion_tokens = allowance * result.requests


def report(
    result: Estimate, settings: Settings, *, source: str, done: int, output: str
) -> str:
    """The dry run's lines for a person; also logged as an ``estimate`` event."""
    log.info(
        "estimate: %d requests for %d rows, %d prompt tokens",
        result.requests,
        result.rows,
        result.prompt_tokens,
        extra={"event": "estimate", **asdict(result)},
    )
    counter = TokenCounter(settings.model or settings.deployment)
    lines = [
        f"input            {source}: valid",
        f"rows to send     {result.rows:,} ({done:,} already done in {output})",
    ]
    if result.duplicates:
        lines.append(
            f"identical rows   {result.duplicates:,} repeat another row's request:"
            " sent once, the answer shared"
        )
    if settings.cache:
        lines.append(f"from the cache   {result.cached:,} rows ({settings.cache})")
    counted = (
        f"exact, {counter.encoding_name}"
        if counter.exact
        else "estimated at 4 characters a token: set 'model:' for exact counts"
    )
    lines += [
        f"requests         {result.requests:,}",
        f"prompt tokens    {result.prompt_tokens:,} ({counted})",
        "completion bound " + _completion_text(result, settings),
        f"quota charge     {result.charged_tokens:,} tokens (prompt + max_tokens × n,"
        " as Azure's limiter counts)",
        "price            " + _price_text(settings),
        "expected cost    " + _cost_text(result, result.cost),
    ]
    if settings.mode == "batch":
        lines += [
            "online price     " + _price_text(settings, batch=False),
            "online cost      " + _cost_text(result, result.online_cost),
            f"batch files      {_files_text(result.requests, settings)}",
            "expected time    within 24 h (the Batch API's completion window)",
        ]
    else:
        lines.append("expected time    " + _time_text(result, settings))
    return "\n".join(lines)


def _files_text(requests: int, settings: Settings) -> str:
    files = -(-requests // settings.batch_max_requests)
    return (
        f"at least {files:,} input file{'s' if files != 1 else ''}"
        f" (at most {settings.batch_max_requests:,} requests and"
        f" {settings.batch_max_bytes / 1e6:,.0f} MB a file)"
    )


def _completion_text(result: Estimate, settings: Settings) -> str:
    if result.completion_tokens is None:
        return "unbounded: set request.max_tokens to bound answers (and the cost)"
    allowance = completion_allowance(settings.api, settings.request)
    return f"{result.completion_tokens:,} ({allowance:,} a request: max_tokens × n)"


def _price_text(settings: Settings, *, batch: bool | None = None) -> str:
    name = price_name(settings, None, batch=batch)
    if name is None:
        model = (settings.model or settings.deployment or "").lower()
        return f"none for model {model or '(not set)'!r}: add it under 'prices:'"
    inp, out = settings.price_table(batch)[name]
    source = settings.sources.get(f"prices.{name}", "built-in default")
    kind = "Batch API, " if settings.mode == "batch" and batch is None else ""
    return f"{name}: ${inp:g} in, ${out:g} out per 1M tokens ({kind}{source})"


def _cost_text(result: Estimate, cost: float | None) -> str:
    if cost is None:
        return "unknown: no price for this model"
    if result.completion_tokens is None:
        return f"≥ {money(cost)} (the prompts alone; answers are unbounded)"
    return f"≤ {money(cost)}"


def money(dollars: float) -> str:
    """*dollars* to the cent, with more decimals for small sums."""
    if dollars >= 1:
        return f"${dollars:,.2f}"
    return f"${dollars:.4f}" if dollars >= 0.01 else f"${dollars:.6f}"


def _time_text(result: Estimate, settings: Settings) -> str:
    if result.seconds is None:
        return "no --tpm/--rpm given: as fast as the service answers"
    budgets = [
        f"--{name} {value:,}"
        for name, value in (("tpm", settings.tpm), ("rpm", settings.rpm))
        if value
    ]
    return f"≥ {duration_text(result.seconds)} under {' and '.join(budgets)}"


def duration_text(seconds: float) -> str:
    """*seconds* for a person: ``42.0 s``, ``12 min 5 s``, ``3 h 20 min``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def expected_duration(tokens: int, requests: int, settings: Settings) -> float | None:
    """Seconds the quota allows for *tokens* in *requests*, or None when unlimited."""
    bounds = []
    if settings.tpm:
        bounds.append(tokens / settings.tpm * 60)
    if settings.rpm:
        bounds.append(requests / settings.rpm * 60)
    return max(bounds) if bounds else None
