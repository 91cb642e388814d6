"""The AnythingLLM pack's one method beyond the standard ones: UpdateJobStatus, the seed's
`JobRepository.update_job_status(job_id, status, progress)`, with the status timestamps
stamped by the server. Loaded with REPOGATE_EXTENSIONS=schemas/anythingllm/extensions.py
(see schemas/anythingllm/README.md).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf import descriptor_pool
from sqlalchemy import func

from repositories.base import Repository, Row
from repositories.errors import InvalidArgument
from schema.extensions import Api, Extensions, Handler
from server import validation
from server.mapping import json_object, parse_etag, stored_enum_names

extensions = Extensions()

JOB_STATUS = "anythingllm.v1.JobStatus"
FINAL = frozenset({"completed", "failed", "cancelled"})


@extensions.method("anythingllm.v1.JobService/UpdateJobStatus")
def update_job_status(api: Api) -> Handler:
    jobs = api.standard("Job")
    statuses = stored_enum_names(descriptor_pool.Default().FindEnumTypeByName(JOB_STATUS))

    async def run(request: Any, context: Any) -> Any:
        api.validate(request)
        key = validation.resource_id(request.id, "id")
        version = parse_etag(request.etag, "etag")
        values: dict[str, Any] = {"status": statuses[request.status]}
        for name in ("progress", "error_message"):
            if request.HasField(name):
                values[name] = getattr(request, name)
        if request.HasField("result"):
            values["result"] = json_object(request.result)
            problem = validation.json_document(values["result"])
            if problem:
                raise InvalidArgument.field("result", problem)
        now = datetime.now(UTC)

        async def change(repo: Repository) -> Row:
            stamps: dict[str, Any] = {"completed_time": now if values["status"] in FINAL else None}
            if values["status"] == "processing":
                stamps["start_time"] = func.coalesce(repo.c.start_time, now)
            return await repo.update(key, {**values, **stamps}, version)

        return await jobs.write_one(request, change)

    return run
