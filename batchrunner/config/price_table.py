"""
The default price table: US dollars per million tokens (input, output) for
common models, online and at the Batch API's discount. ``prices:`` in the
settings overrides them for an agreement or a region.
"""

from __future__ import annotations

#: Prices in US dollars per million tokens (input, output), for cost estimates and
#: ``--max-cost``. Azure's list prices for global deployments when this was written;
#: override them under ``prices:`` in the settings for your agreement and region.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-5-nano": (0.05, 0.40),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5": (1.25, 10.00),
    "o4-mini": (1.10, 4.40),
    "o3-mini": (1.10, 4.40),
    "gpt-35-turbo-instruct": (1.50, 2.00),
    "gpt-35-turbo": (0.50, 1.50),
    "gpt-4": (30.00, 60.00),
    "text-embedding-3-small": (0.02, 0.0),
    "text-embedding-3-large": (0.13, 0.0),
    "text-embedding-ada-002": (0.10, 0.0),
}


#: Batch API prices are about half the online ones (Global / Data Zone Batch).
BATCH_DISCOUNT = 0.5


def batch_price(online: tuple[float, float]) -> tuple[float, float]:
    """The Batch API price implied by the *online* (input, output) price."""
    return online[0] * BATCH_DISCOUNT, online[1] * BATCH_DISCOUNT


#: The Batch API's prices, where the model has a batch deployment type.
DEFAULT_BATCH_PRICES: dict[str, tuple[float, float]] = {
    model: batch_price(price)
    for model, price in DEFAULT_PRICES.items()
    if not model.startswith("text-embedding")  # no batch for embeddings on Azure
}
