"""Basic-auth settings of Flower and the dashboard: ``user:password``, neither part blank.

An empty user or password is no protection: Flower compares the decoded
``Authorization`` header with each configured ``user:password`` as a string, so
``FLOWER_BASIC_AUTH=":"`` lets in anyone who sends an empty user and password,
and ``ops:`` anyone who knows the user's name. Both commands refuse to start
with such a setting. Messages name the setting and the problem, never its value.
"""

from __future__ import annotations


def credential_problem(value: str) -> str | None:
    """What is wrong with one ``user:password``, or None (the password may hold ``:``)."""
    user, colon, password = value.partition(":")
    if not colon:
        return "is not user:password (no ':')"
    if not user.strip() and not password.strip():
        return "has an empty user and an empty password"
    if not user.strip():
        return "has an empty user"
    if not password.strip():
        return "has an empty password"
    return None


def basic_auth_problem(name: str, value: str, *, multiple: bool = False) -> str | None:
    """The message refusing setting ``name`` = ``value``, or None when it is usable.

    ``multiple``: a comma-separated list of ``user:password`` (Flower's form); each
    entry counts, since any one of them lets a request in.
    """
    entries = value.split(",") if multiple else [value]
    for number, entry in enumerate(entries, start=1):
        problem = credential_problem(entry)
        if problem is not None:
            which = f"entry {number} of {len(entries)} " if len(entries) > 1 else ""
            return (
                f"{name} {which}{problem}: basic auth needs user:password, "
                "both non-empty"
            )
    return None


def flower_auth_problem(environment: str | None, option: str | None) -> str | None:
    """Why ``nx-export flower`` must not start with this auth, or None.

    ``environment`` is ``FLOWER_BASIC_AUTH``, ``option`` the ``--basic-auth=`` value.
    """
    if not (environment or option):
        return (
            "Flower needs basic auth: set FLOWER_BASIC_AUTH=user:password "
            "or pass --basic-auth=user:password"
        )
    for name, value in (("FLOWER_BASIC_AUTH", environment), ("--basic-auth", option)):
        problem = basic_auth_problem(name, value, multiple=True) if value else None
        if problem is not None:
            return problem
    return None
