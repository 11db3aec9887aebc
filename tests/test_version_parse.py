"""compare_versions: who counts as too old, and what they are told."""

from __future__ import annotations

import pytest
from packaging.version import InvalidVersion

from volley import __version__
from volley.errors import VersionMismatch
from volley.version import compare_versions


@pytest.mark.parametrize(
    "current, minimum",
    [
        ("1.2.3", "1.2.3"),
        ("1.2.4", "1.2.3"),
        ("2.0.0", "1.9.9"),
        # a development build of the current release passes whatever the minimum says
        ("1.2.3-dev", "1.2.3"),
        ("1.2.3-dev", "1.2.3b2"),
        ("0.0.1.dev4", "9.0.0"),
        # a .dev minimum is met by anything of the same release
        ("1.2.3a1", "1.2.3-dev"),
        ("1.2.3", "1.2.3.dev0"),
    ],
)
def test_accepted(current: str, minimum: str) -> None:
    compare_versions(current, minimum)  # must not raise


@pytest.mark.parametrize(
    "current, minimum",
    [
        ("1.2.3", "1.2.4"),
        ("1.2.3", "2.0"),
        ("1.2.3b1", "1.2.3"),
        # a .dev minimum of a *later* release is still a later release
        ("1.2.3", "1.2.4-dev"),
    ],
)
def test_refused(current: str, minimum: str) -> None:
    with pytest.raises(VersionMismatch):
        compare_versions(current, minimum)


def test_message_text_default_package() -> None:
    with pytest.raises(VersionMismatch) as info:
        compare_versions("1.2.3", "1.3.0")
    assert info.value.version_message == (
        "Your version=1.2.3 is lower than the minimum version for volley: 1.3.0.  "
        "Please update. pip install volley>=1.3.0"
    )
    assert str(info.value).startswith("Globus Compute Versioning Issue: Your version=1.2.3")


def test_message_uses_the_given_strings_and_package_name() -> None:
    # The versions are quoted as written, not normalised (1.0-dev stays 1.0-dev).
    with pytest.raises(VersionMismatch) as info:
        compare_versions("0.9", "1.0", package_name="globus-compute-sdk")
    assert info.value.version_message == (
        "Your version=0.9 is lower than the minimum version for globus-compute-sdk: 1.0.  "
        "Please update. pip install globus-compute-sdk>=1.0"
    )


def test_package_name_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        compare_versions("1.0", "1.0", "volley")  # type: ignore[call-arg]


@pytest.mark.parametrize("current, minimum", [("not a version", "1.0"), ("1.0", "one.two")])
def test_unparseable_versions(current: str, minimum: str) -> None:
    with pytest.raises(InvalidVersion):
        compare_versions(current, minimum)


@pytest.mark.parametrize("current, minimum", [(1.2, "1.0"), ("1.0", None)])
def test_non_string_versions(current: object, minimum: object) -> None:
    with pytest.raises(TypeError, match="must be a version string"):
        compare_versions(current, minimum)  # type: ignore[arg-type]


def test_own_version_is_valid() -> None:
    assert __version__ == "0.1.0"
    compare_versions(__version__, "0.1.0")
