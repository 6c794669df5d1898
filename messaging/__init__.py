"""The one home of the AMQP plumbing (pika). Services import this, never pika."""

from messaging.errors import (
    BrokerUnavailable,
    ConfirmTimeout,
    FatalBrokerError,
    MessagingError,
    PublishFailed,
    PublishNacked,
    PublishReturned,
)
from messaging.link import BrokerLink
from messaging.session import Delivery, Session
from messaging.session_protocol import BrokerSession, Connect
from messaging.settings import AmqpSettings

__all__ = [
    "AmqpSettings",
    "BrokerLink",
    "BrokerSession",
    "BrokerUnavailable",
    "ConfirmTimeout",
    "Connect",
    "Delivery",
    "FatalBrokerError",
    "MessagingError",
    "PublishFailed",
    "PublishNacked",
    "PublishReturned",
    "Session",
]
