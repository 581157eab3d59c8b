"""`sortie auth web-token`: mint a dashboard token (shown once), list them, revoke one.

Tokens live in the broker (``subjects.KV_WEB_TOKENS``) as their SHA-256 only
(``proto/web_tokens.py``), where every dashboard of the installation watches them. Clients may
read that bucket but not write it: minting and revoking connect with the installation's
scheduler credentials (``DATA_DIR/auth/scheduler.creds`` of `sortie up`, or ``--creds``), so
only someone holding the installation's data directory can let a browser in. A broker without
authentication takes the profile's connection.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import re
import secrets
import time
from pathlib import Path

import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue

from sortie.bus.auth import SCHEDULER_CREDS, AuthError, load_creds
from sortie.bus.connection import Bus, open_bus
from sortie.bus.kv import kv_items
from sortie.bus.profile import default_data_dir, read_profile, resolve_auth, resolve_url
from sortie.cli.output import EXIT_OK, add_output, emit, table
from sortie.client.views import View, iso
from sortie.proto import codec, subjects
from sortie.proto import web_tokens as wt

_TTL = re.compile(r"^(\d+)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def ttl(text: str) -> int:
    """``--ttl``: seconds, or a number with s, m, h or d (``30d``)."""
    found = _TTL.match(text.strip().lower())
    seconds = int(found[1]) * _UNITS[found[2]] if found else 0
    if seconds < 60:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a lifetime: give seconds or a number with s, m, h or d "
            "(e.g. 3600, 12h, 30d; at least a minute)"
        )
    return seconds


def add_web_token(auth: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = auth.add_parser(
        "web-token",
        help="mint a dashboard token (printed once); --list them; --revoke one",
        description="Mint a token for `sortie web` (the login form, or `Authorization: "
        "Bearer TOKEN`). It is printed once and stored only as its hash. Minting and revoking "
        "need the installation's scheduler credentials (the data directory's auth/).",
    )
    what = p.add_mutually_exclusive_group()
    what.add_argument("--list", action="store_true", help="the tokens minted (never the tokens)")
    what.add_argument(
        "--revoke",
        metavar="LABEL_OR_ID",
        help="refuse at once every token with this label, "
        "or the one whose ID (as --list shows it) this is",
    )
    p.add_argument("--read-only", action="store_true", help="it may look, not act")
    p.add_argument("--label", help="whom it is for (shown in the dashboard; default: your user)")
    p.add_argument(
        "--ttl",
        type=ttl,
        default=wt.DEFAULT_TTL_S,
        metavar="SECONDS|30d",
        help="how long it works (default 30d)",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="the installation (default: the `sortie up` profile's)",
    )
    add_output(p)


def run_web_token(args: argparse.Namespace) -> int:
    if (args.list or args.revoke) and (args.read_only or args.label):
        raise AuthError("--read-only and --label go with minting, not with --list or --revoke")
    label = args.label if args.label is not None else _user()
    if not (args.list or args.revoke) and (why := wt.check_label(label)) is not None:
        raise AuthError(why)
    return asyncio.run(_run(args, label))


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a bare container)
        return "web"


async def _run(args: argparse.Namespace, label: str) -> int:
    bus = await _open(args)
    try:
        kv = await _bucket(bus)
        if args.list:
            _show_list(await _tokens(kv), args.output)
        elif args.revoke:
            await _revoke(kv, args.revoke, args.output)
        else:
            await _mint(kv, label, args)
    finally:
        await bus.close()
    return EXIT_OK


def _data_dir(given: Path | None) -> Path:
    if given is not None:
        return given.expanduser()
    data = (read_profile() or {}).get("data_dir")
    return Path(data) if isinstance(data, str) else default_data_dir()


async def _open(args: argparse.Namespace) -> Bus:
    """The broker, as the installation's scheduler when its credentials are here. Minting or
    revoking with other credentials (a client's) is refused before anything is sent."""
    creds = args.creds
    if creds is None and (found := _data_dir(args.data_dir) / "auth" / SCHEDULER_CREDS).is_file():
        creds = found
    url = resolve_url(args.url)
    auth = resolve_auth(url, creds=creds, tls_ca=args.tls_ca)
    if not args.list and auth.creds is not None and load_creds(auth.creds).name != "scheduler":
        raise AuthError(_WRITE_REFUSED)
    return await open_bus(url, "sortie-web-token", auth=auth)


async def _bucket(bus: Bus) -> KeyValue:
    try:
        return await bus.js.key_value(subjects.KV_WEB_TOKENS)
    except nats.js.errors.BucketNotFoundError:
        raise AuthError(
            "the broker has no dashboard-token store yet: restart the scheduler "
            "(`sortie up` or `sortie scheduler`) with this version of Sortie, which makes it"
        ) from None


async def _tokens(kv: KeyValue) -> dict[str, wt.WebToken]:
    found: dict[str, wt.WebToken] = {}
    for entry in await kv_items(kv):
        try:
            found[entry.key] = codec.decode(wt.WebToken, entry.value or b"")
        except codec.BadMessage:
            continue  # not one this version can read: it lets nobody in here either
    return found


_WRITE_REFUSED = (
    "minting and revoking dashboard tokens needs the installation's scheduler credentials: "
    "run this where `sortie up` keeps its data (--data-dir DIR), or give "
    "--creds DIR/auth/scheduler.creds"
)


async def _mint(kv: KeyValue, label: str, args: argparse.Namespace) -> None:
    token = wt.PREFIX + secrets.token_urlsafe(32)
    now = time.time()
    record = wt.WebToken(
        label=label, read_only=args.read_only, issued_at=now, expires_at=now + args.ttl
    )
    key = wt.token_hash(token)
    try:
        await kv.create(key, codec.encode(record))
    except nats.errors.TimeoutError:  # the broker refused the publish (a client's rights)
        raise AuthError(_WRITE_REFUSED) from None
    if args.output != "text":
        emit(MintedView(token=token, about=_view(key, record, now)), args.output)
        return
    kind = "read-only " if args.read_only else ""
    print(token)
    print(
        f"(a {kind}dashboard token for {label!r}, ID {key[: wt.SHOWN_HASH]}, valid until "
        f"{iso(record.expires_at)}; shown only this once)",
        flush=True,
    )


async def _revoke(kv: KeyValue, name: str, output: str) -> None:
    tokens = await _tokens(kv)
    keys = wt.matching(tokens, name)
    if not keys:
        raise AuthError(
            f"no dashboard token is labelled {name!r} or has an ID starting with it: "
            "`sortie auth web-token --list` shows them"
        )
    try:
        for key in keys:
            await kv.delete(key)
    except nats.errors.TimeoutError:
        raise AuthError(_WRITE_REFUSED) from None
    now = time.time()
    if output != "text":
        emit([_view(k, tokens[k], now) for k in keys], output)
        return
    shown = ", ".join(k[: wt.SHOWN_HASH] for k in keys)
    print(f"Revoked {len(keys)} dashboard token{'s' * (len(keys) != 1)} ({shown}): refused now")


def _show_list(tokens: dict[str, wt.WebToken], output: str) -> None:
    now = time.time()
    ordered = sorted(tokens.items(), key=lambda kv: (kv[1].issued_at, kv[0]))
    views = [_view(k, t, now) for k, t in ordered]
    if output != "text":
        emit(views, output)
        return
    rows = [["ID", "LABEL", "ACCESS", "ISSUED (UTC)", "EXPIRES (UTC)", "STATE"]]
    rows += [
        [v.id, v.label, v.access, v.issued_at or "", v.expires_at or "never", v.state]
        for v in views
    ]
    table(rows)


def _view(key: str, t: wt.WebToken, now: float) -> TokenView:
    return TokenView(
        id=key[: wt.SHOWN_HASH],
        label=t.label,
        access="read-only" if t.read_only else "full",
        issued_at=iso(t.issued_at),
        expires_at=iso(t.expires_at),
        state="valid" if wt.is_valid(t, now) else "expired",
    )


class TokenView(View, frozen=True, kw_only=True):
    """A dashboard token in `sortie auth web-token --list|--revoke --output json`: never the
    token, only the start of its hash (``id``)."""

    id: str
    label: str
    access: str  # full, read-only
    issued_at: str | None
    expires_at: str | None  # null: never
    state: str  # valid, expired


class MintedView(View, frozen=True, kw_only=True):
    """`sortie auth web-token --output json`: the new token (the only time it is shown)."""

    token: str
    about: TokenView
