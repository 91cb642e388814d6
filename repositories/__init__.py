"""Tenant-scoped repositories over SQLAlchemy Core, and the unit of work that runs them."""
