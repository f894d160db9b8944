"""The simulator's rate-limit header sets and its charge factor, over the real SDK."""

from __future__ import annotations

import subprocess
import sys

import openai
import pytest

from batchrunner.simulator import SimConfig, SimulatorServer

CHAT = "gpt-4o-mini"
LIMIT_HEADERS = ("x-ratelimit-limit-requests", "x-ratelimit-limit-tokens")
REMAINING_HEADERS = ("x-ratelimit-remaining-requests", "x-ratelimit-remaining-tokens")


async def _headers(config: SimConfig) -> dict[str, str]:
    with SimulatorServer(config) as sim:
        async with openai.AsyncAzureOpenAI(
            azure_endpoint=sim.url, api_key="sim-key", api_version="2024-10-21"
        ) as client:
            raw = await client.chat.completions.with_raw_response.create(
                model=CHAT, messages=[{"role": "user", "content": "hi"}]
            )
    return dict(raw.headers)


@pytest.mark.parametrize(
    ("mode", "limits", "remaining"),
    [("full", True, True), (True, True, True), ("remaining", False, True),
     ("none", False, False), (False, False, False)],
)  # fmt: skip
async def test_each_header_set_is_sent(
    mode: bool | str, limits: bool, remaining: bool
) -> None:
    """full, remaining or none (True/False as before) pick the x-ratelimit-* sent."""
    headers = await _headers(SimConfig(rate_headers=mode))
    assert all((name in headers) is limits for name in LIMIT_HEADERS)
    assert all((name in headers) is remaining for name in REMAINING_HEADERS)


async def test_the_charge_factor_counts_above_the_estimate() -> None:
    """A charge factor of 2 takes twice the tokens off what remains."""
    exact = await _headers(SimConfig(tpm=60_000, window=10))
    doubled = await _headers(SimConfig(tpm=60_000, window=10, charge_factor=2.0))
    spent = 10_000 - int(exact["x-ratelimit-remaining-tokens"])
    assert 10_000 - int(doubled["x-ratelimit-remaining-tokens"]) == pytest.approx(
        2 * spent, abs=1
    )


def test_an_unknown_header_set_is_refused() -> None:
    """A mode that is not full, remaining or none fails at once, not per answer."""
    with pytest.raises(ValueError, match="remaining"):
        SimulatorServer(SimConfig(rate_headers="some")).start()
    run = subprocess.run(
        [sys.executable, "-m", "batchrunner.simulator", "--rate-headers", "some"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert run.returncode == 2
    assert "full" in run.stderr
