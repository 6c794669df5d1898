"""TLS for amqps:// URLs: verify the broker (CA, hostname), optionally present a client cert.

pika's own amqps default has no ``server_hostname``, so hostname checking cannot work with it;
this builds the options explicitly. Verification is on unless switched off by a setting.
"""

from __future__ import annotations

import ssl

import pika

from messaging.settings import AmqpSettings


def ssl_context(settings: AmqpSettings) -> ssl.SSLContext:
    """A client context that requires a valid broker certificate (TLS 1.2 at least)."""
    ca = str(settings.amqp_ca_file) if settings.amqp_ca_file else None
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = settings.amqp_tls_verify_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    if settings.amqp_cert_file is not None and settings.amqp_key_file is not None:
        ctx.load_cert_chain(str(settings.amqp_cert_file), str(settings.amqp_key_file))
    return ctx


def ssl_options(settings: AmqpSettings) -> pika.SSLOptions | None:
    """pika's SSLOptions for an amqps:// URL, None for amqp://."""
    # The first address: a link hands each connection settings with only the one it opens.
    address = settings.amqp_addresses()[0]
    if address.scheme != "amqps":
        return None
    return pika.SSLOptions(ssl_context(settings), server_hostname=address.host or None)
