"""The two ways an action is refused, shared by the Room and the command plugin API.

Both carry a message for the user that says what was wrong and what to do instead; the
Room shows it as an error line. They live below both so neither imports the other.
"""


class CommandError(Exception):
    """The action cannot be done: the message tells the user why and what to do instead."""


class UsageError(Exception):
    """The arguments are wrong: the user is shown the command's usage line (and the reason)."""
