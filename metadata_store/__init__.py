"""The only place kijkmee writes personal data: IP addresses and what people typed themselves.

One narrow interface (`MetadataStore`); SQLite by default. Every column is declared in `schema.py`
with its data class and retention, and nothing outside that declaration is ever stored.
"""

from metadata_store.schema import TABLES, Column, DataClass
from metadata_store.store import MetadataStore, RoomRecord, SessionRecord

__all__ = ["TABLES", "Column", "DataClass", "MetadataStore", "RoomRecord", "SessionRecord"]
