"""People, roles, passwords, login sessions and CSRF tokens."""
