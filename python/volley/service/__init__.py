"""The web service: REST API, storage, broker topology and result routing."""
