"""Returns (RMA): requested → approved → received → processed, with restocking and refunds through
the order's payments (see service.py for the rules)."""
