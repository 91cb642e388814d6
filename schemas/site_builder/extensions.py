"""The site-builder pack's one method beyond the standard ones: UpsertPreferences, the
seed's `PreferencesRepository.update(session_id, ...)`, which creates the preferences
when the session has none. Loaded with
REPOGATE_EXTENSIONS=schemas/site_builder/extensions.py (see schemas/site_builder/README.md).
"""

from __future__ import annotations

from typing import Any

from repositories.base import Repository, Row
from repositories.errors import AlreadyExists, Conflict, InvalidArgument
from schema.extensions import Api, Extensions, Handler

extensions = Extensions()


@extensions.method("site_builder.v1.PreferencesService/UpsertPreferences")
def upsert_preferences(api: Api) -> Handler:
    preferences = api.standard("Preferences")

    async def run(request: Any, context: Any) -> Any:
        api.validate(request)
        session_id = request.preferences.session_id
        if not session_id:
            raise InvalidArgument.field("preferences.session_id", "is required")

        async def upsert(repo: Repository) -> Row:
            rows, _ = await repo.page(1, where=repo.c.session_id == session_id)
            if rows:
                change = type(request)()
                change.CopyFrom(request)
                change.preferences.id = str(rows[0]["id"])
                key, values, version = preferences.update_values(change)
                return await repo.update(key, values, version)
            values = preferences.create_values(request.preferences, "preferences")
            try:
                return await repo.create(values)
            except AlreadyExists:
                # A concurrent upsert created them first: run again, this one updates them.
                raise Conflict("the session's preferences were created concurrently") from None

        return await preferences.write_one(request, upsert)

    return run
