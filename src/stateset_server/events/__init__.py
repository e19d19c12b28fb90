"""The event log: one row per state change, written in the change's own transaction.

It is the single source for an object's timeline, and later for webhooks, real-time streams and
analytics: nothing learns about a change any other way.
"""
