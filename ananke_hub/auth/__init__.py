"""LTI 1.3 login for Ananke.

Runs in the hub process (the ``ananke-lti13`` authenticator and its login handlers). May
import the hub package's modules and ltiauthenticator; never :mod:`kore`.
"""

from ..roles import LaunchRoles, Role, parse_roles
from .authenticator import AnankeLTI13Authenticator

__all__ = ["AnankeLTI13Authenticator", "LaunchRoles", "Role", "parse_roles"]
