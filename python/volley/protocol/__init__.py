"""Protocol code shared by the SDK, the service and the endpoint: one place, no copies."""
