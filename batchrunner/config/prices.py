"""
Which price an answer is charged at, for the summary, the spend cap and the spend
earlier runs recorded.

The settings name the model a run pays for (``model:``, else the deployment name);
the model an answer reports is only a hint. Azure reports dated versions
(``gpt-4o-mini-2024-07-18``), and gateways and simulators report names of their
own (``gpt-3.5-turbo`` behind a ``gpt-4o-mini`` deployment). Pricing by the
answer's name would count such answers as free, and a spend cap that counts
nothing holds nothing.
"""

from __future__ import annotations

import re

from batchrunner.config.settings import Settings

Price = tuple[float, float]

#: What follows a model's name in a dated version of it: ``-2024-07-18``,
#: ``-0613``, ``-1106-preview``; not ``-mini`` or ``-16k``, which are other models.
_VERSION = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{4})(?:-[a-z0-9.]+)*")


def is_version_of(answered: str, named: str) -> bool:
    """Whether the model *answered* is *named* itself, or a dated version of it."""
    answered, named = answered.lower(), named.lower()
    if not named or not answered.startswith(named):
        return False
    rest = answered[len(named) :]
    return not rest or _VERSION.fullmatch(rest) is not None


def answer_price(settings: Settings, answered: str | None) -> Price | None:
    """
    The (input, output) USD per million tokens of an answer that reported the model
    *answered*: the price of the model the settings name, or of the answer's model
    where that is a priced, dated version of it (a ``prices:`` entry for one
    version). When the settings name no priced model, the answer's model is all
    there is to go by (``--max-cost`` refuses to start in that case).
    """
    named = settings.price_for(None)
    if named is None:
        return settings.price_for(answered) if answered else None
    model = settings.model or settings.deployment or ""
    if answered and is_version_of(answered, model):
        return settings.price_for(answered) or named
    return named


def cost_of(price: Price | None, prompt_tokens: int, completion_tokens: int) -> float:
    """US dollars for the tokens at *price* (0 without one)."""
    if price is None:
        return 0.0
    return (prompt_tokens * price[0] + completion_tokens * price[1]) / 1e6
