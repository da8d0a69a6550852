"""Stored records to wire messages."""

import datetime

from google.protobuf import duration_pb2, timestamp_pb2

from koverage.chat.v1 import chat_pb2
from services.chat._store import ConversationRecord, MessageRecord, Outcome

_STATUSES = {
    "streaming": chat_pb2.MESSAGE_STATUS_STREAMING,
    "complete": chat_pb2.MESSAGE_STATUS_COMPLETE,
    "cancelled": chat_pb2.MESSAGE_STATUS_CANCELLED,
    "refused": chat_pb2.MESSAGE_STATUS_REFUSED,
    "failed": chat_pb2.MESSAGE_STATUS_FAILED,
}
_ROLES = {
    "system": chat_pb2.MESSAGE_ROLE_SYSTEM,
    "user": chat_pb2.MESSAGE_ROLE_USER,
    "assistant": chat_pb2.MESSAGE_ROLE_ASSISTANT,
}


def conversation_to_proto(record: ConversationRecord) -> chat_pb2.Conversation:
    """The wire form of a conversation, without messages."""
    return chat_pb2.Conversation(
        id=record.id,
        title=record.title,
        model=record.model,
        system_prompt=record.system_prompt,
        create_time=_timestamp(record.create_time),
        update_time=_timestamp(record.update_time),
        message_count=record.message_count,
    )


def message_to_proto(record: MessageRecord) -> chat_pb2.Message:
    """The wire form of a stored message."""
    return chat_pb2.Message(
        id=record.id,
        role=_ROLES[record.role],
        content=record.content,
        status=_STATUSES[record.status],
        model=record.model,
        input_tokens=record.input_tokens,
        output_tokens=record.output_tokens,
        cost_usd=format(record.cost_usd, "f"),
        failure_reason=record.failure_reason,
        create_time=_timestamp(record.create_time),
        trace_id=record.trace_id,
    )


def completed_event(message_id: str, outcome: Outcome) -> chat_pb2.ChatCompleted:
    """The `completed` event of a generation that ended with `outcome`."""
    event = chat_pb2.ChatCompleted(
        message_id=message_id,
        status=_STATUSES[outcome.status],
        input_tokens=outcome.input_tokens,
        output_tokens=outcome.output_tokens,
        usage_estimated=outcome.usage_estimated,
        cost_usd=format(outcome.cost_usd, "f"),
        model=outcome.model,
        provider=outcome.provider,
        finish_reason=outcome.finish_reason,
        reason=outcome.failure_reason,
        trace_id=outcome.trace_id,
        history_messages_dropped=outcome.history_messages_dropped,
    )
    if outcome.time_to_first_token_ms is not None:
        event.time_to_first_token.CopyFrom(_duration_ms(outcome.time_to_first_token_ms))
    return event


def completed_from_record(record: MessageRecord) -> chat_pb2.ChatCompleted:
    """The `completed` event replayed for a finished, stored message."""
    return completed_event(
        record.id,
        Outcome(
            status=record.status,
            content=record.content,
            model=record.model,
            provider=record.provider,
            input_tokens=record.input_tokens,
            output_tokens=record.output_tokens,
            usage_estimated=record.usage_estimated,
            cost_usd=record.cost_usd,
            finish_reason=record.finish_reason,
            failure_reason=record.failure_reason,
            time_to_first_token_ms=record.time_to_first_token_ms,
            history_messages_dropped=record.history_messages_dropped,
            trace_id=record.trace_id,
        ),
    )


def _timestamp(value: datetime.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _duration_ms(value_ms: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(int(value_ms * 1_000_000))
    return duration
