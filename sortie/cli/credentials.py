"""`sortie auth init|creds|list|revoke`: the authority, per-role credentials, the registry of
what was minted, and revocation (`sortie auth web-token`, the dashboard's tokens:
``cli/web_tokens.py``). Files only: never a seed, JWT or credentials file's content
on the terminal."""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

from sortie.bus import identities
from sortie.bus.auth import ACCOUNT_FILE, DEFAULT_TTL_S, AuthError, Authority
from sortie.bus.profile import default_data_dir, read_profile, resolve_auth, resolve_url
from sortie.cli.output import add_output, emit
from sortie.cli.web_tokens import add_web_token, run_web_token
from sortie.client.views import View, iso

EXIT_OK = 0
MIN_TTL_S = 10  # below this a holder would reconnect to renew every few seconds


def _ttl(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < MIN_TTL_S:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not valid: give how many seconds credentials stay valid "
            f"(at least {MIN_TTL_S}; default {DEFAULT_TTL_S}, a day)"
        )
    return value


def add_ttl_option(p: argparse.ArgumentParser) -> None:
    """``--creds-ttl`` of the daemons that mint credentials (`sortie up`, `sortie scheduler`)."""
    p.add_argument(
        "--creds-ttl",
        type=_ttl,
        default=DEFAULT_TTL_S,
        metavar="SECONDS",
        help="how long the credentials it mints stay valid; holders renew them from two "
        f"thirds of that on (default {DEFAULT_TTL_S}: a day)",
    )


def add_auth(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    auth = sub.add_parser("auth").add_subparsers(
        dest="auth_command", required=True, metavar="ACTION"
    )
    ai = auth.add_parser(
        "init",
        help="make an authority (keys, broker config, scheduler and client credentials) in DIR",
    )
    ai.add_argument("dir", type=Path)
    add_output(ai)
    ac = auth.add_parser("creds", help="write credentials for one role")
    ac.add_argument("--dir", type=Path, required=True, help="the directory `sortie auth init` made")
    ac.add_argument("--role", choices=("client", "agent", "scheduler"), required=True)
    ac.add_argument("--agent-id", help="for --role agent: the agent's id (its --name)")
    ac.add_argument("--name", help="what `sortie auth list|revoke` call them (default: the role)")
    ac.add_argument("--out", type=Path, required=True, help="where to write them (0600)")
    ac.add_argument(
        "--ttl", type=_ttl, default=DEFAULT_TTL_S, help="seconds they are valid (default a day)"
    )
    add_output(ac)
    dir_help = "the authority directory (default: the `sortie up` data directory's auth/)"
    al = auth.add_parser("list", help="credentials minted here: name, role, expiry, revoked")
    al.add_argument("--dir", type=Path, help=dir_help)
    add_output(al)
    ar = auth.add_parser("revoke", help="refuse a credential at once (agent id, client, node)")
    ar.add_argument("name", help="as `sortie auth list` shows it, or an agent's id")
    ar.add_argument("--dir", type=Path, help=dir_help)
    add_output(ar)
    add_web_token(auth)


def run_auth(args: argparse.Namespace) -> int:
    if args.auth_command == "init":
        return _init(args.dir, args.output)
    if args.auth_command == "creds":
        return _creds(args)
    if args.auth_command == "web-token":
        return run_web_token(args)
    authority = _existing(args.dir)
    if args.auth_command == "list":
        entries, now = identities.load(authority.directory), time.time()
        if args.output != "text":
            emit([_view(e, now) for e in entries], args.output)
        else:
            print(_table(entries, now))
        return EXIT_OK
    return _revoke(args, authority)


def _init(directory: Path, output: str) -> int:
    from sortie.bus.auth import init_authority

    authority = init_authority(directory.expanduser().resolve())
    if output != "text":
        view = AuthorityView(
            directory=str(authority.directory),
            broker_conf=str(authority.broker_conf),
            scheduler_creds=str(authority.scheduler_creds),
            client_creds=str(authority.client_creds),
            account_key=str(authority.account_key_path),
        )
        emit(view, output)
        return EXIT_OK
    print(
        f"Authority in {authority.directory} (keep it private: {ACCOUNT_FILE} mints "
        "credentials)\n"
        f"  broker:    add the lines of {authority.broker_conf} to nats-server's config\n"
        f"  scheduler: sortie --creds {authority.scheduler_creds} scheduler "
        f"--account-key {authority.account_key_path}\n"
        f"  clients:   sortie --creds {authority.client_creds} ... (or SORTIE_CREDS)\n"
        f"  agents:    sortie auth creds --dir {authority.directory} --role agent "
        "--agent-id ID --out FILE"
    )
    return EXIT_OK


def _creds(args: argparse.Namespace) -> int:
    from sortie.bus.auth import Signer, write_private
    from sortie.proto.permissions import Role

    if (args.role == "agent") != (args.agent_id is not None):
        raise AuthError("--agent-id goes with --role agent (and is required there)")
    try:
        role = Role(args.role, args.agent_id)
    except ValueError as exc:
        raise AuthError(str(exc)) from None
    signer = Signer.load(args.dir.expanduser() / ACCOUNT_FILE, ttl_s=args.ttl)
    out = write_private(args.out.expanduser(), signer.mint(role, label=args.name).text())
    named = f"{args.name} ({role.identity})" if args.name else role.identity
    if args.output != "text":
        view = WrittenView(name=args.name or role.identity, identity=role.identity, file=str(out))
        emit(view, args.output)
    else:
        print(f"Wrote {named} credentials to {out} (0600)")
    return EXIT_OK


def _existing(given: Path | None) -> Authority:
    """The authority in ``given``, else in the `sortie up` data directory's ``auth/``."""
    from sortie.bus.auth import init_authority

    if given is not None:
        directory = given.expanduser()
    else:
        data = (read_profile() or {}).get("data_dir")
        directory = (Path(data) if isinstance(data, str) else default_data_dir()) / "auth"
    if not (directory / ACCOUNT_FILE).is_file():
        raise AuthError(
            f"no authority in {directory}: give --dir (the directory `sortie auth init` made, "
            "or the auth/ directory in `sortie up`'s data directory)"
        )
    return init_authority(directory.resolve())


def _revoke(args: argparse.Namespace, authority: Authority) -> int:
    from sortie.bus.revocation import PushFailed, push, revoke

    try:
        revoked = revoke(authority, args.name)
    except identities.UnknownIdentity as exc:
        raise AuthError(str(exc)) from None
    labels = sorted({e.label for e in revoked})
    names = ", ".join(labels)
    if args.output == "text":
        print(f"Revoked {names} ({len(revoked)} credential{'s' * (len(revoked) != 1)})")
    url = resolve_url(args.url)
    try:
        asyncio.run(push(authority, url, resolve_auth(url, tls_ca=args.tls_ca).tls_ca))
    except PushFailed as exc:
        raise AuthError(
            f"{str(exc).rstrip('.')}. The revocation is recorded in {authority.directory} (and its "
            "broker.conf, so the broker refuses them from its next start); give the running "
            "broker's --url to tell it now"
        ) from None
    if args.output != "text":
        emit(RevokedView(names=labels, credentials=len(revoked), broker=url), args.output)
    else:
        print(f"The broker at {url} refuses them from now on.")
    return EXIT_OK


def _table(entries: list[identities.Identity], now: float) -> str:
    rows = [("NAME", "ROLE", "PUBLIC KEY", "EXPIRES (UTC)", "STATE")]
    for e in sorted(entries, key=lambda e: (e.label, e.issued_at)):
        expires = (
            datetime.fromtimestamp(e.expires_at, UTC).strftime("%Y-%m-%d %H:%M:%S")
            if e.expires_at is not None
            else "never"
        )
        rows.append((e.label, e.name, f"{e.public_key[:12]}...", expires, _state(e, now)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)
    return "\n".join(line.rstrip() for line in lines)


class AuthorityView(View, frozen=True, kw_only=True):
    """`sortie auth init --output json`: where the authority's files are (paths only)."""

    directory: str
    broker_conf: str
    scheduler_creds: str
    client_creds: str
    account_key: str


class WrittenView(View, frozen=True, kw_only=True):
    """`sortie auth creds --output json`: which credentials were written where."""

    name: str
    identity: str
    file: str


class RevokedView(View, frozen=True, kw_only=True):
    """`sortie auth revoke --output json`: what was revoked; the broker refuses it now."""

    names: list[str]
    credentials: int
    broker: str


class CredentialView(View, frozen=True, kw_only=True):
    """One credential of `sortie auth list --output json` (the public key only: a public
    key is no secret)."""

    name: str
    identity: str
    public_key: str
    issued_at: str | None
    expires_at: str | None  # null: never
    revoked_at: str | None
    state: str


def _view(e: identities.Identity, now: float) -> CredentialView:
    return CredentialView(
        name=e.label,
        identity=e.name,
        public_key=e.public_key,
        issued_at=iso(e.issued_at),
        expires_at=iso(e.expires_at),
        revoked_at=iso(e.revoked_at),
        state=_state(e, now),
    )


def _state(e: identities.Identity, now: float) -> str:
    if e.revoked_at is not None:
        return "revoked"
    if e.expires_at is not None and e.expires_at <= now:
        return "expired"
    return "valid"
