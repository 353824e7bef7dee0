"""Quote stores behind one interface (:class:`QuoteStore`, a template in ``base.py``), chosen by name
(``storage.quote_store``) from the registry in ``registry.py``.

Stores are imported lazily so the parquet path never loads a database driver. The input checks live
in ``validation.py`` and run in the base class, so every store refuses the same frames with the same
messages; the SQL stores share one connection lifecycle (``connection.py``).
"""

from rof_pipelines.adapters.quote_stores.base import QuoteStore
from rof_pipelines.adapters.quote_stores.registry import (
    open_quote_store,
    quote_store_names,
    register_quote_store,
)
from rof_pipelines.adapters.quote_stores.validation import validated_quotes

__all__ = [
    "QuoteStore",
    "open_quote_store",
    "quote_store_names",
    "register_quote_store",
    "validated_quotes",
]
