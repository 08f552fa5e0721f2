"""What is wrong with options people wrote, in one line they can act on.

Every face (the CLI's ``--max-rounds 3``, a campaign's ``-g rollouts=8``, a trainer's
``--lr``) validates its options with a pydantic config model; this turns the model's errors
into the message the user reads.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import ValidationError


def explain(
    exc: ValidationError,
    *,
    subject: str | None = None,
    known: Iterable[str] = (),
    flags: bool = True,
) -> str:
    """``exc``'s errors joined with ``; ``.

    With ``flags`` a field is written as the option that sets it (``--max-rounds``), else as
    its dotted path (``game.rollouts``). An unknown field names the ``known`` ones of
    ``subject``; an error of the whole object is its message alone.
    """

    def name(field: str) -> str:
        return "--" + field.replace("_", "-") if flags else field

    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        if not where:
            problems.append(message)
        elif error["type"] == "extra_forbidden":
            options = ", ".join(name(field) for field in known)
            what = f" of {subject}" if subject else ""
            listed = f" (options: {options})" if options else ""
            problems.append(f"{name(where)} is not an option{what}{listed}")
        else:
            problems.append(f"{name(where)}: {message}")
    return "; ".join(problems)
