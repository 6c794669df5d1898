"""HTTP front door: validated ChargeRequests published with confirms; 202 only once confirmed."""

from gateway.app import create_app
from gateway.publisher import AmqpRequestPublisher, ManagedPublisher, RequestPublisher
from gateway.settings import GatewaySettings

__all__ = [
    "AmqpRequestPublisher",
    "GatewaySettings",
    "ManagedPublisher",
    "RequestPublisher",
    "create_app",
]
