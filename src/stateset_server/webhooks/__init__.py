"""Webhooks: endpoints, signed deliveries from a durable outbox, and the real-time stream."""
