"""Accounts: register, log in with a password or a token, log out.

None of these write their arguments to the audit log: they carry passwords and tokens.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred

from chatd.commands import CommandError, Context, UsageError, command


def _name_and_password(args: str) -> tuple[str, str]:
    name, _, password = args.partition(" ")
    if not name or not password:
        raise UsageError()
    return name, password


@command(
    "register",
    example="/register Ann correct-horse-battery",
    usage="<name> <password>",
    help="create an account that keeps your name; you stay logged in",
    audit_args=False,
)
def register(ctx: Context, args: str) -> Deferred[None]:
    name, password = _name_and_password(args)

    def done(token: str) -> None:
        # The token on a line of its own: it is copied, and must not wrap at 80 columns.
        ctx.reply(
            f"account {name} created; you are logged in.\n"
            "Your token, for /auth on another device (keep it secret):\n"
            f"  {token}"
        )

    return ctx.register(name, password).addCallback(done)


@command(
    "login",
    example="/login Ann correct-horse-battery",
    usage="<name> <password>",
    help="log in to your account (on any number of devices)",
    audit_args=False,
)
def login(ctx: Context, args: str) -> Deferred[None]:
    name, password = _name_and_password(args)
    return ctx.login(name, password)


@command(
    "auth",
    example="/auth 8f0c...-...(the token /register showed)",
    usage="<token>",
    help="log in with the token /register gave you",
    audit_args=False,
)
def auth(ctx: Context, args: str) -> Deferred[None]:
    token = args.strip()
    if not token or " " in token:
        raise UsageError()

    def done(name: str | None) -> None:
        if name is None:
            raise CommandError("unknown token; check it, or /login <name> <password>")

    return ctx.login_with_token(token).addCallback(done)


@command(
    "logout",
    example="/logout",
    help="log this connection out (and cancel the token /login gave it); "
    "your other devices stay logged in",
)
def logout(ctx: Context, args: str) -> None:
    ctx.logout()
