from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PodStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NONE: _ClassVar[PodStatus]
    INIT: _ClassVar[PodStatus]
    READY: _ClassVar[PodStatus]
    RUNNING: _ClassVar[PodStatus]
    DONE: _ClassVar[PodStatus]
    FAILED: _ClassVar[PodStatus]
    UNKNOWN: _ClassVar[PodStatus]
NONE: PodStatus
INIT: PodStatus
READY: PodStatus
RUNNING: PodStatus
DONE: PodStatus
FAILED: PodStatus
UNKNOWN: PodStatus

class ReconcileRequest(_message.Message):
    __slots__ = ("scenario_name", "current", "desired")
    SCENARIO_NAME_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    DESIRED_FIELD_NUMBER: _ClassVar[int]
    scenario_name: str
    current: PodStatus
    desired: PodStatus
    def __init__(self, scenario_name: _Optional[str] = ..., current: _Optional[_Union[PodStatus, str]] = ..., desired: _Optional[_Union[PodStatus, str]] = ...) -> None: ...

class ReconcileResponse(_message.Message):
    __slots__ = ("status", "desc")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DESC_FIELD_NUMBER: _ClassVar[int]
    status: int
    desc: str
    def __init__(self, status: _Optional[int] = ..., desc: _Optional[str] = ...) -> None: ...

class OffloadModelRequest(_message.Message):
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

class OffloadModelResponse(_message.Message):
    __slots__ = ("success", "message", "transition_id")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TRANSITION_ID_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    transition_id: str
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ..., transition_id: _Optional[str] = ...) -> None: ...
