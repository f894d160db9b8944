"""
A fast, faithful Azure OpenAI simulator on loopback.

It answers ``/openai/deployments/{deployment}/chat/completions``, ``/completions``
and ``/embeddings`` the way Azure does on the wire (bodies, error bodies, headers,
429s with ``retry-after``/``retry-after-ms``), so the real ``AsyncAzureOpenAI``
client can be tested, demonstrated (``--simulate``) and benchmarked without a
network or a bill. Answers are deterministic functions of the request.

Scripted faults make tests deterministic: the k-th request whose prompt text is
``"… [[sim:429,500,reset]] …"`` gets the k-th fault (a 429, then a 500, then a
dropped connection) and normal answers once the list is used up. Fault names are
in ``FAULTS``.

Rate limits use one sliding window of ``window`` seconds: ``rpm * window / 60``
requests and ``tpm * window / 60`` tokens fit in it. As on Azure,
``x-ratelimit-limit-tokens`` is the per-minute TPM and ``x-ratelimit-limit-requests``
the per-window count; both ``remaining`` headers say what still fits in the window.

A request with a ``json_schema`` ``response_format`` gets a deterministic JSON
answer that matches the schema (``BADJSON`` / ``BADSCHEMA`` in the prompt break it,
see ``batchrunner.simulator.schemagen``).

It also serves the Files and Batches API (``/openai/files``, ``/openai/batches``
and their ``/openai/v1/`` forms): a batch runs in the background at
``SimConfig.batch_lines_per_second``, each line answered as an online request
would be, into output and error files in no particular order. Knobs expire or
fail the n-th batch, set an enqueued-token quota, and ``Gate`` holds one call
so a test can kill a client at an exact step.

Run it alone with ``python -m batchrunner.simulator --port 8000``.

A request flows through the modules in this order: ``app`` reads it and checks
auth, api-version and deployment (``config``), draws a fault or asks
``limiter`` for room, has ``content`` plan and build the answer in ``wire``'s
shapes, notes it in the ``ledger`` and answers when the latency is up;
``server`` runs it all in a thread or from the command line. A Files or Batches
call passes ``service``'s checks to ``files`` or ``batches``; a batch's life is
in ``batchrun``, its lines are checked and answered by ``batchlines``.
"""

from batchrunner.simulator.app import STATS_PATH, Waker, create_app
from batchrunner.simulator.config import FAULTS, SimConfig
from batchrunner.simulator.gates import GATED_CALLS, Gate
from batchrunner.simulator.ledger import Ledger, LedgerEntry
from batchrunner.simulator.server import SimulatorServer, main

__all__ = [
    "FAULTS",
    "GATED_CALLS",
    "STATS_PATH",
    "Gate",
    "Ledger",
    "LedgerEntry",
    "SimConfig",
    "SimulatorServer",
    "Waker",
    "create_app",
    "main",
]
