"""mailgate: mail accounts and aliases in LDAP, for Postfix and Dovecot.

Importing the package does nothing: the WSGI app is built by
:func:`gateway.app.create_app`, the console script is :mod:`gateway.cli`, and
each layer imports only what it uses (a sync or the milter never loads Flask).
"""

from .version import __version__

__all__ = ["__version__"]
