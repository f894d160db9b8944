"""
Blob storage in and out, against Azurite on loopback and the simulator.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import ContainerClient

from batchrunner.azure.blob import is_blob_url, parse_blob_url, storage_secrets
from batchrunner.cli import run
from batchrunner.results.frame import read_results
from batchrunner.results.mirror import BlobMirror, release, take_lease
from batchrunner.simulator import SimulatorServer
from tests.conftest import PYTHON, child_env
from tests.test_cli import prompts


def upload_jsonl(container: ContainerClient, name: str, rows: list[Any]) -> str:
    """Put *rows* in a JSONL blob; return its az:// URL."""
    data = "".join(json.dumps(row) + "\n" for row in rows).encode()
    container.upload_blob(name, data, overwrite=True)
    return f"az://{container.container_name}/{name}"


def blob_bytes(container: ContainerClient, name: str) -> bytes:
    """The content of blob *name* (empty when it does not exist)."""
    client = container.get_blob_client(name)
    return client.download_blob().readall() if client.exists() else b""


def records(data: bytes) -> list[dict[str, Any]]:
    """The complete JSONL records in *data*."""
    return [json.loads(line) for line in data.split(b"\n")[:-1]]


def ok_counts(data: bytes) -> Counter[str]:
    """How many ok records each id has."""
    return Counter(r["id"] for r in records(data) if r["status"] == "ok")


def wait_for(condition: Any, what: str, seconds: float = 60) -> None:
    """Poll *condition* until it holds, or fail naming *what*."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def test_round_trip_refuses_a_second_writer_and_resumes_after_kill_9(
    azure_env: SimulatorServer,
    container: ContainerClient,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Input blob → results blob; a second run is refused; kill -9; resume."""
    azure_env.config.latency = 0.05  # slow enough to still be running below
    rows = [{"id": f"r{i}", "prompt": f"row r{i} please"} for i in range(400)]
    url = upload_jsonl(container, "jobs/in.jsonl", rows)
    results = "jobs/in.results.jsonl"
    connection = os.environ["AZURE_STORAGE_CONNECTION_STRING"]
    env = child_env(azure_env, AZURE_STORAGE_CONNECTION_STRING=connection)
    first = subprocess.Popen(
        [PYTHON, "-m", "batchrunner", url, "--concurrency", "2"],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    wait_for(lambda: blob_bytes(container, results).count(b"\n") >= 40, "40 rows")

    assert run([url, "--log-format", "text"]) == 2
    assert "being written by another batchrunner run" in capsys.readouterr().err

    first.kill()
    first.wait()
    assert first.returncode == -signal.SIGKILL
    done_before = set(ok_counts(blob_bytes(container, results)))
    sent_before = len(azure_env.ledger.entries)
    assert 40 <= len(done_before) < len(rows)

    blob = container.get_blob_client(results)
    # The killed run's lease lapses by itself; nothing has to be cleaned up.
    wait_for(lambda: blob.get_blob_properties().lease.state != "leased", "the lease")
    assert run([url, "--concurrency", "16"]) == 0

    final = ok_counts(blob_bytes(container, results))
    assert set(final) == {row["id"] for row in rows}
    assert max(final.values()) == 1
    resent = {e.prompt.split()[1] for e in azure_env.ledger.entries[sent_before:]}
    assert not resent & done_before
    summary = json.loads(blob_bytes(container, "jobs/in.results.summary.json"))
    assert summary["results"] == f"az://{container.container_name}/{results}"
    assert summary["rows_skipped"] == len(done_before)
    assert blob.get_blob_properties().lease.state == "available"


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_csv_and_parquet_results_blobs_resume(
    azure_env: SimulatorServer,
    container: ContainerClient,
    tmp_path: Path,
    suffix: str,
) -> None:
    """CSV and Parquet results in blob storage stream, resume and read back."""
    url = upload_jsonl(container, "in.jsonl", prompts(12))
    output = f"az://{container.container_name}/out/res{suffix}"
    assert run([url, "-o", output, "--limit", "5"]) == 0
    assert run([url, "-o", output]) == 0
    assert azure_env.ledger.count() == 12
    local = tmp_path / f"res{suffix}"
    local.write_bytes(blob_bytes(container, f"out/res{suffix}"))
    frame = read_results(local)
    assert sorted(frame["id"]) == sorted(f"r{i}" for i in range(12))
    assert (frame["status"] == "ok").all()
    assert blob_bytes(container, "out/res.summary.json")


def test_a_torn_blob_tail_is_cut_and_its_row_sent_again(
    azure_env: SimulatorServer, container: ContainerClient
) -> None:
    """A half record at the end of a results blob is dropped; the file stays valid."""
    url = upload_jsonl(container, "in.jsonl", prompts(6))
    assert run([url, "--limit", "4"]) == 0
    results = container.get_blob_client("in.results.jsonl")
    results.append_block(b'{"id":"r4","status":"ok","output":"half')
    assert run([url]) == 0
    final = ok_counts(blob_bytes(container, "in.results.jsonl"))
    assert final == Counter({f"r{i}": 1 for i in range(6)})


def test_fresh_keeps_the_earlier_blobs_as_backups(
    azure_env: SimulatorServer, container: ContainerClient
) -> None:
    """--fresh on a blob output copies results and summary aside and starts over."""
    url = upload_jsonl(container, "in.jsonl", prompts(3))
    assert run([url]) == 0
    assert run([url, "--fresh"]) == 0
    names = {blob.name for blob in container.list_blobs()}
    backups = {name.split(".bak-")[0] for name in names if ".bak-" in name}
    assert backups == {"in.results.jsonl", "in.results.summary.json"}
    assert len(records(blob_bytes(container, "in.results.jsonl"))) == 3
    assert azure_env.ledger.count() == 6


def test_dry_run_reads_a_blob_output_without_a_lease(
    azure_env: SimulatorServer,
    container: ContainerClient,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--dry-run counts the rows a results blob already holds, and sends nothing."""
    url = upload_jsonl(container, "in.jsonl", prompts(5))
    assert run([url, "--limit", "2"]) == 0
    capsys.readouterr()
    assert run([url, "--dry-run", "--log-format", "text"]) == 0
    out = capsys.readouterr().out
    assert "rows to send     3 (2 already done in az://" in out
    assert azure_env.ledger.count() == 2


def test_storage_mistakes_exit_2_naming_the_blob(
    azure_env: SimulatorServer,
    container: ContainerClient,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A missing input, a bad URL, a block blob for results, no account: exit 2."""
    name = container.container_name
    assert run([f"az://{name}/missing.csv", "--log-format", "text"]) == 2
    assert f"az://{name}/missing.csv" in capsys.readouterr().err
    assert run(["az://No_Such/x.csv", "--log-format", "text"]) == 2
    assert "not a container name" in capsys.readouterr().err
    url = upload_jsonl(container, "in.jsonl", prompts(2))
    container.upload_blob("in.results.jsonl", b"")  # a block blob: cannot stream
    assert run([url, "--log-format", "text"]) == 2
    assert "not an Append Blob" in capsys.readouterr().err
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING")
    assert run([f"az://{name}/x.csv", "--log-format", "text"]) == 2
    assert "no storage account" in capsys.readouterr().err
    assert azure_env.ledger.count() == 0


def test_mirror_rewrites_the_blob_before_the_append_limit(
    container: ContainerClient, tmp_path: Path
) -> None:
    """Near the Append Blob's block limit the blob is rewritten, lease kept."""
    client = container.get_blob_client("m.jsonl")
    lease = take_lease(client, "m.jsonl")
    local = tmp_path / "m.jsonl"
    local.write_bytes(b"")
    mirror = BlobMirror(
        client, local, lease, shipped=0, shown="m.jsonl", flush_seconds=0, block_limit=3
    )
    for i in range(8):
        with local.open("ab") as sink:
            sink.write(b'{"id":"%d","status":"ok"}\n' % i)
        mirror.sync()
        wait_for(lambda: mirror.shipped == local.stat().st_size, f"append {i}")
    mirror.close()
    properties = client.get_blob_properties()
    assert client.download_blob().readall() == local.read_bytes()
    assert (properties.append_blob_committed_block_count or 0) <= 3
    assert properties.lease.state == "leased"
    release(lease, "m.jsonl")


def test_blob_urls_parse() -> None:
    """az://, abfs:// and abfss:// URLs name a container, a blob, maybe an account."""
    assert is_blob_url("az://c1c/x.csv") and is_blob_url("ABFSS://c1c/x.csv")
    assert not is_blob_url("jobs/x.csv") and not is_blob_url("https://h/x.csv")
    plain = parse_blob_url("az://data/jobs/2024/prompts.csv.gz")
    assert (plain.container, plain.blob, plain.account) == (
        "data",
        "jobs/2024/prompts.csv.gz",
        None,
    )
    assert plain.name == "prompts.csv.gz"
    assert (
        str(plain.with_name("p.results.jsonl")) == "az://data/jobs/2024/p.results.jsonl"
    )
    gen2 = parse_blob_url("abfss://data@acct.dfs.core.windows.net/p.csv")
    assert gen2.account == "acct"
    assert str(gen2) == "abfss://data@acct.dfs.core.windows.net/p.csv"


def test_a_connection_string_secret_never_shows(
    azure_env: SimulatorServer,
    azurite_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A refused SAS fails with exit 3, and stays out of every message."""
    signature = "c2VjcmV0LXNpZ25hdHVyZQ%3D%3D"
    monkeypatch.setenv(
        "AZURE_STORAGE_CONNECTION_STRING",
        f"BlobEndpoint={azurite_url};"
        f"SharedAccessSignature=sv=2022-11-02&ss=b&srt=sco&sp=r&sig={signature}",
    )
    assert run(["az://jobs/in.jsonl", "-v", "--log-format", "text"]) == 3
    out, err = capsys.readouterr()
    assert "storage refused" in err
    assert signature not in out + err
    assert storage_secrets({"AZURE_STORAGE_CONNECTION_STRING": "AccountKey=k3y;"}) == [
        "k3y"
    ]
