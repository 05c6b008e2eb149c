"""``fetometry token``: create, list and revoke the access tokens of ``fetometry serve --tokens FILE``.

``token create NAME --tokens FILE [--admin]`` prints the new token once (it is never
stored: the file keeps its sha256); ``token list`` shows names, roles and dates, never
hashes; ``token revoke NAME`` marks it revoked, and a running server refuses it at its
next request. See docs/ACCESS_CONTROL.md.
"""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("token", help="create, list or revoke the access tokens of `fetometry serve --tokens`")
    verbs = p.add_subparsers(dest="token_verb", required=True, metavar="{create,list,revoke}")
    create = verbs.add_parser("create", help="make a token and print it once")
    create.add_argument("name", help="who or what uses it (a person or a service, never a patient)")
    create.add_argument("--admin", action="store_true", help="may read the audit log (GET /api/audit)")
    listing = verbs.add_parser("list", help="names, roles, created and revoked dates (never the hashes)")
    revoke = verbs.add_parser("revoke", help="revoke every active token of this name")
    revoke.add_argument("name")
    for sub in (create, listing, revoke):
        sub.add_argument("--tokens", required=True, metavar="FILE", help="the token file (JSON, mode 0600)")


def run(args: argparse.Namespace) -> int:
    from fetometry.serve import auth

    if args.token_verb == "create":
        token = auth.create_token(args.tokens, args.name, admin=args.admin)
        role = "admin" if args.admin else "user"
        print(f"token for {args.name} ({role}); shown once, store it now:", file=sys.stderr)
        print(token)
        return 0
    if args.token_verb == "list":
        entries = auth.read_tokens(args.tokens)
        if not entries:
            print("no tokens", file=sys.stderr)
        for entry in entries:
            row = entry.public()
            state = f"revoked {row['revoked']}" if row["revoked"] else "active"
            print(f"{row['name']}\t{row['role']}\tcreated {row['created']}\t{state}")
        return 0
    if args.token_verb == "revoke":
        count = auth.revoke_token(args.tokens, args.name)
        print(f"revoked {count} token(s) named {args.name}", file=sys.stderr)
        return 0
    raise ValueError(f"unknown token command {args.token_verb!r}")
