"""The optional parts of Volley, which pip extra installs each, and the error naming it.

``pip install volley`` is the SDK and the native core.  The web service and the endpoint agent
come with extras; their packages call :func:`require` first, so that importing one without its
extra fails with the command that fixes it instead of a bare ``No module named 'fastapi'``.
"""

from __future__ import annotations

import importlib.util

# What each extra brings that its part imports (import names, not distribution names; pyproject's
# [project.optional-dependencies] is the list of distributions).  Only presence is checked, so
# this costs a path lookup per name, not an import.
EXTRAS: dict[str, tuple[str, ...]] = {
    "service": ("fastapi", "uvicorn", "sqlalchemy", "alembic", "pydantic", "cryptography"),
    "endpoint": ("yaml", "parsl"),
}


class MissingExtra(ImportError):
    """A part of Volley was used whose pip extra is not installed."""

    def __init__(self, what: str, extras: tuple[str, ...], missing: list[str]) -> None:
        self.extras = extras
        self.missing = missing
        self.install = f"pip install 'volley[{','.join(extras)}]'"
        noun = "extra" if len(extras) == 1 else "extras"
        super().__init__(
            f"{what} needs Volley's {' and '.join(repr(e) for e in extras)} {noun}, which "
            f"{'is' if len(extras) == 1 else 'are'} not installed (missing: {', '.join(missing)}): "
            f"install {'it' if len(extras) == 1 else 'them'} with {self.install}",
            name=missing[0],
        )


def missing_modules(extra: str) -> list[str]:
    return [m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None]


def extra_providing(module: str) -> str | None:
    """The extra whose modules include ``module``'s top-level package, if any."""
    top = module.partition(".")[0]
    return next((e for e, names in EXTRAS.items() if top in names), None)


def require(what: str, *extras: str) -> None:
    """Raise :class:`MissingExtra` unless every module of ``extras`` is installed."""
    by_extra = {e: missing_modules(e) for e in extras}
    lacking = tuple(e for e, names in by_extra.items() if names)
    if lacking:
        raise MissingExtra(what, lacking, [m for e in lacking for m in by_extra[e]])
