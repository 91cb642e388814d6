"""The AnythingLLM pack (schemas/anythingllm) as its tests use it: where it is, its
extension, its enums' numbers and stored names, and jobs made and moved as the seed's
JobRepository did."""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pool

from schema.loading import load
from tests.declared import Client
from tests.e2e.domain import struct
from tests.e2e.packs.support import PACKS

PACK = PACKS / "anythingllm"
EXTENSIONS = str(PACK / "extensions.py")  # by file path, as the pack's README serves it
PACKAGE = "anythingllm.v1"


def enum(name: str, value: str) -> int:
    """The number of `value` of the pack's enum `name` ("JobStatus", "PROCESSING")."""
    load(PACK)
    found = descriptor_pool.Default().FindEnumTypeByName(f"{PACKAGE}.{name}")
    prefix = "JOB_TYPE_" if name == "JobType" else "JOB_STATUS_"
    return int(found.values_by_name[prefix + value].number)


def stored(name: str, number: int) -> str:
    """A number of the pack's enum `name` as filters and group keys name it
    ("processing", "document_upload")."""
    found = descriptor_pool.Default().FindEnumTypeByName(f"{PACKAGE}.{name}")
    prefix = "JOB_TYPE_" if name == "JobType" else "JOB_STATUS_"
    return str(found.values_by_number[number].name.removeprefix(prefix).lower())


UPLOAD, QUESTION = enum("JobType", "DOCUMENT_UPLOAD"), enum("JobType", "QUESTION_PROCESSING")
PENDING, PROCESSING = enum("JobStatus", "PENDING"), enum("JobStatus", "PROCESSING")
COMPLETED, FAILED = enum("JobStatus", "COMPLETED"), enum("JobStatus", "FAILED")
CANCELLED = enum("JobStatus", "CANCELLED")


async def create_job(c: Client, job_type: int = UPLOAD, **fields: Any) -> Any:
    if "metadata" in fields:
        fields["metadata"] = struct(fields["metadata"])
    return await c("JobService/CreateJob", job=c.message("Job", job_type=job_type, **fields))


async def set_status(c: Client, job_id: str, status: int, **fields: Any) -> Any:
    """update_job_status: UpdateJobStatus (the pack's extension)."""
    if "result" in fields:
        fields["result"] = struct(fields["result"])
    return await c("JobService/UpdateJobStatus", id=job_id, status=status, **fields)
