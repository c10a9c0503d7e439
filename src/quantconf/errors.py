"""The one exception type users see: `QuantconfError`, a message that names what is wrong and the fix.

Library code names the *parameter* at fault (`param="limit"`, message "limit must be >= 1"); the
command line maps parameter names to its flags ("--limit must be >= 1"), so each layer speaks its
user's language without two copies of every check.
"""

from __future__ import annotations


class QuantconfError(Exception):
    """A user-facing error: the message names what is wrong and how to fix it.

    Parameters
    ----------
    message : str
        One line, naming the offending parameter (by its Python name) or file.
    param : str, optional
        The parameter at fault, when there is one; the CLI rewrites it as its flag.
    """

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param

    def for_cli(self, flags: dict[str, str] | None = None) -> str:
        """The message with the leading parameter name written as its command-line flag
        (`flags` maps parameters whose flag is not `--<param-with-dashes>`)."""
        msg = str(self)
        if self.param and msg.startswith(self.param):
            flag = (flags or {}).get(self.param, "--" + self.param.replace("_", "-"))
            msg = flag + msg[len(self.param):]
        return msg
