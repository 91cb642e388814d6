from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Aggregation(_message.Message):
    __slots__ = ("function", "field", "alias")
    class Function(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        FUNCTION_UNSPECIFIED: _ClassVar[Aggregation.Function]
        FUNCTION_COUNT: _ClassVar[Aggregation.Function]
        FUNCTION_SUM: _ClassVar[Aggregation.Function]
        FUNCTION_AVG: _ClassVar[Aggregation.Function]
        FUNCTION_MIN: _ClassVar[Aggregation.Function]
        FUNCTION_MAX: _ClassVar[Aggregation.Function]
        FUNCTION_COUNT_DISTINCT: _ClassVar[Aggregation.Function]
    FUNCTION_UNSPECIFIED: Aggregation.Function
    FUNCTION_COUNT: Aggregation.Function
    FUNCTION_SUM: Aggregation.Function
    FUNCTION_AVG: Aggregation.Function
    FUNCTION_MIN: Aggregation.Function
    FUNCTION_MAX: Aggregation.Function
    FUNCTION_COUNT_DISTINCT: Aggregation.Function
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    function: Aggregation.Function
    field: str
    alias: str
    def __init__(self, function: _Optional[_Union[Aggregation.Function, str]] = ..., field: _Optional[str] = ..., alias: _Optional[str] = ...) -> None: ...

class AggregateGroup(_message.Message):
    __slots__ = ("key", "values")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    key: _struct_pb2.Struct
    values: _struct_pb2.Struct
    def __init__(self, key: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., values: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...
