"""The embedded local stack: a private RabbitMQ node, the web service and a default endpoint."""
