"""Describes a method of a running server, read through server reflection.

.venv/bin/python scripts/describe.py 127.0.0.1:50051 repogate.v1.UserService/ListUsers
"""

import sys

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

TYPES = {v: k[5:].lower() for k, v in vars(FieldDescriptor).items() if k.startswith("TYPE_")}


def main(address: str, method_name: str) -> None:
    with grpc.insecure_channel(address) as channel:
        pool = DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        service, _, name = method_name.rpartition("/")
        method = pool.FindServiceByName(service).methods_by_name[name]
        print(f"rpc {name}({method.input_type.full_name}) returns ({method.output_type.full_name})")
        for message in (method.input_type, method.output_type):
            print(f"message {message.full_name} {{")
            for field in message.fields:
                named = field.message_type or field.enum_type
                kind = named.full_name if named else TYPES[field.type]
                label = "repeated " if field.is_repeated else ""
                oneof = field.containing_oneof  # proto3 `optional` is a oneof named _<field>
                plain = oneof is None or oneof.name == f"_{field.name}"
                if field.has_presence and field.message_type is None and plain:
                    label = "optional "
                print(f"  {label}{kind} {field.name} = {field.number};")
            print("}")


if __name__ == "__main__":
    main(*sys.argv[1:])
