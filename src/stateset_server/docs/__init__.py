"""The machine-readable API description (OpenAPI 3.1) and the human pages built from it."""
