"""Inventory: stock per SKU and location, reservations for orders, and a ledger of every movement."""
