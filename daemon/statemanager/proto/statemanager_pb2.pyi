from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ResourceType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESOURCE_TYPE_UNSPECIFIED: _ClassVar[ResourceType]
    SCENARIO: _ClassVar[ResourceType]
    PACKAGE: _ClassVar[ResourceType]
    MODEL: _ClassVar[ResourceType]
    VOLUME: _ClassVar[ResourceType]
    NETWORK: _ClassVar[ResourceType]
    NODE: _ClassVar[ResourceType]

class ErrorCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SUCCESS: _ClassVar[ErrorCode]
    UNSPECIFIED: _ClassVar[ErrorCode]
    INVALID_REQUEST: _ClassVar[ErrorCode]
    RESOURCE_NOT_FOUND: _ClassVar[ErrorCode]
    INVALID_STATE_TRANSITION: _ClassVar[ErrorCode]
    PRECONDITION_FAILED: _ClassVar[ErrorCode]
    TIMEOUT: _ClassVar[ErrorCode]
    RESOURCE_UNAVAILABLE: _ClassVar[ErrorCode]
    PERMISSION_DENIED: _ClassVar[ErrorCode]
    INTERNAL_ERROR: _ClassVar[ErrorCode]
    DEPENDENCY_FAILED: _ClassVar[ErrorCode]
    RECOVERY_FAILED: _ClassVar[ErrorCode]
RESOURCE_TYPE_UNSPECIFIED: ResourceType
SCENARIO: ResourceType
PACKAGE: ResourceType
MODEL: ResourceType
VOLUME: ResourceType
NETWORK: ResourceType
NODE: ResourceType
SUCCESS: ErrorCode
UNSPECIFIED: ErrorCode
INVALID_REQUEST: ErrorCode
RESOURCE_NOT_FOUND: ErrorCode
INVALID_STATE_TRANSITION: ErrorCode
PRECONDITION_FAILED: ErrorCode
TIMEOUT: ErrorCode
RESOURCE_UNAVAILABLE: ErrorCode
PERMISSION_DENIED: ErrorCode
INTERNAL_ERROR: ErrorCode
DEPENDENCY_FAILED: ErrorCode
RECOVERY_FAILED: ErrorCode

class StateChange(_message.Message):
    __slots__ = ("resource_type", "resource_name", "current_state", "target_state", "transition_id", "timestamp_ns", "source")
    RESOURCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_NAME_FIELD_NUMBER: _ClassVar[int]
    CURRENT_STATE_FIELD_NUMBER: _ClassVar[int]
    TARGET_STATE_FIELD_NUMBER: _ClassVar[int]
    TRANSITION_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_NS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    resource_type: ResourceType
    resource_name: str
    current_state: str
    target_state: str
    transition_id: str
    timestamp_ns: int
    source: str
    def __init__(self, resource_type: _Optional[_Union[ResourceType, str]] = ..., resource_name: _Optional[str] = ..., current_state: _Optional[str] = ..., target_state: _Optional[str] = ..., transition_id: _Optional[str] = ..., timestamp_ns: _Optional[int] = ..., source: _Optional[str] = ...) -> None: ...

class StateChangeResponse(_message.Message):
    __slots__ = ("message", "transition_id", "timestamp_ns", "error_code", "error_details")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TRANSITION_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_NS_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_DETAILS_FIELD_NUMBER: _ClassVar[int]
    message: str
    transition_id: str
    timestamp_ns: int
    error_code: ErrorCode
    error_details: str
    def __init__(self, message: _Optional[str] = ..., transition_id: _Optional[str] = ..., timestamp_ns: _Optional[int] = ..., error_code: _Optional[_Union[ErrorCode, str]] = ..., error_details: _Optional[str] = ...) -> None: ...

class ContainerList(_message.Message):
    __slots__ = ("node_name", "containers")
    NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    CONTAINERS_FIELD_NUMBER: _ClassVar[int]
    node_name: str
    containers: _containers.RepeatedCompositeFieldContainer[ContainerInfo]
    def __init__(self, node_name: _Optional[str] = ..., containers: _Optional[_Iterable[_Union[ContainerInfo, _Mapping]]] = ...) -> None: ...

class ContainerInfo(_message.Message):
    __slots__ = ("id", "names", "image", "state", "config", "annotation", "stats")
    class StateEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class ConfigEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class AnnotationEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class StatsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    NAMES_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    ANNOTATION_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    id: str
    names: _containers.RepeatedScalarFieldContainer[str]
    image: str
    state: _containers.ScalarMap[str, str]
    config: _containers.ScalarMap[str, str]
    annotation: _containers.ScalarMap[str, str]
    stats: _containers.ScalarMap[str, str]
    def __init__(self, id: _Optional[str] = ..., names: _Optional[_Iterable[str]] = ..., image: _Optional[str] = ..., state: _Optional[_Mapping[str, str]] = ..., config: _Optional[_Mapping[str, str]] = ..., annotation: _Optional[_Mapping[str, str]] = ..., stats: _Optional[_Mapping[str, str]] = ...) -> None: ...

class SendContainerListResponse(_message.Message):
    __slots__ = ("resp",)
    RESP_FIELD_NUMBER: _ClassVar[int]
    resp: str
    def __init__(self, resp: _Optional[str] = ...) -> None: ...

class Action(_message.Message):
    __slots__ = ("action",)
    ACTION_FIELD_NUMBER: _ClassVar[int]
    action: str
    def __init__(self, action: _Optional[str] = ...) -> None: ...

class Response(_message.Message):
    __slots__ = ("resp",)
    RESP_FIELD_NUMBER: _ClassVar[int]
    resp: str
    def __init__(self, resp: _Optional[str] = ...) -> None: ...

class OffloadingRequest(_message.Message):
    __slots__ = ("scenario_name", "package_name", "model_name", "source_node", "target_node", "policy_name", "reason")
    SCENARIO_NAME_FIELD_NUMBER: _ClassVar[int]
    PACKAGE_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_NODE_FIELD_NUMBER: _ClassVar[int]
    TARGET_NODE_FIELD_NUMBER: _ClassVar[int]
    POLICY_NAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    scenario_name: str
    package_name: str
    model_name: str
    source_node: str
    target_node: str
    policy_name: str
    reason: str
    def __init__(self, scenario_name: _Optional[str] = ..., package_name: _Optional[str] = ..., model_name: _Optional[str] = ..., source_node: _Optional[str] = ..., target_node: _Optional[str] = ..., policy_name: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class OffloadingResponse(_message.Message):
    __slots__ = ("accepted", "message", "transition_id")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TRANSITION_ID_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    message: str
    transition_id: str
    def __init__(self, accepted: _Optional[bool] = ..., message: _Optional[str] = ..., transition_id: _Optional[str] = ...) -> None: ...
