"""Users and roles of the team tracking server, without SQL: ``python -m seqbench.config.team_users``.

Three roles on top of MLflow's basic-auth permissions (docs/team-server.md, docs/security.md):

- ``reader``: a plain user. The server's default permission (READ, set by
  ``scripts/team_server.sh``) lets them read every experiment, run, artifact and model.
- ``writer``: also the MLflow role ``seqbench-writer`` (EDIT on every experiment and registered
  model): logs runs in the team's experiments and registers models. EDIT is not MANAGE: a writer
  cannot delete another user's experiment or change anyone's permissions.
- ``admin``: MLflow's admin flag: everything, including users.

It signs in as the admin with MLflow's standard client settings (``MLFLOW_TRACKING_USERNAME`` /
``MLFLOW_TRACKING_PASSWORD``) and talks to the server only through MLflow's own auth client.
New passwords are read from stdin (``--password-stdin``) or asked for, never taken from the
command line, where ``ps`` and the shell history would keep them.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from seqbench.config.access import TrackingUnreachable, check_reachable
from seqbench.config.store import redact_uri

ROLES = ("reader", "writer", "admin")
WRITER_ROLE = "seqbench-writer"
WORKSPACE = "default"  # MLflow's roles live in a workspace; the default one without workspaces
WRITER_GRANTS = (("experiment", "*", "EDIT"), ("registered_model", "*", "EDIT"))
MIN_PASSWORD = 12


class TeamUsersError(RuntimeError):
    """A mistake the admin fixes (no server, wrong role, short password): one line, exit 2."""


def auth_client(tracking_uri: str) -> Any:
    """MLflow's basic-auth client for the server, after one bounded sign-in check."""
    from mlflow.server import get_app_client

    try:
        check_reachable(tracking_uri)
    except TrackingUnreachable as exc:
        raise TeamUsersError(str(exc)) from None
    with warnings.catch_warnings():
        # loading the auth app imports starlette's deprecated WSGI middleware: a warning about
        # MLflow's own code that the admin would otherwise read after every command
        warnings.filterwarnings("ignore", message="starlette.middleware.wsgi is deprecated")
        return get_app_client("basic-auth", tracking_uri=tracking_uri)


def writer_role_id(client: Any) -> int:
    """The id of the ``seqbench-writer`` role, created with its grants the first time."""
    for role in client.list_roles(WORKSPACE):
        if role.name == WRITER_ROLE:
            return role.id
    role = client.create_role(
        WORKSPACE, WRITER_ROLE, "seqbench writers: log runs, register models (EDIT, not MANAGE)"
    )
    for resource_type, pattern, permission in WRITER_GRANTS:
        client.add_role_permission(role.id, resource_type, pattern, permission)
    return role.id


def set_role(client: Any, username: str, role: str) -> None:
    """Make ``username`` a reader, a writer or an admin (and nothing more)."""
    if role not in ROLES:
        raise TeamUsersError(f"unknown role {role!r}: choose one of {', '.join(ROLES)}")
    writer = writer_role_id(client)
    is_writer = any(r.id == writer for r in client.list_user_roles(username))
    if role == "writer" and not is_writer:
        client.assign_role(username, writer)
    elif role != "writer" and is_writer:
        client.unassign_role(username, writer)
    client.update_user_admin(username, role == "admin")


def read_password(from_stdin: bool, username: str) -> str:
    """A new password from stdin's first line or a prompt; at least ``MIN_PASSWORD`` long."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"new password for {username}: ")
        if getpass.getpass("again: ") != password:
            raise TeamUsersError("the two passwords differ")
    if len(password) < MIN_PASSWORD:
        raise TeamUsersError(f"the password has {len(password)} characters; use {MIN_PASSWORD}+")
    return password


def _a(role: str) -> str:
    """``a reader``, ``a writer``, ``an admin``."""
    return f"an {role}" if role[0] in "aeiou" else f"a {role}"


def run(args: argparse.Namespace) -> str:
    """Carry out one command; what to tell the admin."""
    client = auth_client(args.tracking_uri)
    server = redact_uri(args.tracking_uri)
    if args.command == "add":
        client.create_user(args.username, read_password(args.password_stdin, args.username))
        set_role(client, args.username, args.role)
        return f"added {args.username} as {_a(args.role)} on {server}"
    if args.command == "set-role":
        set_role(client, args.username, args.role)
        return f"{args.username} is now {_a(args.role)} on {server}"
    if args.command == "set-password":
        password = read_password(args.password_stdin, args.username)
        me = os.environ.get("MLFLOW_TRACKING_USERNAME")
        # MLflow asks for the current password when users (the admin too) change their own.
        current = os.environ.get("MLFLOW_TRACKING_PASSWORD") if args.username == me else None
        client.update_user_password(args.username, password, current_password=current)
        return f"new password set for {args.username} on {server}"
    client.delete_user(args.username)
    return f"deleted {args.username} from {server}"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from seqbench.config.store import default_tracking_uri

    parser = argparse.ArgumentParser(
        prog="python -m seqbench.config.team_users",
        description="Add users of the team tracking server and give them a role (reader, "
        "writer, admin); sign in as an admin with MLFLOW_TRACKING_USERNAME / "
        "MLFLOW_TRACKING_PASSWORD. docs/team-server.md",
    )
    parser.add_argument(
        "--tracking-uri", default=None, help="the server (default: $MLFLOW_TRACKING_URI)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("add", "add a user with a password and a role"),
        ("set-role", "make a user a reader, a writer or an admin"),
        ("set-password", "set a user's password (the admin's own: rotation)"),
        ("delete", "delete a user"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("username")
        if name in ("add", "set-role"):
            command.add_argument(
                "--role", choices=ROLES, required=name == "set-role", default="reader"
            )
        if name in ("add", "set-password"):
            command.add_argument(
                "--password-stdin", action="store_true", help="read the new password from stdin"
            )
    args = parser.parse_args(argv)
    args.tracking_uri = args.tracking_uri or default_tracking_uri()
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """0 on success; 2 with one line on stderr for a mistake (as the other commands)."""
    from mlflow.exceptions import MlflowException

    args = parse_args(argv)
    try:
        print(f"team_users: {run(args)}")
    except TeamUsersError as exc:
        print(f"team_users: error: {exc}", file=sys.stderr)
        return 2
    except MlflowException as exc:
        print(f"team_users: error: {exc.message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
