"""The one exception a user's mistake raises: caught at the boundary and printed as one line."""


class UserError(Exception):
    """A mistake the user can fix (bad override, impossible pair, missing data).

    The message is one line that names the problem and says what to type instead.
    """
