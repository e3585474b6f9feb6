"""LTI 1.3 login for Ananke."""

from ..roles import LaunchRoles, Role, parse_roles
from .authenticator import AnankeLTI13Authenticator

__all__ = ["AnankeLTI13Authenticator", "LaunchRoles", "Role", "parse_roles"]
