"""The web service: REST API, storage, broker topology and result routing."""

from volley.extras import require

require("volley.service (the web service)", "service")
