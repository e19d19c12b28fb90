"""Shared plumbing used by every business area: errors, ids, money, time, auth, HTTP helpers."""
