from google.protobuf import descriptor_pb2 as _descriptor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OnDelete(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ON_DELETE_UNSPECIFIED: _ClassVar[OnDelete]
    ON_DELETE_RESTRICT: _ClassVar[OnDelete]
    ON_DELETE_CASCADE: _ClassVar[OnDelete]
    ON_DELETE_SET_NULL: _ClassVar[OnDelete]
ON_DELETE_UNSPECIFIED: OnDelete
ON_DELETE_RESTRICT: OnDelete
ON_DELETE_CASCADE: OnDelete
ON_DELETE_SET_NULL: OnDelete
RESOURCE_FIELD_NUMBER: _ClassVar[int]
resource: _descriptor.FieldDescriptor
FIELD_FIELD_NUMBER: _ClassVar[int]
field: _descriptor.FieldDescriptor

class ResourceOptions(_message.Message):
    __slots__ = ("table", "singular", "plural", "default_order", "indexes")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    SINGULAR_FIELD_NUMBER: _ClassVar[int]
    PLURAL_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_ORDER_FIELD_NUMBER: _ClassVar[int]
    INDEXES_FIELD_NUMBER: _ClassVar[int]
    table: str
    singular: str
    plural: str
    default_order: str
    indexes: _containers.RepeatedCompositeFieldContainer[Index]
    def __init__(self, table: _Optional[str] = ..., singular: _Optional[str] = ..., plural: _Optional[str] = ..., default_order: _Optional[str] = ..., indexes: _Optional[_Iterable[_Union[Index, _Mapping]]] = ...) -> None: ...

class Index(_message.Message):
    __slots__ = ("fields", "unique")
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    UNIQUE_FIELD_NUMBER: _ClassVar[int]
    fields: _containers.RepeatedScalarFieldContainer[str]
    unique: bool
    def __init__(self, fields: _Optional[_Iterable[str]] = ..., unique: _Optional[bool] = ...) -> None: ...

class Reference(_message.Message):
    __slots__ = ("resource", "on_delete")
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    ON_DELETE_FIELD_NUMBER: _ClassVar[int]
    resource: str
    on_delete: OnDelete
    def __init__(self, resource: _Optional[str] = ..., on_delete: _Optional[_Union[OnDelete, str]] = ...) -> None: ...

class Sequence(_message.Message):
    __slots__ = ("parent",)
    PARENT_FIELD_NUMBER: _ClassVar[int]
    parent: str
    def __init__(self, parent: _Optional[str] = ...) -> None: ...

class FieldOptions(_message.Message):
    __slots__ = ("filterable", "sortable", "unique", "case_insensitive", "immutable", "output_only", "required", "default", "reference", "searchable", "counter", "sequence", "related")
    FILTERABLE_FIELD_NUMBER: _ClassVar[int]
    SORTABLE_FIELD_NUMBER: _ClassVar[int]
    UNIQUE_FIELD_NUMBER: _ClassVar[int]
    CASE_INSENSITIVE_FIELD_NUMBER: _ClassVar[int]
    IMMUTABLE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_ONLY_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    SEARCHABLE_FIELD_NUMBER: _ClassVar[int]
    COUNTER_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    RELATED_FIELD_NUMBER: _ClassVar[int]
    filterable: bool
    sortable: bool
    unique: bool
    case_insensitive: bool
    immutable: bool
    output_only: bool
    required: bool
    default: str
    reference: Reference
    searchable: bool
    counter: bool
    sequence: Sequence
    related: Related
    def __init__(self, filterable: _Optional[bool] = ..., sortable: _Optional[bool] = ..., unique: _Optional[bool] = ..., case_insensitive: _Optional[bool] = ..., immutable: _Optional[bool] = ..., output_only: _Optional[bool] = ..., required: _Optional[bool] = ..., default: _Optional[str] = ..., reference: _Optional[_Union[Reference, _Mapping]] = ..., searchable: _Optional[bool] = ..., counter: _Optional[bool] = ..., sequence: _Optional[_Union[Sequence, _Mapping]] = ..., related: _Optional[_Union[Related, _Mapping]] = ...) -> None: ...

class Related(_message.Message):
    __slots__ = ("via", "limit", "order_by", "truncated")
    VIA_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    ORDER_BY_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    via: str
    limit: int
    order_by: str
    truncated: str
    def __init__(self, via: _Optional[str] = ..., limit: _Optional[int] = ..., order_by: _Optional[str] = ..., truncated: _Optional[str] = ...) -> None: ...
