from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReportStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REPORT_STATUS_UNSPECIFIED: _ClassVar[ReportStatus]
    ACCEPTED: _ClassVar[ReportStatus]
    REPLAYED: _ClassVar[ReportStatus]
    INVALID: _ClassVar[ReportStatus]
    STALE: _ClassVar[ReportStatus]

class CongestionLevel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONGESTION_LEVEL_UNSPECIFIED: _ClassVar[CongestionLevel]
    CONGESTION_LEVEL_LOW: _ClassVar[CongestionLevel]
    CONGESTION_LEVEL_MEDIUM: _ClassVar[CongestionLevel]
    CONGESTION_LEVEL_HIGH: _ClassVar[CongestionLevel]
REPORT_STATUS_UNSPECIFIED: ReportStatus
ACCEPTED: ReportStatus
REPLAYED: ReportStatus
INVALID: ReportStatus
STALE: ReportStatus
CONGESTION_LEVEL_UNSPECIFIED: CongestionLevel
CONGESTION_LEVEL_LOW: CongestionLevel
CONGESTION_LEVEL_MEDIUM: CongestionLevel
CONGESTION_LEVEL_HIGH: CongestionLevel

class Report(_message.Message):
    __slots__ = ("report_id", "time", "public_share", "sealed_shares")
    REPORT_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_SHARE_FIELD_NUMBER: _ClassVar[int]
    SEALED_SHARES_FIELD_NUMBER: _ClassVar[int]
    report_id: bytes
    time: int
    public_share: bytes
    sealed_shares: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, report_id: _Optional[bytes] = ..., time: _Optional[int] = ..., public_share: _Optional[bytes] = ..., sealed_shares: _Optional[_Iterable[bytes]] = ...) -> None: ...

class UploadReportRequest(_message.Message):
    __slots__ = ("task_id", "report")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    task_id: bytes
    report: Report
    def __init__(self, task_id: _Optional[bytes] = ..., report: _Optional[_Union[Report, _Mapping]] = ...) -> None: ...

class UploadReportResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class UploadBatch(_message.Message):
    __slots__ = ("task_id", "reports")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    REPORTS_FIELD_NUMBER: _ClassVar[int]
    task_id: bytes
    reports: _containers.RepeatedCompositeFieldContainer[Report]
    def __init__(self, task_id: _Optional[bytes] = ..., reports: _Optional[_Iterable[_Union[Report, _Mapping]]] = ...) -> None: ...

class ReportOutcome(_message.Message):
    __slots__ = ("report_id", "status", "message")
    REPORT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    report_id: bytes
    status: ReportStatus
    message: str
    def __init__(self, report_id: _Optional[bytes] = ..., status: _Optional[_Union[ReportStatus, str]] = ..., message: _Optional[str] = ...) -> None: ...

class UploadBatchResponse(_message.Message):
    __slots__ = ("outcomes",)
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    outcomes: _containers.RepeatedCompositeFieldContainer[ReportOutcome]
    def __init__(self, outcomes: _Optional[_Iterable[_Union[ReportOutcome, _Mapping]]] = ...) -> None: ...

class ReportShare(_message.Message):
    __slots__ = ("report_id", "time", "public_share", "sealed_share")
    REPORT_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_SHARE_FIELD_NUMBER: _ClassVar[int]
    SEALED_SHARE_FIELD_NUMBER: _ClassVar[int]
    report_id: bytes
    time: int
    public_share: bytes
    sealed_share: bytes
    def __init__(self, report_id: _Optional[bytes] = ..., time: _Optional[int] = ..., public_share: _Optional[bytes] = ..., sealed_share: _Optional[bytes] = ...) -> None: ...

class AggregationJobInit(_message.Message):
    __slots__ = ("task_id", "job_id", "reports")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REPORTS_FIELD_NUMBER: _ClassVar[int]
    task_id: bytes
    job_id: bytes
    reports: _containers.RepeatedCompositeFieldContainer[ReportShare]
    def __init__(self, task_id: _Optional[bytes] = ..., job_id: _Optional[bytes] = ..., reports: _Optional[_Iterable[_Union[ReportShare, _Mapping]]] = ...) -> None: ...

class VerifierShareResult(_message.Message):
    __slots__ = ("report_id", "ok", "verifier_share", "error")
    REPORT_ID_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    VERIFIER_SHARE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    report_id: bytes
    ok: bool
    verifier_share: bytes
    error: str
    def __init__(self, report_id: _Optional[bytes] = ..., ok: _Optional[bool] = ..., verifier_share: _Optional[bytes] = ..., error: _Optional[str] = ...) -> None: ...

class AggregationJobInitResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[VerifierShareResult]
    def __init__(self, results: _Optional[_Iterable[_Union[VerifierShareResult, _Mapping]]] = ...) -> None: ...

class ReportVerdict(_message.Message):
    __slots__ = ("report_id", "accept", "verifier_message")
    REPORT_ID_FIELD_NUMBER: _ClassVar[int]
    ACCEPT_FIELD_NUMBER: _ClassVar[int]
    VERIFIER_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    report_id: bytes
    accept: bool
    verifier_message: bytes
    def __init__(self, report_id: _Optional[bytes] = ..., accept: _Optional[bool] = ..., verifier_message: _Optional[bytes] = ...) -> None: ...

class AggregationJobContinue(_message.Message):
    __slots__ = ("task_id", "job_id", "verdicts")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    VERDICTS_FIELD_NUMBER: _ClassVar[int]
    task_id: bytes
    job_id: bytes
    verdicts: _containers.RepeatedCompositeFieldContainer[ReportVerdict]
    def __init__(self, task_id: _Optional[bytes] = ..., job_id: _Optional[bytes] = ..., verdicts: _Optional[_Iterable[_Union[ReportVerdict, _Mapping]]] = ...) -> None: ...

class AggregationJobContinueResponse(_message.Message):
    __slots__ = ("accepted", "rejected_report_ids")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_REPORT_IDS_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    rejected_report_ids: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, accepted: _Optional[int] = ..., rejected_report_ids: _Optional[_Iterable[bytes]] = ...) -> None: ...

class AggregateShareRequest(_message.Message):
    __slots__ = ("task_id", "window_start", "report_count", "checksum", "collection_id", "collection_index")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    REPORT_COUNT_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_ID_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_INDEX_FIELD_NUMBER: _ClassVar[int]
    task_id: bytes
    window_start: int
    report_count: int
    checksum: bytes
    collection_id: str
    collection_index: int
    def __init__(self, task_id: _Optional[bytes] = ..., window_start: _Optional[int] = ..., report_count: _Optional[int] = ..., checksum: _Optional[bytes] = ..., collection_id: _Optional[str] = ..., collection_index: _Optional[int] = ...) -> None: ...

class AggregateShareResponse(_message.Message):
    __slots__ = ("sealed_aggregate_share", "dp_applied_json")
    SEALED_AGGREGATE_SHARE_FIELD_NUMBER: _ClassVar[int]
    DP_APPLIED_JSON_FIELD_NUMBER: _ClassVar[int]
    sealed_aggregate_share: bytes
    dp_applied_json: str
    def __init__(self, sealed_aggregate_share: _Optional[bytes] = ..., dp_applied_json: _Optional[str] = ...) -> None: ...

class CollectRequest(_message.Message):
    __slots__ = ("task_id", "window_start", "collection_index")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_INDEX_FIELD_NUMBER: _ClassVar[int]
    task_id: bytes
    window_start: int
    collection_index: int
    def __init__(self, task_id: _Optional[bytes] = ..., window_start: _Optional[int] = ..., collection_index: _Optional[int] = ...) -> None: ...

class CollectResponse(_message.Message):
    __slots__ = ("task_id", "window_start", "window_seconds", "report_count", "checksum", "sealed_aggregate_shares", "dp_applied_json", "collection_id", "collection_index")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REPORT_COUNT_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    SEALED_AGGREGATE_SHARES_FIELD_NUMBER: _ClassVar[int]
    DP_APPLIED_JSON_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_ID_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_INDEX_FIELD_NUMBER: _ClassVar[int]
    task_id: bytes
    window_start: int
    window_seconds: int
    report_count: int
    checksum: bytes
    sealed_aggregate_shares: _containers.RepeatedScalarFieldContainer[bytes]
    dp_applied_json: str
    collection_id: str
    collection_index: int
    def __init__(self, task_id: _Optional[bytes] = ..., window_start: _Optional[int] = ..., window_seconds: _Optional[int] = ..., report_count: _Optional[int] = ..., checksum: _Optional[bytes] = ..., sealed_aggregate_shares: _Optional[_Iterable[bytes]] = ..., dp_applied_json: _Optional[str] = ..., collection_id: _Optional[str] = ..., collection_index: _Optional[int] = ...) -> None: ...

class PutTaskRequest(_message.Message):
    __slots__ = ("task_json", "aggregator_index", "verify_key")
    TASK_JSON_FIELD_NUMBER: _ClassVar[int]
    AGGREGATOR_INDEX_FIELD_NUMBER: _ClassVar[int]
    VERIFY_KEY_FIELD_NUMBER: _ClassVar[int]
    task_json: str
    aggregator_index: int
    verify_key: bytes
    def __init__(self, task_json: _Optional[str] = ..., aggregator_index: _Optional[int] = ..., verify_key: _Optional[bytes] = ...) -> None: ...

class PutTaskResponse(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: bytes
    def __init__(self, task_id: _Optional[bytes] = ...) -> None: ...

class AmendTaskRequest(_message.Message):
    __slots__ = ("task_id", "amendment_json")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    AMENDMENT_JSON_FIELD_NUMBER: _ClassVar[int]
    task_id: bytes
    amendment_json: str
    def __init__(self, task_id: _Optional[bytes] = ..., amendment_json: _Optional[str] = ...) -> None: ...

class AmendTaskResponse(_message.Message):
    __slots__ = ("task_json",)
    TASK_JSON_FIELD_NUMBER: _ClassVar[int]
    task_json: str
    def __init__(self, task_json: _Optional[str] = ...) -> None: ...

class ListTasksRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTasksResponse(_message.Message):
    __slots__ = ("task_json",)
    TASK_JSON_FIELD_NUMBER: _ClassVar[int]
    task_json: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, task_json: _Optional[_Iterable[str]] = ...) -> None: ...

class GetHpkeConfigRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetHpkeConfigResponse(_message.Message):
    __slots__ = ("hpke_config", "identity")
    HPKE_CONFIG_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    hpke_config: bytes
    identity: str
    def __init__(self, hpke_config: _Optional[bytes] = ..., identity: _Optional[str] = ...) -> None: ...

class HpkeKeyInfo(_message.Message):
    __slots__ = ("hpke_config", "state", "current", "created", "retired")
    HPKE_CONFIG_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    RETIRED_FIELD_NUMBER: _ClassVar[int]
    hpke_config: bytes
    state: str
    current: bool
    created: int
    retired: int
    def __init__(self, hpke_config: _Optional[bytes] = ..., state: _Optional[str] = ..., current: _Optional[bool] = ..., created: _Optional[int] = ..., retired: _Optional[int] = ...) -> None: ...

class RotateHpkeKeyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RotateHpkeKeyResponse(_message.Message):
    __slots__ = ("hpke_config",)
    HPKE_CONFIG_FIELD_NUMBER: _ClassVar[int]
    hpke_config: bytes
    def __init__(self, hpke_config: _Optional[bytes] = ...) -> None: ...

class RetireHpkeKeyRequest(_message.Message):
    __slots__ = ("config_id", "force")
    CONFIG_ID_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    config_id: int
    force: bool
    def __init__(self, config_id: _Optional[int] = ..., force: _Optional[bool] = ...) -> None: ...

class RetireHpkeKeyResponse(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: HpkeKeyInfo
    def __init__(self, key: _Optional[_Union[HpkeKeyInfo, _Mapping]] = ...) -> None: ...

class ListHpkeKeysRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListHpkeKeysResponse(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[HpkeKeyInfo]
    def __init__(self, keys: _Optional[_Iterable[_Union[HpkeKeyInfo, _Mapping]]] = ...) -> None: ...

class ForecastRequest(_message.Message):
    __slots__ = ("hour", "weekend", "upstream_1", "upstream_2", "rain", "incident")
    HOUR_FIELD_NUMBER: _ClassVar[int]
    WEEKEND_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_1_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_2_FIELD_NUMBER: _ClassVar[int]
    RAIN_FIELD_NUMBER: _ClassVar[int]
    INCIDENT_FIELD_NUMBER: _ClassVar[int]
    hour: float
    weekend: bool
    upstream_1: int
    upstream_2: int
    rain: bool
    incident: bool
    def __init__(self, hour: _Optional[float] = ..., weekend: _Optional[bool] = ..., upstream_1: _Optional[int] = ..., upstream_2: _Optional[int] = ..., rain: _Optional[bool] = ..., incident: _Optional[bool] = ...) -> None: ...

class ForecastResponse(_message.Message):
    __slots__ = ("level", "model_card_json")
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_CARD_JSON_FIELD_NUMBER: _ClassVar[int]
    level: CongestionLevel
    model_card_json: str
    def __init__(self, level: _Optional[_Union[CongestionLevel, str]] = ..., model_card_json: _Optional[str] = ...) -> None: ...

class MasksRoundRequest(_message.Message):
    __slots__ = ("task_id", "window_start", "attempt", "message")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    task_id: bytes
    window_start: int
    attempt: int
    message: bytes
    def __init__(self, task_id: _Optional[bytes] = ..., window_start: _Optional[int] = ..., attempt: _Optional[int] = ..., message: _Optional[bytes] = ...) -> None: ...

class MasksRoundReply(_message.Message):
    __slots__ = ("message",)
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message: bytes
    def __init__(self, message: _Optional[bytes] = ...) -> None: ...
