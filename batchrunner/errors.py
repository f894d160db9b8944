"""
The exceptions batchrunner raises, and the exit code each kind stands for.

* BatchrunnerError
  + UsageError (exit 2): bad command line, settings or input; nothing was sent
    - ConfigError: a setting is wrong
    - InputError: an input row is wrong (carries path, line, column)
      · CellError: one cell of a row is wrong (the validator finds its column)
    - OutputBusy: another live run is writing this output
  + AuthError (exit 3): no credential works, or the service said 401/403
  + ApiFailure: one request failed; the row sender decides whether to retry it
  + QuotaExceeded: one row is charged more than a whole minute's quota
  + RunStopped: the run stopped taking rows before the end of its input
    - Resumable (exit 75): for a reason a later run clears (deadline, spend cap,
      a quota wait longer than allowed, results storage out of reach, a streak
      of rows the service never answered or answered 5xx/429: an outage)
    - Interrupted (exit 130 / 143): SIGINT / SIGTERM
    - GaveUp (exit 1): rows kept failing (a streak of requests the service
      refused, the failure budget, no such deployment), so going on would only
      burn through the file

Code that stops a run raises (or hands the stop policy) one of these; nothing
below the command line picks an exit code, and only ``cli.py`` turns them into
messages and the process's exit status.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from batchrunner.records import RateLimits

EXIT_OK = 0
EXIT_ROWS_FAILED = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_TEMPFAIL = 75
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class BatchrunnerError(Exception):
    """Base of every error batchrunner reports to its user."""

    exit_code = EXIT_ROWS_FAILED


class UsageError(BatchrunnerError):
    """The command line, settings or input are wrong: nothing was sent."""

    exit_code = EXIT_USAGE


class ConfigError(UsageError):
    """A setting is missing or has a value that cannot work."""


class InputError(UsageError):
    """
    An input row is wrong.

    The message names the *path*, *line* (1-based) and *column* (1-based, or
    None when the fault is the whole line) and says how to fix it.
    """

    def __init__(
        self, path: str, line: int | None, column: int | None, problem: str
    ) -> None:
        self.path = path
        self.line = line
        self.column = column
        self.problem = problem
        where = path
        if line is not None:
            where += f":{line}"
            if column is not None:
                where += f":{column}"
        super().__init__(f"{where}: {problem}")


class AuthError(BatchrunnerError):
    """No credential works, or the service refused the one we have."""

    exit_code = EXIT_AUTH


class ApiFailure(BatchrunnerError):
    """
    One request failed, classified for the retry policy.

    *retry_after* is the wait the service asked for, in seconds, when it asked.
    """

    def __init__(
        self,
        *,
        kind: str,
        message: str,
        status_code: int | None = None,
        code: str | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        request_id: str | None = None,
        latency_ms: int | None = None,
        limits: RateLimits | None = None,
    ) -> None:
        self.kind = kind
        self.message = message
        self.status_code = status_code
        self.code = code
        self.retryable = retryable
        self.retry_after = retry_after
        self.request_id = request_id
        self.latency_ms = latency_ms
        self.limits = limits
        super().__init__(message)

    def but_retryable(self) -> ApiFailure:
        """This failure as one worth another try: a new value, this one unchanged."""
        return self.replaced(retryable=True)

    def replaced(
        self, *, message: str | None = None, retryable: bool | None = None
    ) -> ApiFailure:
        """A new failure like this one but for *message* and *retryable*."""
        return ApiFailure(
            kind=self.kind,
            message=self.message if message is None else message,
            status_code=self.status_code,
            code=self.code,
            retryable=self.retryable if retryable is None else retryable,
            retry_after=self.retry_after,
            request_id=self.request_id,
            latency_ms=self.latency_ms,
            limits=self.limits,
        )

    def __repr__(self) -> str:
        return (
            f"<ApiFailure {self.kind} status={self.status_code} code={self.code!r}"
            f" retryable={self.retryable} retry_after={self.retry_after}>"
        )


class QuotaExceeded(BatchrunnerError):
    """A request charged more than the deployment's whole per-minute quota."""

    def __init__(self, tokens: int, limit: float) -> None:
        super().__init__(f"{tokens} tokens over a quota of {limit:.0f} a minute")
        self.tokens = tokens
        self.limit = limit


class RunStopped(BatchrunnerError):
    """The run stopped taking rows before its end, for the reason in the message."""


class Resumable(RunStopped):
    """Stopped for a reason a later run clears; results are flushed (exit 75)."""

    exit_code = EXIT_TEMPFAIL


class GaveUp(RunStopped):
    """Rows kept failing, so the run stopped rather than burn the file (exit 1)."""

    exit_code = EXIT_ROWS_FAILED


class Interrupted(RunStopped):
    """SIGINT or SIGTERM: in-flight rows finished or abandoned (exit 130 / 143)."""

    def __init__(self, message: str, *, signal_name: str) -> None:
        super().__init__(message)
        self.signal_name = signal_name
        self.exit_code = EXIT_SIGTERM if signal_name == "SIGTERM" else EXIT_SIGINT


class OutputBusy(UsageError):
    """Another live run is writing this output (exit 2, nothing sent)."""


class CellError(InputError):
    """
    An ``InputError`` about one cell of a row.

    *column_name* names the cell (None when the fault is the whole row), so that
    the validator, which can re-read the file, can point at its column.
    """

    def __init__(
        self, path: str, line: int | None, column_name: str | None, problem: str
    ) -> None:
        super().__init__(path, line, None, problem)
        self.column_name = column_name
