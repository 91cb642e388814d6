from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor

class CountMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COUNT_MODE_UNSPECIFIED: _ClassVar[CountMode]
    COUNT_MODE_NONE: _ClassVar[CountMode]
    COUNT_MODE_EXACT: _ClassVar[CountMode]
    COUNT_MODE_ESTIMATED: _ClassVar[CountMode]
COUNT_MODE_UNSPECIFIED: CountMode
COUNT_MODE_NONE: CountMode
COUNT_MODE_EXACT: CountMode
COUNT_MODE_ESTIMATED: CountMode
