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

class ASILLevel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ASIL_LEVEL_UNSPECIFIED: _ClassVar[ASILLevel]
    ASIL_LEVEL_QM: _ClassVar[ASILLevel]
    ASIL_LEVEL_A: _ClassVar[ASILLevel]
    ASIL_LEVEL_B: _ClassVar[ASILLevel]
    ASIL_LEVEL_C: _ClassVar[ASILLevel]
    ASIL_LEVEL_D: _ClassVar[ASILLevel]

class RecoveryPhase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RECOVERY_PHASE_UNSPECIFIED: _ClassVar[RecoveryPhase]
    RECOVERY_PHASE_INITIALIZING: _ClassVar[RecoveryPhase]
    RECOVERY_PHASE_EXECUTING: _ClassVar[RecoveryPhase]
    RECOVERY_PHASE_VALIDATING: _ClassVar[RecoveryPhase]
    RECOVERY_PHASE_COMPLETED: _ClassVar[RecoveryPhase]
    RECOVERY_PHASE_FAILED: _ClassVar[RecoveryPhase]
    RECOVERY_PHASE_ABORTED: _ClassVar[RecoveryPhase]

class RecoveryStepStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RECOVERY_STEP_STATUS_UNSPECIFIED: _ClassVar[RecoveryStepStatus]
    RECOVERY_STEP_STATUS_PENDING: _ClassVar[RecoveryStepStatus]
    RECOVERY_STEP_STATUS_RUNNING: _ClassVar[RecoveryStepStatus]
    RECOVERY_STEP_STATUS_COMPLETED: _ClassVar[RecoveryStepStatus]
    RECOVERY_STEP_STATUS_FAILED: _ClassVar[RecoveryStepStatus]
    RECOVERY_STEP_STATUS_SKIPPED: _ClassVar[RecoveryStepStatus]

class EventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_TYPE_UNSPECIFIED: _ClassVar[EventType]
    EVENT_TYPE_STATE_CHANGE: _ClassVar[EventType]
    EVENT_TYPE_HEALTH_STATUS: _ClassVar[EventType]
    EVENT_TYPE_RECOVERY_START: _ClassVar[EventType]
    EVENT_TYPE_RECOVERY_COMPLETE: _ClassVar[EventType]
    EVENT_TYPE_RECOVERY_FAILED: _ClassVar[EventType]
    EVENT_TYPE_ALERT: _ClassVar[EventType]
    EVENT_TYPE_WARNING: _ClassVar[EventType]

class Severity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEVERITY_UNSPECIFIED: _ClassVar[Severity]
    SEVERITY_INFO: _ClassVar[Severity]
    SEVERITY_WARNING: _ClassVar[Severity]
    SEVERITY_ERROR: _ClassVar[Severity]
    SEVERITY_CRITICAL: _ClassVar[Severity]
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
ASIL_LEVEL_UNSPECIFIED: ASILLevel
ASIL_LEVEL_QM: ASILLevel
ASIL_LEVEL_A: ASILLevel
ASIL_LEVEL_B: ASILLevel
ASIL_LEVEL_C: ASILLevel
ASIL_LEVEL_D: ASILLevel
RECOVERY_PHASE_UNSPECIFIED: RecoveryPhase
RECOVERY_PHASE_INITIALIZING: RecoveryPhase
RECOVERY_PHASE_EXECUTING: RecoveryPhase
RECOVERY_PHASE_VALIDATING: RecoveryPhase
RECOVERY_PHASE_COMPLETED: RecoveryPhase
RECOVERY_PHASE_FAILED: RecoveryPhase
RECOVERY_PHASE_ABORTED: RecoveryPhase
RECOVERY_STEP_STATUS_UNSPECIFIED: RecoveryStepStatus
RECOVERY_STEP_STATUS_PENDING: RecoveryStepStatus
RECOVERY_STEP_STATUS_RUNNING: RecoveryStepStatus
RECOVERY_STEP_STATUS_COMPLETED: RecoveryStepStatus
RECOVERY_STEP_STATUS_FAILED: RecoveryStepStatus
RECOVERY_STEP_STATUS_SKIPPED: RecoveryStepStatus
EVENT_TYPE_UNSPECIFIED: EventType
EVENT_TYPE_STATE_CHANGE: EventType
EVENT_TYPE_HEALTH_STATUS: EventType
EVENT_TYPE_RECOVERY_START: EventType
EVENT_TYPE_RECOVERY_COMPLETE: EventType
EVENT_TYPE_RECOVERY_FAILED: EventType
EVENT_TYPE_ALERT: EventType
EVENT_TYPE_WARNING: EventType
SEVERITY_UNSPECIFIED: Severity
SEVERITY_INFO: Severity
SEVERITY_WARNING: Severity
SEVERITY_ERROR: Severity
SEVERITY_CRITICAL: Severity

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

class ResourceStateRequest(_message.Message):
    __slots__ = ("resource_type", "resource_name")
    RESOURCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_NAME_FIELD_NUMBER: _ClassVar[int]
    resource_type: ResourceType
    resource_name: str
    def __init__(self, resource_type: _Optional[_Union[ResourceType, str]] = ..., resource_name: _Optional[str] = ...) -> None: ...

class ResourceStateResponse(_message.Message):
    __slots__ = ("resource_state", "success", "message")
    RESOURCE_STATE_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    resource_state: ResourceState
    success: bool
    message: str
    def __init__(self, resource_state: _Optional[_Union[ResourceState, _Mapping]] = ..., success: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class ResourceState(_message.Message):
    __slots__ = ("resource_type", "resource_name", "current_state", "desired_state", "last_transition_time_ns", "state_generation", "asil_level", "metadata", "history", "health_status")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RESOURCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_NAME_FIELD_NUMBER: _ClassVar[int]
    CURRENT_STATE_FIELD_NUMBER: _ClassVar[int]
    DESIRED_STATE_FIELD_NUMBER: _ClassVar[int]
    LAST_TRANSITION_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    STATE_GENERATION_FIELD_NUMBER: _ClassVar[int]
    ASIL_LEVEL_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    HEALTH_STATUS_FIELD_NUMBER: _ClassVar[int]
    resource_type: ResourceType
    resource_name: str
    current_state: str
    desired_state: str
    last_transition_time_ns: int
    state_generation: int
    asil_level: ASILLevel
    metadata: _containers.ScalarMap[str, str]
    history: _containers.RepeatedCompositeFieldContainer[StateTransitionHistory]
    health_status: HealthStatus
    def __init__(self, resource_type: _Optional[_Union[ResourceType, str]] = ..., resource_name: _Optional[str] = ..., current_state: _Optional[str] = ..., desired_state: _Optional[str] = ..., last_transition_time_ns: _Optional[int] = ..., state_generation: _Optional[int] = ..., asil_level: _Optional[_Union[ASILLevel, str]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., history: _Optional[_Iterable[_Union[StateTransitionHistory, _Mapping]]] = ..., health_status: _Optional[_Union[HealthStatus, _Mapping]] = ...) -> None: ...

class StateTransitionHistory(_message.Message):
    __slots__ = ("from_state", "to_state", "timestamp_ns", "transition_id", "reason", "source", "duration_ms", "success")
    FROM_STATE_FIELD_NUMBER: _ClassVar[int]
    TO_STATE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_NS_FIELD_NUMBER: _ClassVar[int]
    TRANSITION_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    from_state: str
    to_state: str
    timestamp_ns: int
    transition_id: str
    reason: str
    source: str
    duration_ms: int
    success: bool
    def __init__(self, from_state: _Optional[str] = ..., to_state: _Optional[str] = ..., timestamp_ns: _Optional[int] = ..., transition_id: _Optional[str] = ..., reason: _Optional[str] = ..., source: _Optional[str] = ..., duration_ms: _Optional[int] = ..., success: _Optional[bool] = ...) -> None: ...

class HealthStatus(_message.Message):
    __slots__ = ("healthy", "status_message", "last_health_check_ns", "checks")
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    STATUS_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LAST_HEALTH_CHECK_NS_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    healthy: bool
    status_message: str
    last_health_check_ns: int
    checks: _containers.RepeatedCompositeFieldContainer[HealthCheck]
    def __init__(self, healthy: _Optional[bool] = ..., status_message: _Optional[str] = ..., last_health_check_ns: _Optional[int] = ..., checks: _Optional[_Iterable[_Union[HealthCheck, _Mapping]]] = ...) -> None: ...

class HealthCheck(_message.Message):
    __slots__ = ("check_name", "passed", "message", "timestamp_ns")
    CHECK_NAME_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_NS_FIELD_NUMBER: _ClassVar[int]
    check_name: str
    passed: bool
    message: str
    timestamp_ns: int
    def __init__(self, check_name: _Optional[str] = ..., passed: _Optional[bool] = ..., message: _Optional[str] = ..., timestamp_ns: _Optional[int] = ...) -> None: ...

class ResourceStateHistoryRequest(_message.Message):
    __slots__ = ("resource_type", "resource_name", "start_time_ns", "end_time_ns", "limit")
    RESOURCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_NAME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    END_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    resource_type: ResourceType
    resource_name: str
    start_time_ns: int
    end_time_ns: int
    limit: int
    def __init__(self, resource_type: _Optional[_Union[ResourceType, str]] = ..., resource_name: _Optional[str] = ..., start_time_ns: _Optional[int] = ..., end_time_ns: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class ResourceStateHistoryResponse(_message.Message):
    __slots__ = ("history", "success", "message")
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    history: _containers.RepeatedCompositeFieldContainer[StateTransitionHistory]
    success: bool
    message: str
    def __init__(self, history: _Optional[_Iterable[_Union[StateTransitionHistory, _Mapping]]] = ..., success: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class ListResourcesByStateRequest(_message.Message):
    __slots__ = ("resource_type", "state", "label_selector", "limit")
    class LabelSelectorEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RESOURCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LABEL_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    resource_type: ResourceType
    state: str
    label_selector: _containers.ScalarMap[str, str]
    limit: int
    def __init__(self, resource_type: _Optional[_Union[ResourceType, str]] = ..., state: _Optional[str] = ..., label_selector: _Optional[_Mapping[str, str]] = ..., limit: _Optional[int] = ...) -> None: ...

class ListResourcesByStateResponse(_message.Message):
    __slots__ = ("resources", "success", "message", "total_count")
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_COUNT_FIELD_NUMBER: _ClassVar[int]
    resources: _containers.RepeatedCompositeFieldContainer[ResourceState]
    success: bool
    message: str
    total_count: int
    def __init__(self, resources: _Optional[_Iterable[_Union[ResourceState, _Mapping]]] = ..., success: _Optional[bool] = ..., message: _Optional[str] = ..., total_count: _Optional[int] = ...) -> None: ...

class ForceSynchronizationRequest(_message.Message):
    __slots__ = ("resource_type", "resource_name", "deep_sync")
    RESOURCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_NAME_FIELD_NUMBER: _ClassVar[int]
    DEEP_SYNC_FIELD_NUMBER: _ClassVar[int]
    resource_type: ResourceType
    resource_name: str
    deep_sync: bool
    def __init__(self, resource_type: _Optional[_Union[ResourceType, str]] = ..., resource_name: _Optional[str] = ..., deep_sync: _Optional[bool] = ...) -> None: ...

class RecoveryStatusRequest(_message.Message):
    __slots__ = ("resource_type", "resource_name", "recovery_id")
    RESOURCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_NAME_FIELD_NUMBER: _ClassVar[int]
    RECOVERY_ID_FIELD_NUMBER: _ClassVar[int]
    resource_type: ResourceType
    resource_name: str
    recovery_id: str
    def __init__(self, resource_type: _Optional[_Union[ResourceType, str]] = ..., resource_name: _Optional[str] = ..., recovery_id: _Optional[str] = ...) -> None: ...

class RecoveryStatusResponse(_message.Message):
    __slots__ = ("status", "success", "message")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    status: RecoveryStatus
    success: bool
    message: str
    def __init__(self, status: _Optional[_Union[RecoveryStatus, _Mapping]] = ..., success: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class RecoveryStatus(_message.Message):
    __slots__ = ("recovery_id", "phase", "retry_count", "start_time_ns", "estimated_completion_ns", "status_message", "progress_percentage", "steps")
    RECOVERY_ID_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    RETRY_COUNT_FIELD_NUMBER: _ClassVar[int]
    START_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_COMPLETION_NS_FIELD_NUMBER: _ClassVar[int]
    STATUS_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_PERCENTAGE_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    recovery_id: str
    phase: RecoveryPhase
    retry_count: int
    start_time_ns: int
    estimated_completion_ns: int
    status_message: str
    progress_percentage: float
    steps: _containers.RepeatedCompositeFieldContainer[RecoveryStep]
    def __init__(self, recovery_id: _Optional[str] = ..., phase: _Optional[_Union[RecoveryPhase, str]] = ..., retry_count: _Optional[int] = ..., start_time_ns: _Optional[int] = ..., estimated_completion_ns: _Optional[int] = ..., status_message: _Optional[str] = ..., progress_percentage: _Optional[float] = ..., steps: _Optional[_Iterable[_Union[RecoveryStep, _Mapping]]] = ...) -> None: ...

class RecoveryStep(_message.Message):
    __slots__ = ("step_name", "status", "start_time_ns", "completion_time_ns", "message")
    STEP_NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    START_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    step_name: str
    status: RecoveryStepStatus
    start_time_ns: int
    completion_time_ns: int
    message: str
    def __init__(self, step_name: _Optional[str] = ..., status: _Optional[_Union[RecoveryStepStatus, str]] = ..., start_time_ns: _Optional[int] = ..., completion_time_ns: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class StateChangeSubscriptionRequest(_message.Message):
    __slots__ = ("resource_type", "filter", "include_health_events", "include_recovery_events")
    class FilterEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RESOURCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_HEALTH_EVENTS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_RECOVERY_EVENTS_FIELD_NUMBER: _ClassVar[int]
    resource_type: ResourceType
    filter: _containers.ScalarMap[str, str]
    include_health_events: bool
    include_recovery_events: bool
    def __init__(self, resource_type: _Optional[_Union[ResourceType, str]] = ..., filter: _Optional[_Mapping[str, str]] = ..., include_health_events: _Optional[bool] = ..., include_recovery_events: _Optional[bool] = ...) -> None: ...

class StateChangeEvent(_message.Message):
    __slots__ = ("event_type", "state_change", "event_timestamp_ns", "event_id", "severity", "description", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    STATE_CHANGE_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIMESTAMP_NS_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    event_type: EventType
    state_change: StateChange
    event_timestamp_ns: int
    event_id: str
    severity: Severity
    description: str
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, event_type: _Optional[_Union[EventType, str]] = ..., state_change: _Optional[_Union[StateChange, _Mapping]] = ..., event_timestamp_ns: _Optional[int] = ..., event_id: _Optional[str] = ..., severity: _Optional[_Union[Severity, str]] = ..., description: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...
