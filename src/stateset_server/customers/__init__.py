"""Customers: CRUD, email unique per workspace and mode, and the hook orders use to link one."""
