"""
A new user's mistakes, tried as they would try them: each ends with exit 2 and
one line saying what and where, never a traceback, and nothing sent.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from batchrunner.cli import run
from batchrunner.prepare.params import EXTRA_BODY, PARAMETERS, REFUSED
from batchrunner.records import Api
from batchrunner.simulator import SimulatorServer
from tests.conftest import PYTHON, SECRET_KEY, child_env
from tests.test_cli import prompts, write_csv, write_jsonl


@pytest.fixture(autouse=True)
def no_stale_log_handler() -> None:
    """
    Each run starts as a new process would: without the log handler an earlier
    run in this process left on a stream that pytest has since closed.
    """
    logger = logging.getLogger("batchrunner")
    for handler in list(logger.handlers):
        if type(handler) is logging.StreamHandler:
            logger.removeHandler(handler)


@pytest.fixture
def refused(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> Callable[[], str]:
    """
    The one error of a refused run, checked for a traceback: a line on stderr,
    or the error event when an earlier run in this process set up logging.
    """

    def message() -> str:
        _, err = capsys.readouterr()
        assert "Traceback" not in err
        lines = [line for line in err.splitlines() if "error" in line]
        lines += [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(set(lines)) == 1, lines
        return lines[0]

    return message


def test_no_arguments_points_at_help(capsys: pytest.CaptureFixture[str]) -> None:
    """The command alone gives a short usage line and points at --help."""
    assert run([]) == 2
    _, err = capsys.readouterr()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 2
    assert "usage: python -m batchrunner INPUT [options]" in err
    assert "--help" in err


@pytest.mark.parametrize(
    ("output", "says"),
    [
        ("folder", "is a directory"),
        ("results.txt", "must end in .jsonl, .csv, .parquet"),
        ("nowhere/results.jsonl", "the directory 'nowhere' does not exist"),
        ("job.csv", "is the input file itself"),
    ],
)
def test_an_output_that_cannot_work_is_refused(
    azure_env: SimulatorServer,
    tmp_path: Path,
    refused: Callable[[], str],
    output: str,
    says: str,
) -> None:
    """A directory, a suffix with no format, a missing folder or the input itself."""
    (tmp_path / "folder").mkdir()
    source = write_csv(tmp_path / "job.csv", prompts(3))
    before = source.read_bytes()
    assert run(["job.csv", "-o", output]) == 2  # the working directory is tmp_path
    assert says in refused()
    assert azure_env.ledger.count() == 0
    assert source.read_bytes() == before
    assert not (tmp_path / "nowhere").exists()


def test_a_typo_under_request_is_refused_with_the_right_name(
    azure_env: SimulatorServer, tmp_path: Path, refused: Callable[[], str]
) -> None:
    """``temprature`` is not sent: the message names the file and the real key."""
    (tmp_path / "config.yaml").write_text("request:\n  temprature: 0.2\n")
    source = write_csv(tmp_path / "job.csv", prompts(2))
    assert run([str(source)]) == 2
    line = refused()
    assert "request.temprature (file " in line
    assert "did you mean 'temperature'?" in line
    assert azure_env.ledger.count() == 0


@pytest.mark.parametrize(
    ("api", "deployment", "key", "says"),
    [
        ("embeddings", "text-embedding-3-small", "max_tokens", "does not take it"),
        ("completions", "gpt-35-turbo-instruct", "tools", "does not take it"),
        ("chat", "gpt-4o-mini", "dimensions", "only embeddings"),
        ("chat", "gpt-4o-mini", "stream", "reads each answer whole"),
        ("chat", "gpt-4o-mini", "model", "--deployment"),
    ],
)
def test_keys_the_chosen_api_does_not_take_are_refused(
    azure_env: SimulatorServer,
    tmp_path: Path,
    refused: Callable[[], str],
    api: str,
    deployment: str,
    key: str,
    says: str,
) -> None:
    """A parameter of another operation, or one batchrunner sets itself, is refused."""
    (tmp_path / "config.yaml").write_text(f"request:\n  {key}: 1\n")
    source = write_csv(tmp_path / "job.csv", prompts(2))
    assert run([str(source), "--api", api, "--deployment", deployment]) == 2
    line = refused()
    assert f"request.{key}" in line
    assert says in line
    assert azure_env.ledger.count() == 0


def test_extra_body_is_sent_as_it_stands(
    azure_env: SimulatorServer, tmp_path: Path
) -> None:
    """A parameter newer than the table goes through under request.extra_body."""
    config = "request:\n  temperature: 0\n  extra_body: {brand_new: 7}\n"
    (tmp_path / "config.yaml").write_text(config)
    source = write_csv(tmp_path / "job.csv", prompts(2))
    assert run([str(source)]) == 0
    bodies = azure_env.ledger.bodies()
    assert len(bodies) == 2
    assert all(b["brand_new"] == 7 and b["temperature"] == 0 for b in bodies)
    assert all(EXTRA_BODY not in b for b in bodies)


@pytest.mark.parametrize(
    ("api", "module", "cls"),
    [
        (Api.CHAT, "openai.resources.chat.completions", "AsyncCompletions"),
        (Api.COMPLETIONS, "openai.resources.completions", "AsyncCompletions"),
        (Api.EMBEDDINGS, "openai.resources.embeddings", "AsyncEmbeddings"),
    ],
)
def test_the_parameter_table_matches_the_installed_sdk(
    api: Api, module: str, cls: str
) -> None:
    """Every create() parameter is either taken or refused with a reason."""
    imported = __import__(module, fromlist=[cls])
    sdk = set(inspect.signature(getattr(imported, cls).create).parameters) - {"self"}
    handled = set(REFUSED) | {EXTRA_BODY}
    assert sdk - handled == PARAMETERS[api] - {"data_sources"}


def long_prompt_file(tmp_path: Path) -> Path:
    """A JSONL file whose second row is far over gpt-35-turbo-instruct's 4k window."""
    rows = [{"id": "a", "prompt": "short"}, {"id": "b", "prompt": "word " * 6000}]
    return write_jsonl(tmp_path / "long.jsonl", rows)


@pytest.mark.parametrize("dry_run", [True, False])
def test_a_prompt_over_the_context_window_is_found_before_sending(
    azure_env: SimulatorServer,
    tmp_path: Path,
    refused: Callable[[], str],
    dry_run: bool,
) -> None:
    """--dry-run and a real run both name the row that cannot fit, and send nothing."""
    args = [str(long_prompt_file(tmp_path)), "--api", "completions"]
    args += ["--deployment", "gpt-35-turbo-instruct"]
    assert run(args + (["--dry-run"] if dry_run else [])) == 2
    line = refused()
    assert "long.jsonl:2:" in line
    assert "6,00" in line  # the exact count: 6,000 words and their spaces
    assert "context window takes 4,097" in line
    assert azure_env.ledger.count() == 0


def test_an_unknown_model_is_not_checked(
    azure_env: SimulatorServer, tmp_path: Path
) -> None:
    """With no window known for the model, the service decides: the row is sent."""
    source = write_jsonl(tmp_path / "big.jsonl", [{"prompt": "word " * 6000}])
    azure_env.config.deployments["house-model"] = "house-model"
    assert run([str(source), "--deployment", "house-model"]) == 0
    assert azure_env.ledger.count() == 1


def post(server: SimulatorServer, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST *body* to the simulator and return the JSON it answers with a 400."""
    request = urllib.request.Request(
        f"{server.url}/openai/deployments/{path}?api-version=2024-10-21",
        data=json.dumps(body).encode(),
        headers={"api-key": SECRET_KEY, "Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=30)
    assert info.value.code == 400
    answer: dict[str, Any] = json.loads(info.value.read())
    return answer


def test_the_simulator_refuses_a_prompt_over_the_window_as_azure_does(
    simulator: SimulatorServer,
) -> None:
    """400 context_length_exceeded, with the counts worded as Azure words them."""
    chat: dict[str, Any] = {
        "messages": [{"role": "user", "content": "word " * 130_000}]
    }
    error = post(simulator, "gpt-4o-mini/chat/completions", chat)["error"]
    assert error["code"] == "context_length_exceeded"
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "messages"
    assert error["message"].startswith(
        "This model's maximum context length is 128000 tokens. However, your"
        " messages resulted in 130"
    )
    chat["max_tokens"] = 100
    error = post(simulator, "gpt-4o-mini/chat/completions", chat)["error"]
    assert error["code"] == "context_length_exceeded"
    assert "in the messages, 100 in the completion)" in error["message"]


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("empty.csv", b"", "the file is empty"),
        ("empty.jsonl", b"", "the file is empty"),
        ("blank.jsonl", b"\n  \n", "the file is empty"),
        ("header.csv", b"id,prompt\n", "the file has a header but no rows"),
    ],
)
def test_an_input_without_rows_is_refused_like_an_empty_csv(
    azure_env: SimulatorServer,
    tmp_path: Path,
    refused: Callable[[], str],
    name: str,
    content: bytes,
    says: str,
) -> None:
    """No rows at all is a mistake in every format, not a run that does nothing."""
    (tmp_path / name).write_bytes(content)
    assert run([str(tmp_path / name)]) == 2
    line = refused()
    assert f"{name}: {says}" in line.replace(str(tmp_path) + "/", "")
    assert azure_env.ledger.count() == 0
    assert not list(tmp_path.glob("*.results.*"))


def test_an_input_directory_is_called_one(
    azure_env: SimulatorServer, tmp_path: Path, refused: Callable[[], str]
) -> None:
    """A directory as INPUT says so, rather than that its name has no suffix."""
    (tmp_path / "jobs").mkdir()
    assert run([str(tmp_path / "jobs")]) == 2
    assert "is a directory, not an input file" in refused()


def test_stdin_from_a_terminal_is_refused_at_once(
    simulator: SimulatorServer, tmp_path: Path
) -> None:
    """'-' with nothing piped in says how to pipe, instead of waiting for typing."""
    leader, follower = os.openpty()
    try:
        done = subprocess.run(
            [PYTHON, "-m", "batchrunner", "-", "--log-format", "text"],
            stdin=follower,
            capture_output=True,
            text=True,
            env=child_env(simulator),
            cwd=tmp_path,
            timeout=60,
            check=False,
        )
    finally:
        os.close(follower)
        os.close(leader)
    assert done.returncode == 2
    assert "stdin is a terminal" in done.stderr
    assert "Traceback" not in done.stderr
    assert simulator.ledger.count() == 0


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"\xff\xfeconcurrency: 2\n", "is not UTF-8 text"),
        (b"concurrency: [1]\n", "setting 'concurrency': [1] is not a whole number"),
        (b"timeout: soon\n", "setting 'timeout': 'soon' is not a number"),
        (b"verbosity: loud\n", "setting 'verbosity': 'loud' is not a number"),
    ],
)
def test_settings_file_mistakes_say_what_is_wrong(
    azure_env: SimulatorServer,
    tmp_path: Path,
    refused: Callable[[], str],
    content: bytes,
    says: str,
) -> None:
    """Not UTF-8, or a value of the wrong type, is one line naming the setting."""
    (tmp_path / "settings.yaml").write_bytes(content)
    source = write_csv(tmp_path / "job.csv", prompts(2))
    assert run([str(source), "-c", str(tmp_path / "settings.yaml")]) == 2
    assert says in refused()
    assert azure_env.ledger.count() == 0


def test_a_settings_directory_is_called_one(
    tmp_path: Path, refused: Callable[[], str]
) -> None:
    """-c naming a directory says it is one, not that it does not exist."""
    (tmp_path / "conf").mkdir()
    assert run(["job.csv", "-c", str(tmp_path / "conf"), "--simulate"]) == 2
    assert "is a directory" in refused()


@pytest.mark.parametrize("endpoint", ["notaurl", "https://x .com", "https://x:port"])
@pytest.mark.parametrize("dry_run", [True, False])
def test_a_malformed_endpoint_is_refused_before_any_row(
    azure_env: SimulatorServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    refused: Callable[[], str],
    endpoint: str,
    dry_run: bool,
) -> None:
    """An endpoint that is no URL is exit 2, not every row failed as unreachable."""
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", endpoint)
    source = write_csv(tmp_path / "job.csv", prompts(2))
    assert run([str(source)] + (["--dry-run"] if dry_run else [])) == 2
    line = refused()
    assert f"the endpoint {endpoint!r} (env AZURE_OPENAI_ENDPOINT)" in line
    assert not (tmp_path / "job.results.jsonl").exists()


@pytest.mark.parametrize(
    ("setting", "says"),
    [
        ("n: 0", "request.n (file "),
        ("temperature: hot", "request.temperature (file "),
        ("max_tokens: '200'", "must be a whole number of at least 1, not '200'"),
        ("logprobs: 'yes'", "must be true or false"),
    ],
)
def test_request_values_of_the_wrong_type_are_refused(
    azure_env: SimulatorServer,
    tmp_path: Path,
    refused: Callable[[], str],
    setting: str,
    says: str,
) -> None:
    """A value the service would refuse on every row is refused once, up front."""
    (tmp_path / "config.yaml").write_text(f"request:\n  {setting}\n")
    source = write_csv(tmp_path / "job.csv", prompts(2))
    assert run([str(source)]) == 2
    assert says in refused()
    assert azure_env.ledger.count() == 0


@pytest.mark.parametrize("name", ["my deployment", "team/gpt-4o", "gpt?4o"])
def test_a_deployment_no_url_can_name_is_refused(
    azure_env: SimulatorServer, tmp_path: Path, refused: Callable[[], str], name: str
) -> None:
    """A space or a slash in the deployment would be a 404 on every row."""
    source = write_csv(tmp_path / "job.csv", prompts(2))
    assert run([str(source), "--deployment", name]) == 2
    assert f"the deployment {name!r} (flag) cannot be a deployment name" in refused()
    assert azure_env.ledger.count() == 0


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_an_output_that_cannot_be_created_is_refused(
    azure_env: SimulatorServer, tmp_path: Path, refused: Callable[[], str]
) -> None:
    """A folder no results file can be made in (here /proc) is one line, no trace."""
    source = write_csv(tmp_path / "job.csv", prompts(2))
    assert run([str(source), "-o", "/proc/batchrunner-results.jsonl"]) == 2
    line = refused()
    assert "/proc" in line
    assert "choose another --output" in line
    assert azure_env.ledger.count() == 0


@pytest.mark.parametrize(
    ("output", "beside"),
    [("out.jsonl", "out.summary.json"), ("out.parquet", "out.parquet.journal.jsonl")],
)
def test_a_directory_where_the_summary_or_journal_goes_is_refused(
    azure_env: SimulatorServer,
    tmp_path: Path,
    refused: Callable[[], str],
    output: str,
    beside: str,
) -> None:
    """The files written beside the results are checked before a row is sent."""
    (tmp_path / beside).mkdir()
    source = write_csv(tmp_path / "job.csv", prompts(2))
    assert run([str(source), "-o", str(tmp_path / output)]) == 2
    line = refused()
    assert f"{beside}', which is a directory" in line
    assert azure_env.ledger.count() == 0
    assert not (tmp_path / output).exists()


@pytest.mark.parametrize("name", ["job.csv", "job.jsonl"])
def test_a_renamed_id_column_the_file_lacks_is_refused(
    azure_env: SimulatorServer, tmp_path: Path, refused: Callable[[], str], name: str
) -> None:
    """input.id_column naming no column is a mistake, not a reason to number rows."""
    (tmp_path / "config.yaml").write_text("input:\n  id_column: key\n")
    rows = prompts(2)
    source = (write_csv if name.endswith(".csv") else write_jsonl)(
        tmp_path / name, rows
    )
    assert run([str(source)]) == 2
    line = refused()
    assert "input.id_column is 'key', but the rows have no such column" in line
    assert "'id', 'prompt', 'topic'" in line
    assert azure_env.ledger.count() == 0


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("input:\n  prompt_column: [a]\n", "'input.prompt_column': ['a'] is a list"),
        ("endpoint: {a: 1}\n", "'endpoint': {'a': 1} is a mapping, not text"),
        ("template: 'Hi {text}'\n", "put it under 'input:', as input.template"),
        ("concurrency: .inf\n", "'concurrency': inf is not a whole number"),
        ("deadline: .inf\n", "'deadline': inf is not a positive duration"),
        ("max_cost: .nan\n", "'max_cost': nan is not a finite number"),
        ("prices:\n  gpt-4o-mini: {input: -1, output: 2}\n", "0 or more"),
    ],
)
def test_settings_values_that_cannot_work_name_the_setting(
    azure_env: SimulatorServer,
    tmp_path: Path,
    refused: Callable[[], str],
    content: str,
    says: str,
) -> None:
    """A list, a mapping, infinity or a negative price is refused, not str()-ed."""
    (tmp_path / "settings.yaml").write_text(content)
    source = write_csv(tmp_path / "job.csv", prompts(2))
    assert run([str(source), "-c", str(tmp_path / "settings.yaml")]) == 2
    assert says in refused()
    assert azure_env.ledger.count() == 0


@pytest.mark.parametrize("flag", ["--timeout", "--max-cost"])
def test_an_infinite_number_on_the_command_line_is_refused(
    azure_env: SimulatorServer, tmp_path: Path, refused: Callable[[], str], flag: str
) -> None:
    """inf passes every bound and then breaks what counts with it: it is refused."""
    source = write_csv(tmp_path / "job.csv", prompts(2))
    assert run([str(source), flag, "inf"]) == 2
    assert "inf is not a finite number" in refused()
    assert azure_env.ledger.count() == 0


def test_settings_from_a_pipe_are_read(
    azure_env: SimulatorServer, tmp_path: Path
) -> None:
    """-c <(envsubst < base.yaml) names a pipe: it is read, not called missing."""
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, b"dry_run: true\n")
        os.close(write_end)
        source = write_csv(tmp_path / "job.csv", prompts(2))
        assert run([str(source), "-c", f"/dev/fd/{read_end}"]) == 0
    finally:
        os.close(read_end)
    assert azure_env.ledger.count() == 0
    assert not (tmp_path / "job.results.jsonl").exists()


def test_a_cache_that_is_a_file_is_refused_before_the_output(
    azure_env: SimulatorServer, tmp_path: Path, refused: Callable[[], str]
) -> None:
    """--cache naming a file says to name a directory, and leaves no results file."""
    (tmp_path / "answers").write_text("not a directory\n")
    source = write_csv(tmp_path / "job.csv", prompts(2))
    assert run([str(source), "--cache", str(tmp_path / "answers")]) == 2
    line = refused()
    assert "name a directory for --cache" in line
    assert azure_env.ledger.count() == 0
    assert not (tmp_path / "job.results.jsonl").exists()
