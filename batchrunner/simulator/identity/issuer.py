"""
The token issuer behind the fake identity endpoints: lifetimes, failure
injection, revocation, validation for the simulator, and a ledger of requests.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

#: The resource Azure OpenAI tokens are for (the scope without ``/.default``).
COGNITIVE_SERVICES = "https://cognitiveservices.azure.com"
APP_SERVICE_API_VERSION = "2019-08-01"
IMDS_API_VERSION = "2018-02-01"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TENANT_ID = "72f988bf-0000-4000-8000-00000000f00d"
CLIENT_ID = "5e29463d-0000-4000-8000-0000000c11e7"
FAKE_AZ = "az"


@dataclass
class Issued:
    """One token the issuer gave out."""

    token: str = field(repr=False)
    resource: str
    expires_on: int
    source: str
    client_id: str
    revoked: bool = False


@dataclass(frozen=True)
class Hit:
    """One request to a token endpoint, and how it was answered."""

    time: float
    source: str
    status: int


class IdentityLedger:
    """The token requests the endpoints received; safe to read from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.hits: list[Hit] = []

    def record(self, source: str, status: int) -> None:
        """Note one request to *source* answered with *status*."""
        with self._lock:
            self.hits.append(Hit(time.time(), source, status))

    def count(self, source: str | None = None, status: int | None = None) -> int:
        """Requests received, optionally only from *source* or answered *status*."""
        with self._lock:
            return sum(
                1
                for hit in self.hits
                if (source is None or hit.source == source)
                and (status is None or hit.status == status)
            )

    def fetches(self, source: str | None = None) -> int:
        """Tokens handed out (requests answered 200)."""
        return self.count(source, 200)

    def by_status(self) -> Counter[int]:
        """Requests per answer status."""
        with self._lock:
            return Counter(hit.status for hit in self.hits)


class TokenIssuer:
    """Makes, remembers, refuses and revokes tokens; thread-safe."""

    def __init__(
        self,
        lifetime: float = 3600.0,
        *,
        identity_header: str | None = None,
        federated_token: str | None = None,
        client_ids: tuple[str, ...] = (CLIENT_ID,),
    ) -> None:
        #: Seconds a new token lives; may be changed at any time.
        self.lifetime = lifetime
        #: The secret App Service hands its apps (``IDENTITY_HEADER``).
        self.identity_header = identity_header or secrets.token_urlsafe(16)
        #: The service account token in ``AZURE_FEDERATED_TOKEN_FILE``.
        self.federated_token = federated_token or "eyJhbGciOiJSUzI1NiJ9.fake-sa." + (
            secrets.token_urlsafe(24)
        )
        #: User-assigned identities that exist; others get App Service's 400.
        self.client_ids = client_ids
        #: Whether IMDS answers with tokens (a VM with an identity) or a 400.
        self.imds_identity = False
        self.ledger = IdentityLedger()
        self._lock = threading.Lock()
        self._issued: dict[str, Issued] = {}
        self._fail_status: int | None = None
        self._fail_left: int | None = None
        self._fail_skip = 0

    # --- failures ---------------------------------------------------------------

    def fail(self, status: int = 500, times: int | None = None, skip: int = 0) -> None:
        """
        Answer token requests with *status*: the next *times* of them (all, when
        None), after letting *skip* more through.
        """
        with self._lock:
            self._fail_status = status
            self._fail_left = times
            self._fail_skip = skip

    def recover(self) -> None:
        """Hand out tokens again."""
        with self._lock:
            self._fail_status = self._fail_left = None
            self._fail_skip = 0

    def take_failure(self) -> int | None:
        """The status to fail this request with, or None to serve it."""
        with self._lock:
            status = self._fail_status
            if status is None:
                return None
            if self._fail_skip > 0:
                self._fail_skip -= 1
                return None
            if self._fail_left is not None:
                self._fail_left -= 1
                if self._fail_left <= 0:
                    self._fail_status = self._fail_left = None
            return status

    # --- tokens -----------------------------------------------------------------

    def issue(self, resource: str, source: str, client_id: str = CLIENT_ID) -> Issued:
        """A new token for *resource*, living ``lifetime`` seconds from now."""
        token = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.sim." + secrets.token_urlsafe(32)
        # Whole seconds, as every token endpoint reports them.
        expires_on = int(time.time() + self.lifetime)
        issued = Issued(token, resource.rstrip("/"), expires_on, source, client_id)
        with self._lock:
            self._issued[token] = issued
        return issued

    def validate(self, token: str, resource: str = COGNITIVE_SERVICES) -> bool:
        """Whether *token* was issued for *resource*, is unexpired and not revoked."""
        with self._lock:
            issued = self._issued.get(token)
        return (
            issued is not None
            and not issued.revoked
            and issued.resource == resource
            and time.time() < issued.expires_on
        )

    def revoke(self, token: str | None = None) -> int:
        """Revoke *token*, or every token issued so far; returns how many."""
        with self._lock:
            chosen = [self._issued[token]] if token else list(self._issued.values())
            for issued in chosen:
                issued.revoked = True
        return len(chosen)

    def issued(self) -> list[Issued]:
        """Every token handed out, oldest first."""
        with self._lock:
            return list(self._issued.values())
