"""
The settings' sections that are groups of their own: how input rows become
requests (``input:``) and how to authenticate (``auth:``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: The ways ``auth:`` may name a credential; ``auto`` picks one from the environment.
AUTH_KINDS = (
    "auto", "api_key", "entra", "managed_identity", "workload_identity", "azure_cli",
    "chain",
)  # fmt: skip


#: The kinds a ``chain:`` may list, tried in its order.
CHAIN_KINDS = ("managed_identity", "workload_identity", "azure_cli")


@dataclass(frozen=True, slots=True)
class InputSettings:
    """How input rows become requests: column names, template, system message."""

    id_column: str = "id"
    messages_column: str = "messages"
    prompt_column: str = "prompt"
    system_column: str = "system"
    #: ``str.format`` template over the row's columns, used when a row has neither
    #: messages nor a prompt, e.g. ``"Summarise: {text}"``.
    template: str | None = None
    #: A system message for every row that has no ``system`` column of its own.
    system: str | None = None
    #: A Jinja2 template file that builds the prompt of every row without messages
    #: (few-shot examples, loops); see ``batchrunner.prepare.templates``.
    template_file: str | None = None


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """How to authenticate: the ``kind``, its ``chain``, a user-assigned identity."""

    kind: str = "auto"
    #: For ``kind: chain``: the kinds tried in turn, e.g. managed identity, then az.
    chain: tuple[str, ...] = ()
    #: The client id of a user-assigned managed identity (or of the workload
    #: identity's app); azure-identity's ``AZURE_CLIENT_ID`` when not set.
    client_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The plain values, for printing."""
        chain = list(self.chain)
        return {"kind": self.kind, "chain": chain, "client_id": self.client_id}
