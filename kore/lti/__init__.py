"""Kore's LTI Advantage client: tokens (Security Framework 1.0), AGS 2.0 and NRPS 2.0.

Runs in Kore and in the ``ananke grades|roster sync`` commands; imports nothing of the hub
package but the LMS registration and the key store.
"""

from .ags import AGSClient, LineItem, Score, scores_url
from .client import LTIClient, ServiceSession
from .errors import (
    BadLMSResponse,
    LMSUnavailable,
    LTIServiceError,
    OutcomeUnknown,
    TokenRefused,
)
from .nrps import Membership, NRPSClient, Roster
from .settings import LTIAdvantage

__all__ = [
    "AGSClient",
    "BadLMSResponse",
    "LMSUnavailable",
    "OutcomeUnknown",
    "LTIAdvantage",
    "LTIClient",
    "LTIServiceError",
    "LineItem",
    "Membership",
    "NRPSClient",
    "Roster",
    "Score",
    "ServiceSession",
    "TokenRefused",
    "scores_url",
]
