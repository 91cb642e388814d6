"""Calls Repogate from Python with repogate-client: users, a filtered and paged list, an update
with an etag, transactions, and AIP-193 error details. The same steps as clients/node and
clients/go.

    python example.py [ADDRESS]     (or REPOGATE_ADDRESS; default 127.0.0.1:50051)

Prints one line per step; exits 1 on the first unexpected result.
"""

from __future__ import annotations

import os
import sys
import uuid

import grpc
from google.protobuf import duration_pb2, field_mask_pb2
from repogate_client import ErrorDetails, connect, error_details, transaction

from repogate.v1 import transaction_pb2, user_pb2, user_pb2_grpc

TIMEOUT = 10.0


def check(condition: object, message: str) -> None:
    if not condition:
        print(f"FAIL: {message}", file=sys.stderr)
        sys.exit(1)


def fails(call: object, code: grpc.StatusCode, reason: str) -> ErrorDetails:
    try:
        call()  # type: ignore[operator]
    except grpc.RpcError as error:
        found = error_details(error)
        check(
            found.code == code and found.reason == reason,
            f"expected {code.name} {reason}, got {found.code.name} {found.reason}: {found.message}",
        )
        return found
    check(False, f"expected {code.name} {reason}, the call succeeded")
    raise AssertionError


def main() -> None:
    address = (
        sys.argv[1] if len(sys.argv) > 1 else os.environ.get("REPOGATE_ADDRESS", "127.0.0.1:50051")
    )
    tenant = f"python-{uuid.uuid4().hex[:8]}"
    channel = connect(address, tenant)
    users = user_pb2_grpc.UserServiceStub(channel)
    print(f"address {address}, tenant {tenant}")
    print(f"stubs from {os.path.dirname(user_pb2.__file__)}")

    def exists(user_id: str) -> bool:
        try:
            users.GetUser(user_pb2.GetUserRequest(id=user_id), timeout=TIMEOUT)
        except grpc.RpcError as error:
            if error_details(error).code == grpc.StatusCode.NOT_FOUND:
                return False
            raise
        return True

    created = []
    for i, name in enumerate(["ann", "bob", "cid", "dee", "eve"]):
        display = f"Python {name}" if i < 3 else f"Other {name}"
        user = user_pb2.User(email=f"{name}@example.com", username=name, display_name=display)
        created.append(users.CreateUser(user_pb2.CreateUserRequest(user=user), timeout=TIMEOUT))
    print(f"created {len(created)} users: {', '.join(u.username for u in created)}")

    listed, pages, token = [], 0, ""
    while True:
        page = users.ListUsers(
            user_pb2.ListUsersRequest(
                filter='display_name = "Python*"', page_size=2, page_token=token
            ),
            timeout=TIMEOUT,
        )
        listed += [u.username for u in page.users]
        pages += 1
        token = page.next_page_token
        check(pages <= 10, "paging does not end")
        if not token:
            break
    check(listed == ["ann", "bob", "cid"], f"filtered list gave {listed}")
    print(f'listed display_name = "Python*" with page_size 2: {", ".join(listed)} in {pages} pages')

    ann = created[0]
    mask = field_mask_pb2.FieldMask(paths=["display_name"])
    updated = users.UpdateUser(
        user_pb2.UpdateUserRequest(
            user=user_pb2.User(id=ann.id, display_name="Python Ann B", etag=ann.etag),
            update_mask=mask,
        ),
        timeout=TIMEOUT,
    )
    check(
        updated.display_name == "Python Ann B" and updated.etag != ann.etag, "update did not apply"
    )
    print(
        f'updated ann with etag {ann.etag}: display_name "{updated.display_name}", '
        f"etag now {updated.etag}"
    )
    stale = fails(
        lambda: users.UpdateUser(
            user_pb2.UpdateUserRequest(
                user=user_pb2.User(id=ann.id, display_name="lost", etag=ann.etag), update_mask=mask
            ),
            timeout=TIMEOUT,
        ),
        grpc.StatusCode.ABORTED,
        "ETAG_MISMATCH",
    )
    print(f"update with the stale etag {ann.etag}: {stale.code.name} {stale.reason}")

    options = transaction_pb2.TransactionOptions(idle_timeout=duration_pb2.Duration(seconds=30))
    with transaction(channel, options):
        fay = users.CreateUser(
            user_pb2.CreateUserRequest(user=user_pb2.User(email="fay@example.com", username="fay")),
            timeout=TIMEOUT,
        )
        check(exists(fay.id), "fay is not visible inside her transaction")
    check(exists(fay.id), "fay is missing after commit")
    print("transaction: begin, create fay, commit: fay exists")

    class Undo(Exception):
        pass

    try:
        with transaction(channel):
            gus = users.CreateUser(
                user_pb2.CreateUserRequest(
                    user=user_pb2.User(email="gus@example.com", username="gus")
                ),
                timeout=TIMEOUT,
            )
            raise Undo
    except Undo:
        pass
    check(not exists(gus.id), "gus exists after rollback")
    print("transaction: begin, create gus, rollback: gus is absent")

    bad = fails(
        lambda: users.CreateUser(
            user_pb2.CreateUserRequest(user=user_pb2.User(email="not-an-email", username="hal")),
            timeout=TIMEOUT,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert bad.error_info is not None
    check(bad.error_info.domain == "repogate.dev", f"ErrorInfo domain is {bad.error_info.domain}")
    check(bad.error_info.metadata.get("request_id"), "ErrorInfo metadata has no request_id")
    violations = bad.bad_request.field_violations if bad.bad_request is not None else []
    check("user.email" in [v.field for v in violations], "BadRequest names no user.email")
    print(
        f"invalid email: {bad.code.name}, ErrorInfo reason {bad.reason}, "
        f"domain {bad.error_info.domain}, "
        f"metadata {dict(bad.error_info.metadata)}"
    )
    for v in violations:
        print(f"  BadRequest {v.field}: {v.description}")
    loaded = sorted(m.split(".")[0] for m in sys.modules if m.split(".")[0] in FORBIDDEN)
    check(not loaded, f"the client imported server dependencies: {loaded}")
    print("python example: OK")


# What the server wheel depends on and a stubs-only client must not pull in.
FORBIDDEN = {"sqlalchemy", "asyncpg", "aiosqlite", "redis", "opentelemetry", "server", "schema"}

if __name__ == "__main__":
    try:
        main()
    except grpc.RpcError as error:
        print(f"FAIL: {error_details(error)}", file=sys.stderr)
        sys.exit(1)
