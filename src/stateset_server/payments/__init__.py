"""Payments: USDC ledger, test cards, refunds."""
