"""Helpers for the end-to-end tests of sessions, messages and jobs: stubs on one
channel, and short ways to create what a test needs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf import struct_pb2
from grpc import aio

from repogate.v1 import (
    job_pb2,
    job_pb2_grpc,
    message_pb2,
    message_pb2_grpc,
    session_pb2,
    session_pb2_grpc,
    transaction_pb2_grpc,
    user_pb2,
    user_pb2_grpc,
)
from tests.rpc import md


@dataclass
class Stubs:
    users: user_pb2_grpc.UserServiceStub
    sessions: session_pb2_grpc.SessionServiceStub
    messages: message_pb2_grpc.MessageServiceStub
    jobs: job_pb2_grpc.JobServiceStub
    txs: transaction_pb2_grpc.TransactionServiceStub

    @classmethod
    def on(cls, channel: aio.Channel) -> Stubs:
        return cls(
            user_pb2_grpc.UserServiceStub(channel),
            session_pb2_grpc.SessionServiceStub(channel),
            message_pb2_grpc.MessageServiceStub(channel),
            job_pb2_grpc.JobServiceStub(channel),
            transaction_pb2_grpc.TransactionServiceStub(channel),
        )


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


def plain(message: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as JSON data, numbers as floats (as Struct holds them)."""
    return {key: _plain(value) for key, value in message.fields.items()}


def _plain(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return plain(value.struct_value)
    if kind == "list_value":
        return [_plain(item) for item in value.list_value.values]
    return None if kind == "null_value" else getattr(value, kind)


async def new_user(s: Stubs, tenant: str, name: str = "ann", **metadata: str) -> user_pb2.User:
    user = user_pb2.User(email=f"{name}@example.com", username=name)
    return await s.users.CreateUser(
        user_pb2.CreateUserRequest(user=user), metadata=md(tenant, **metadata)
    )


async def new_session(s: Stubs, tenant: str, user_id: str, **fields: Any) -> session_pb2.Session:
    session = session_pb2.Session(user_id=user_id, **fields)
    return await s.sessions.CreateSession(
        session_pb2.CreateSessionRequest(session=session), metadata=md(tenant)
    )


async def append(
    s: Stubs,
    tenant: str,
    session_id: str,
    message_type: str = "user",
    content: dict[str, Any] | None = None,
    **fields: Any,
) -> message_pb2.Message:
    message = message_pb2.Message(
        session_id=session_id,
        message_type=message_type,
        content=struct(content or {}),
        **fields,
    )
    return await s.messages.AppendMessage(
        message_pb2.AppendMessageRequest(message=message), metadata=md(tenant)
    )


async def enqueue(s: Stubs, tenant: str, job_type: str = "render", **fields: Any) -> job_pb2.Job:
    return await s.jobs.CreateJob(
        job_pb2.CreateJobRequest(job=job_pb2.Job(job_type=job_type, **fields)),
        metadata=md(tenant),
    )


async def claim(s: Stubs, tenant: str, worker: str = "w1", *job_types: str) -> job_pb2.Job | None:
    response = await s.jobs.ClaimNextJob(
        job_pb2.ClaimNextJobRequest(worker_id=worker, job_types=job_types), metadata=md(tenant)
    )
    return response.job if response.HasField("job") else None
