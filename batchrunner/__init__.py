"""
batchrunner: push a file of prompts through Azure OpenAI, resumably.

``batchrunner.read_results(path)`` gives a results file as a pandas DataFrame.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "read_results"]


def __getattr__(name: str) -> Any:
    # pandas loads only for notebooks that ask for it, not for every run.
    if name == "read_results":
        from batchrunner.results.frame import read_results

        return read_results
    msg = f"module 'batchrunner' has no attribute {name!r}"
    raise AttributeError(msg)
