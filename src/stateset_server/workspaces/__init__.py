"""Workspaces (tenants) and their API keys: who is calling, in which mode, with which scopes."""
