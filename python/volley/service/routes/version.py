"""``GET /v2/version``: the only route that needs no token (SDKs call it before anything)."""

from __future__ import annotations

from fastapi import APIRouter

from volley.service.schemas import VersionInfo
from volley.version import __version__

router = APIRouter(tags=["version"])

# Oldest SDK and endpoint versions the service works with (both required by upstream SDKs,
# which raise VersionMismatch when their own version is lower).
MIN_SDK_VERSION = "0.1.0"
MIN_EP_VERSION = "0.1.0"


@router.get("/v2/version")
def version(service: str | None = None) -> VersionInfo | str:
    """``?service=all`` answers the full document; otherwise the API version string."""
    if service == "all":
        return {
            "api": __version__, "min_sdk_version": MIN_SDK_VERSION, "min_ep_version": MIN_EP_VERSION,
            "git_sha": "volley", "service": "volley",
        }
    return __version__
