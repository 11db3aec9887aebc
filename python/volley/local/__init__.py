"""The embedded local stack: a private RabbitMQ node, the web service and a default endpoint."""

from volley.extras import require

require("volley.local (the local stack: broker, service and endpoint)", "service", "endpoint")
