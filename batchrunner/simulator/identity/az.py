"""
A fake Azure CLI: an ``az`` script that answers ``az account get-access-token``
from the fake identity endpoints, for ``AzureCliCredential``.
"""

from __future__ import annotations

import stat
import sys
from pathlib import Path

from batchrunner.simulator.identity.issuer import (
    FAKE_AZ,
)
from batchrunner.simulator.identity.server import IdentityServer

_AZ_SCRIPT = '''\
#!{python}
"""A fake Azure CLI: only `az account get-access-token`, served by {url}."""
import sys
import urllib.error
import urllib.parse
import urllib.request

URL = {url!r}
args = sys.argv[1:]
if args[:4] != ["account", "get-access-token", "--output", "json"] or (
    "--resource" not in args
):
    print("ERROR: this fake az only knows `account get-access-token --output json"
          " --resource R`, not: " + " ".join(args), file=sys.stderr)
    sys.exit(2)
query = {{"resource": args[args.index("--resource") + 1]}}
if "--tenant" in args:
    query["tenant"] = args[args.index("--tenant") + 1]
opener = urllib.request.build_opener(urllib.request.ProxyHandler({{}}))
target = URL + "/az/token?" + urllib.parse.urlencode(query)
try:
    with opener.open(target, timeout=10) as answer:
        sys.stdout.write(answer.read().decode())
except urllib.error.HTTPError as exc:
    print(exc.read().decode(), file=sys.stderr)
    sys.exit(1)
'''

_NOT_LOGGED_IN = """\
#!/bin/sh
echo "ERROR: Please run 'az login' to setup account." >&2
exit 1
"""


def install_fake_az(directory: Path, server: IdentityServer | None) -> Path:
    """
    Write an executable ``az`` into *directory* (put it first on ``PATH``) that
    prints what ``az account get-access-token --output json`` prints, with tokens
    from *server*; with no server, an ``az`` that is not logged in.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / FAKE_AZ
    if server is None:
        path.write_text(_NOT_LOGGED_IN, encoding="utf-8")
    else:
        script = _AZ_SCRIPT.format(python=sys.executable, url=server.url)
        path.write_text(script, encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path
