"""kijkmee composition root: command line, configuration, TLS policy and development certificates.

Builds the parts (signaling, metadata store) and hands them their settings; nothing below imports it.
"""

__version__ = "0.1.0"
