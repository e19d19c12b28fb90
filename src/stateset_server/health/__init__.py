"""Liveness and readiness: is the server up, and can it reach its database."""
