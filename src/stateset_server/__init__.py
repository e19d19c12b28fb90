"""stateset-server: a self-hosted order-management API server that speaks the StateSet API."""

__version__ = "0.1.0"
API_VERSION = "2024-01-01"
