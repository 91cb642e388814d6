"""Users: the generic repository over the users table."""

from __future__ import annotations

from repositories.base import Repository
from repositories.entity import Entity
from repositories.tables import users

USER = Entity(
    resource_type="user",
    table=users,
    unique_fields={"uq_users_tenant_email": "email", "uq_users_tenant_username": "username"},
)


class UserRepository(Repository):
    entity = USER
