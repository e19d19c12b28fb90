"""Orders: intake, pricing, the lifecycle, and how an order is shown."""
