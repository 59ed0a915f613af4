"""kb: turn one paper into a browsable literature knowledge base.

Stages, one module each, data flowing one way:
fetch (eutils, harvest, ids, refs) -> parse -> records (JSON Lines) -> store/graph/concepts -> publish (plugin, serve).
"""

__version__ = "0.1.0"
