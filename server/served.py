"""What this server answers for: its services, and the names its health service knows."""

from __future__ import annotations

from repogate.v1 import (
    admin_pb2,
    cache_pb2,
    job_pb2,
    message_pb2,
    session_pb2,
    transaction_pb2,
    user_pb2,
)

USER_SERVICE = user_pb2.DESCRIPTOR.services_by_name["UserService"]
TRANSACTION_SERVICE = transaction_pb2.DESCRIPTOR.services_by_name["TransactionService"]
CACHE_SERVICE = cache_pb2.DESCRIPTOR.services_by_name["CacheService"]
SESSION_SERVICE = session_pb2.DESCRIPTOR.services_by_name["SessionService"]
MESSAGE_SERVICE = message_pb2.DESCRIPTOR.services_by_name["MessageService"]
JOB_SERVICE = job_pb2.DESCRIPTOR.services_by_name["JobService"]
ADMIN_SERVICE = admin_pb2.DESCRIPTOR.services_by_name["AdminService"]
# Services whose every call needs x-tenant-id.
TENANT_SCOPED = (
    USER_SERVICE.full_name,
    TRANSACTION_SERVICE.full_name,
    CACHE_SERVICE.full_name,
    SESSION_SERVICE.full_name,
    MESSAGE_SERVICE.full_name,
    JOB_SERVICE.full_name,
)
# Those that need the database.
DATABASE_SERVICES = tuple(name for name in TENANT_SCOPED if name != CACHE_SERVICE.full_name)
# Health names (grpc.health.v1) for Kubernetes' two questions. LIVENESS is about this
# process alone: SERVING from start until stop, whatever the database does, so that a
# kubelet restarts a wedged process (the health service answers on the event loop: a
# loop that does not turn times the probe out) and never a fleet whose database is
# away. READINESS is whether calls should be sent here: SERVING while the database
# breaker is closed and the server is not stopping.
LIVENESS = "liveness"
READINESS = "readiness"
# Every name the health service answers for: the server (""), the two above, and each
# service.
HEALTH_NAMES = ("", LIVENESS, READINESS, *TENANT_SCOPED, ADMIN_SERVICE.full_name)
# NOT_SERVING while the database breaker is open.
NEEDS_DATABASE = ("", READINESS, *DATABASE_SERVICES)
