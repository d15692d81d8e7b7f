"""The one version number of mailgate.

The package metadata (``pyproject.toml``: ``dynamic = ["version"]``), the
``mailgate --version`` output and the OpenAPI document's ``info.version`` all
read it from here.
"""

__version__ = "0.1.0"
