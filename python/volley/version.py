"""Version of the Volley SDK and the minimum-version check used against services and endpoints."""

from __future__ import annotations

from volley.errors import VersionMismatch

__version__ = "0.1.0"


def compare_versions(current: str, min_version: str, *, package_name: str = "volley") -> None:
    """Raise ``VersionMismatch`` if ``current`` is older than ``min_version``.

    Development builds are never refused: a ``.dev`` ``current`` always passes, and a ``.dev``
    ``min_version`` passes any ``current`` of the same release (``1.2.3a1`` meets
    ``1.2.3.dev0``), so people working from source are not locked out by their own checkout.
    Unparseable versions raise ``packaging.version.InvalidVersion`` (a ``ValueError``).
    """
    # Imported here so ``import volley`` stays cheap for workers that never compare versions.
    from packaging.version import Version

    for arg_name, value in (("current", current), ("min_version", min_version)):
        if not isinstance(value, str):
            raise TypeError(f"{arg_name} must be a version string, got {type(value).__name__}")

    current_v = Version(current)
    min_v = Version(min_version)

    if current_v.is_devrelease:
        return
    if min_v.is_devrelease and current_v.release == min_v.release:
        return
    if current_v < min_v:
        raise VersionMismatch(
            f"Your version={current} is lower than the minimum version for {package_name}: "
            f"{min_version}.  Please update. pip install {package_name}>={min_version}"
        )
