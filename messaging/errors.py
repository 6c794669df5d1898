"""smartgrid's own small error hierarchy, so services never need to import pika's."""


class MessagingError(Exception):
    """Base of every error the plumbing raises."""


class BrokerUnavailable(MessagingError):
    """No usable connection right now (down, restarting, lost): retry later."""


class FatalBrokerError(MessagingError):
    """The broker refused something that retrying will not fix (credentials, arguments)."""


class PublishFailed(MessagingError):
    """The broker did not take responsibility for a message."""


class PublishNacked(PublishFailed):
    """basic.nack: the broker could not store it (e.g. a full queue with reject-publish)."""


class PublishReturned(PublishFailed):
    """basic.return: a mandatory message matched no queue."""


class ConfirmTimeout(PublishFailed):
    """No confirm arrived in time; the message may or may not be stored."""
