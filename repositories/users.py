"""Users: the generic repository over the users table."""

from __future__ import annotations

from repositories.base import Repository
from repositories.entity import Entity
from repositories.tables import users

USER = Entity(
    resource_type="user",
    table=users,
    unique_fields={"uq_users_tenant_email": "email", "uq_users_tenant_username": "username"},
    sortable=frozenset({"id", "email", "username", "display_name", "create_time", "update_time"}),
    filterable={
        "email": "string",
        "username": "string",
        "display_name": "string",
        "is_active": "bool",
    },
)


class UserRepository(Repository):
    entity = USER
