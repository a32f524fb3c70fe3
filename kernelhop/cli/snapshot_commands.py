"""What `kernelhop snapshot ...` and `kernelhop user ...` do (and `%snapshot list|diff|log|revoke`, which run the same
functions); snapshot_parser.py builds their parser and imports this
only when one of them runs (so `kernelhop up` and `kernelhop gateway` start without the snapshot engine).

They go to the gateways KERNELHOP_GATEWAY (or gateway.json) names, a comma list, by the kernel's failover rule
(client/failover.py): through the next gateway when one is unreachable, and for a command that only reads also when
its connection closes mid-request; a command that writes is not sent again once it may have reached a gateway."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from kernelhop_snapshot import MemoryBlobStore

from ..client.export import export_snapshot, import_snapshot
from ..client.failover import Gateways
from ..client.gateway import KernelhopError
from ..client.snapshots import Snapshots, diff_manifests, format_diff, format_list, format_log, human, short
from ..config import ConfigError
from ..signing import SigningError
from ..client.usage import format_report, parse_since


def run(name: str, ns: argparse.Namespace) -> int:
    """Runs subcommand `name` through the gateways named, turning kernelhop's errors into a message and exit
    status 1."""
    fn = COMMANDS[name]
    gateways = Gateways(lambda line: print(line, file=sys.stderr), kept="nothing here changed")
    try:
        try:
            gateways.call(
                lambda client: fn(Snapshots(client, MemoryBlobStore()), ns), what=_title(name), writes=name in WRITES
            )
        finally:
            gateways.close()
    except (KernelhopError, ConfigError, SigningError, OSError) as e:
        print(f"kernelhop: {e}", file=sys.stderr)
        return 1
    return 0


def ls(api: Snapshots, ns: argparse.Namespace) -> None:
    print(format_list(api.request("snapshot_list")))


def show(api: Snapshots, ns: argparse.Namespace) -> None:
    reply = api.get(ns.ref)
    info, record = reply["snapshot"], reply["record"]
    if ns.json:
        print(json.dumps(reply, indent=2, sort_keys=True))
        return
    print(format_log([info]))
    print(f"  manifest {record['manifest']}\n  python {record['environment']['python']}")
    for name, version in record["environment"]["packages"].items():
        print(f"    {name}=={version}")
    for i, cell in enumerate(record["cells"], 1):
        print(f"  --- cell {i} ---\n" + "\n".join("  " + line for line in cell.splitlines()))
    for s in reply.get("shares", []):
        state = "revoked" if s["revoked_at"] else "active"
        print(f"  share {s['share']}: {'link' if s['link'] else s['with']} ({state})")


def diff(api: Snapshots, ns: argparse.Namespace) -> None:
    a_id, a = api.manifest_of(ns.a)
    b_id, b = api.manifest_of(ns.b)
    print(format_diff(a_id, b_id, diff_manifests(a, b)))


def log(api: Snapshots, ns: argparse.Namespace) -> None:
    print(format_log(api.request("snapshot_log", ref=ns.ref, limit=ns.n)["log"]))


def export(api: Snapshots, ns: argparse.Namespace) -> None:
    sid, size = export_snapshot(api, ns.ref, Path(ns.file))
    print(f"exported snapshot {short(sid)} to {ns.file} ({human(size)})")


def import_(api: Snapshots, ns: argparse.Namespace) -> None:
    sid = import_snapshot(api, Path(ns.file), name=ns.name)
    print(f"imported snapshot {short(sid)} ({sid})" + (f" as {ns.name}" if ns.name else ""))


def rm(api: Snapshots, ns: argparse.Namespace) -> None:
    if ns.ref_only:
        api.request("snapshot_rm", name=ns.ref)
        print(f"ref {ns.ref} removed (the snapshot stays)")
        return
    sid = api.request("snapshot_rm", ref=ns.ref)["snapshot"]
    print(f"snapshot {short(sid)} removed, with its refs and shares; its bytes go at the next gc")


def share(api: Snapshots, ns: argparse.Namespace) -> None:
    reply = api.share(ns.ref, with_user=ns.with_user, link=ns.link, expires_s=ns.expires)
    print(f"share {reply['share']}: " + (f"link {reply['link']}" if reply.get("link") else f"user {reply['with']}"))


def revoke(api: Snapshots, ns: argparse.Namespace) -> None:
    api.request("snapshot_revoke", share=ns.share)
    print(f"share {ns.share} revoked")


def gc(api: Snapshots, ns: argparse.Namespace) -> None:
    fields = {} if ns.grace is None else {"grace_s": ns.grace}
    r = api.request("gc", **fields)["report"]
    print(
        f"gc: removed {r['blobs_removed']} blob(s) ({human(r['bytes_freed'])}), kept {r['blobs_kept']}, "
        f"dropped {r['holds_dropped']} stale hold(s) and {r['temporaries_removed']} stale temporary file(s) "
        f"in {r['duration_ms']} ms"
    )


def user_add(api: Snapshots, ns: argparse.Namespace) -> None:
    reply = api.request("user_add", name=ns.name, quota_bytes=ns.quota)
    print(f"user {reply['user']} added; token (shown once, give it to them as KERNELHOP_TOKEN):\n{reply['token']}")


def user_token(api: Snapshots, ns: argparse.Namespace) -> None:
    reply = api.request("user_token", name=ns.name)
    print(f"new token for {reply['user']} (the old one no longer works):\n{reply['token']}")


def user_quota(api: Snapshots, ns: argparse.Namespace) -> None:
    reply = api.request("user_quota", name=ns.name, quota_bytes=ns.bytes)
    quota = human(reply["quota_bytes"]) if reply["quota_bytes"] else "no quota"
    print(f"user {reply['user']}: {quota}, {human(reply['used_bytes'])} used")


def user_rm(api: Snapshots, ns: argparse.Namespace) -> None:
    api.request("user_rm", name=ns.name)
    print(f"user {ns.name} removed, with their snapshots, refs and shares")


def user_ls(api: Snapshots, ns: argparse.Namespace) -> None:
    for u in api.request("user_list")["users"]:
        quota = human(u["quota_bytes"]) if u["quota_bytes"] else "no quota"
        print(f"{u['name']:<20} {'admin ' if u['admin'] else ''}{human(u['used_bytes'])} used, {quota}")


def user_limit(api: Snapshots, ns: argparse.Namespace) -> None:
    if ns.name is None:
        limits = api.request("user_limit")["limits"]
        for entry in limits:
            print(f"{entry['user']:<20} {entry['slots']} slot(s)")
        if not limits:
            print("no user has a slot limit")
        return
    if ns.slots is None and not ns.none:
        raise SystemExit("kernelhop user limit NAME takes --slots N (or --none to remove the limit)")
    if ns.slots is not None and ns.slots < 0:
        raise SystemExit("--slots takes a number of slots, 0 or more")
    reply = api.request("user_limit", name=ns.name, slots=None if ns.none else ns.slots)
    slots = reply["slots"]
    print(f"user {reply['user']}: " + ("no slot limit" if slots is None else f"at most {slots} slot(s) at once"))


def runtime_token_create(api: Snapshots, ns: argparse.Namespace) -> None:
    fields = {} if ns.gpu_class is None else {"gpu_class": ns.gpu_class}
    reply = api.request("runtime_token_create", **fields)
    scope = f"class {reply['gpu_class']}" if reply["gpu_class"] else "any class"
    # The token is the last line, alone, so scripts can take it with `tail -n 1`.
    print(f"runtime token {reply['id']} ({scope}); shown once, give it to the runtime as KERNELHOP_TOKEN or --token:")
    print(reply["token"])


def runtime_token_list(api: Snapshots, ns: argparse.Namespace) -> None:
    for t in api.request("runtime_token_list")["tokens"]:
        state = "revoked" if t["revoked_at"] else "live"
        print(f"{t['id']:<16} {t['gpu_class'] or 'any class':<12} {state}")


def runtime_token_revoke(api: Snapshots, ns: argparse.Namespace) -> None:
    reply = api.request("runtime_token_revoke", token_id=ns.id)
    print(f"runtime token {ns.id} revoked; {reply['runtimes_dropped']} runtime(s) using it dropped")


def usage(api: Snapshots, ns: argparse.Namespace) -> None:
    try:
        since = parse_since(ns.since) if ns.since else None
    except ValueError as e:
        raise KernelhopError(str(e)) from None
    report = api.client.usage(user=ns.user, since=since)
    print(json.dumps(report, indent=2, sort_keys=True) if ns.json else format_report(report))


def _title(name: str) -> str:
    """The command as typed, for the failover note: `kernelhop snapshot ls`, `kernelhop user add`."""
    group, _, command = name.rpartition("_")
    if name == "usage":
        return "`kernelhop usage`"
    return f"`kernelhop {group.replace('_', '-') or 'snapshot'} {command}`"


# The commands that change something at the gateway: not sent again after a connection closed mid-request, as the
# gateway may have done them (user_limit too, though without NAME it only lists).
WRITES = frozenset(
    {
        "import",
        "rm",
        "share",
        "revoke",
        "gc",
        "user_add",
        "user_token",
        "user_quota",
        "user_rm",
        "user_limit",
        "runtime_token_create",
        "runtime_token_revoke",
    }
)

COMMANDS: dict[str, Callable[[Snapshots, argparse.Namespace], None]] = {
    "ls": ls,
    "show": show,
    "diff": diff,
    "log": log,
    "export": export,
    "import": import_,
    "rm": rm,
    "share": share,
    "revoke": revoke,
    "gc": gc,
    "user_add": user_add,
    "user_token": user_token,
    "user_quota": user_quota,
    "user_rm": user_rm,
    "user_ls": user_ls,
    "user_limit": user_limit,
    "runtime_token_create": runtime_token_create,
    "runtime_token_list": runtime_token_list,
    "runtime_token_revoke": runtime_token_revoke,
    "usage": usage,
}
