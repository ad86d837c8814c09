"""Errors of the message bus.

::

    TrancheError
    └── BusError                   the bus could not do what was asked
        ├── UnsupportedBusUrlError  TRANCHE_BUS_URL names no backend tranche has
        ├── BusClosedError          the bus was used before start() or after close()
        ├── NoResponderError        nobody serves the service a request was sent to
        ├── RequestTimeoutError     a responder did not answer (or send the next chunk) in time
        ├── RemoteError             the responder failed while handling the request
        ├── ChunkTooLargeError      a chunk of a streamed response is larger than the bus allows
        ├── PublishError            the broker did not confirm a published message
        └── CodecError              an event could not be encoded or decoded
            └── UnknownEventTypeError  a message names an event type nobody registered
"""

from __future__ import annotations

from tranche.shared.errors import TrancheError


class BusError(TrancheError):
    """The bus could not do what was asked."""

    code = "bus_error"


class UnsupportedBusUrlError(BusError):
    """``TRANCHE_BUS_URL`` names a scheme no backend serves (only ``memory://`` and ``amqp://``)."""

    code = "bus_url_unsupported"


class BusClosedError(BusError):
    """The bus was used before ``start()`` or after ``close()``."""

    code = "bus_closed"


class NoResponderError(BusError):
    """A request was sent to a service that no running component serves."""

    code = "no_responder"


class RequestTimeoutError(BusError):
    """The responder did not answer, or did not send the next chunk, within the timeout."""

    code = "request_timeout"


class RemoteError(BusError):
    """The responder raised while handling the request; the message is the responder's error."""

    code = "remote_error"


class ChunkTooLargeError(BusError):
    """A streamed response produced a chunk larger than the bus's bound; large answers must be split."""

    code = "chunk_too_large"


class PublishError(BusError):
    """The broker did not confirm a message (it refused it, or the connection dropped before the confirm)."""

    code = "publish_failed"


class CodecError(BusError):
    """An event could not be turned into a message, or a message back into an event."""

    code = "codec_error"


class UnknownEventTypeError(CodecError):
    """A message names an event type that was never registered with the codec."""

    code = "unknown_event_type"
