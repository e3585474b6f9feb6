"""LTI 1.3 login for Ananke."""

from .authenticator import AnankeLTI13Authenticator
from .roles import LaunchRoles, Role, parse_roles

__all__ = ["AnankeLTI13Authenticator", "LaunchRoles", "Role", "parse_roles"]
