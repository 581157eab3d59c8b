"""`sortie workspace config`: the workspace configuration for this broker, as JSON.

What it prints is a ``config.json`` in the hosted platform's shape that also names the
broker URL and the paths of the credentials and CA to use for it (never a secret): save it
where a v1 script runs and ``Workspace.from_config()`` connects with it. The broker is the
one the CLI would use (``--url``, ``SORTIE_URL``, then the `sortie up` profile), with its
credentials (``--creds``, ``SORTIE_CREDS``, then the profile's).
"""

from __future__ import annotations

import argparse
import json

from sortie.bus.profile import resolve_auth, resolve_url, workspace_config


def add_workspace(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ws = sub.add_parser("workspace")
    actions = ws.add_subparsers(dest="workspace_command", required=True, metavar="ACTION")
    cfg = actions.add_parser(
        "config", help="print a config.json for Workspace.from_config() (broker URL, creds path)"
    )
    cfg.add_argument("--name", default="sortie", help="the workspace name it records")


def run_workspace(args: argparse.Namespace) -> int:
    url = resolve_url(args.url)
    auth = resolve_auth(url, creds=args.creds, tls_ca=args.tls_ca)
    creds = auth.creds.resolve() if auth.creds is not None else None
    tls_ca = auth.tls_ca.resolve() if auth.tls_ca is not None else None
    print(json.dumps(workspace_config(url, creds=creds, tls_ca=tls_ca, name=args.name), indent=2))
    return 0
