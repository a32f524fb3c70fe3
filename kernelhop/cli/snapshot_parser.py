"""`kernelhop snapshot ls|show|log|diff|export|import|rm|share|revoke|gc`, `kernelhop user add|token|rm|ls`,
`kernelhop usage` and `kernelhop runtime-token create|list|revoke`.

They talk to the gateway over its WebSocket as the user whose token KERNELHOP_TOKEN holds (else, on the gateway's
host, the admin's, from $KERNELHOP_HOME/admin-token). `add_subcommands` hangs them under the `kernelhop` command; what
they do lives in snapshot_commands.py, imported only when one runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def _command(name: str) -> Callable[[argparse.Namespace], int]:
    def run(ns: argparse.Namespace) -> int:
        from .snapshot_commands import run as run_command

        return run_command(name, ns)

    return run


def add_subcommands(subparsers: Any) -> None:
    """Adds `snapshot` and `user` to the `kernelhop` command's subparsers."""
    snap = subparsers.add_parser("snapshot", help="list, show, diff, export, import, remove snapshots; gc (admin)")
    sc = snap.add_subparsers(dest="snapshot_command", required=True)
    sc.add_parser("ls", help="your snapshots and those shared with you").set_defaults(run=_command("ls"))
    p = sc.add_parser("show", help="a snapshot's record: author, parents, cells, environment, shares")
    p.add_argument("ref", metavar="REF")
    p.add_argument("--json", action="store_true", help="the gateway's answer as JSON")
    p.set_defaults(run=_command("show"))
    p = sc.add_parser("log", help="a snapshot's history")
    p.add_argument("ref", metavar="REF")
    p.add_argument("-n", type=int, default=20)
    p.set_defaults(run=_command("log"))
    p = sc.add_parser("diff", help="names added, changed and removed from A to B, with sizes")
    p.add_argument("a", metavar="A")
    p.add_argument("b", metavar="B")
    p.set_defaults(run=_command("diff"))
    p = sc.add_parser("export", help="write a snapshot (record, signature, manifest, chunks) to one file")
    p.add_argument("ref", metavar="REF")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(run=_command("export"))
    p = sc.add_parser("import", help="verify a snapshot file and save it at the gateway")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--name", help="a ref name for it")
    p.set_defaults(run=_command("import"))
    p = sc.add_parser("rm", help="remove a snapshot (or with --ref, only a ref name)")
    p.add_argument("ref", metavar="REF")
    p.add_argument("--ref", dest="ref_only", action="store_true", help="remove the ref name only")
    p.set_defaults(run=_command("rm"))
    p = sc.add_parser("share", help="let a user, or anyone with a link, read a snapshot")
    p.add_argument("ref", metavar="REF")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--with", dest="with_user", metavar="USER")
    who.add_argument("--link", action="store_true")
    p.add_argument("--expires", type=float, metavar="SECONDS")
    p.set_defaults(run=_command("share"))
    p = sc.add_parser("revoke", help="end a share")
    p.add_argument("share", metavar="SHARE")
    p.set_defaults(run=_command("revoke"))
    p = sc.add_parser("gc", help="(admin) remove blobs no snapshot, run or recent upload needs")
    p.add_argument("--grace", type=float, metavar="SECONDS", help="keep blobs younger than this (default 900)")
    p.set_defaults(run=_command("gc"))

    user = subparsers.add_parser("user", help="(admin) add users, give them new tokens and quotas, remove them")
    uc = user.add_subparsers(dest="user_command", required=True)
    p = uc.add_parser("add", help="add a user; prints its token once")
    p.add_argument("name")
    p.add_argument("--quota", type=int, default=0, metavar="BYTES", help="bytes of blobs it may hold (0 = no limit)")
    p.set_defaults(run=_command("user_add"))
    p = uc.add_parser("token", help="a new token for a user (the old one stops working)")
    p.add_argument("name")
    p.set_defaults(run=_command("user_token"))
    p = uc.add_parser("quota", help="set a user's quota; what it holds already stays")
    p.add_argument("name")
    p.add_argument("bytes", type=int, metavar="BYTES", help="bytes of blobs it may hold (0 = no limit)")
    p.set_defaults(run=_command("user_quota"))
    p = uc.add_parser("rm", help="remove a user with its snapshots, refs and shares")
    p.add_argument("name")
    p.set_defaults(run=_command("user_rm"))
    uc.add_parser("ls", help="users, what they hold and their quotas").set_defaults(run=_command("user_ls"))
    p = uc.add_parser("limit", help="GPU slots a user may hold at once (running or warm); without --slots, list the limits")
    p.add_argument("name", nargs="?")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--slots", type=int, metavar="N", help="slots it may hold at once (0 = none)")
    group.add_argument("--none", action="store_true", help="remove the user's limit")
    p.set_defaults(run=_command("user_limit"))

    p = subparsers.add_parser("usage", help="GPU-seconds per user, notebook, cell, GPU class and runtime")
    p.add_argument("--user", metavar="U", help="one user's (the admin may name anyone; others see their own)")
    p.add_argument("--since", metavar="T", help="only runs that ended since: a span (30m, 24h, 7d) or an ISO date")
    p.add_argument("--json", action="store_true", help="the gateway's answer as JSON")
    p.set_defaults(run=_command("usage"))

    tokens = subparsers.add_parser("runtime-token", help="(admin) credentials for runtimes: create, list, revoke")
    tc = tokens.add_subparsers(dest="runtime_token_command", required=True)
    p = tc.add_parser("create", help="a runtime token (printed as the last line, once)")
    p.add_argument("--class", dest="gpu_class", metavar="C", help="the one GPU class a runtime with it may offer")
    p.set_defaults(run=_command("runtime_token_create"))
    tc.add_parser("list", help="runtime tokens, their class and whether revoked").set_defaults(
        run=_command("runtime_token_list")
    )
    p = tc.add_parser("revoke", help="end a runtime token; runtimes using it are dropped")
    p.add_argument("id", metavar="ID")
    p.set_defaults(run=_command("runtime_token_revoke"))
