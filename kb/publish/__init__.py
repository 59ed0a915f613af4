"""The publish stage: the knowledge base in Datasette 0.65, read-only, with metadata.yml and kb's own plugin.

One module per part: serve (the Datasette instance, `kb serve`), serve_pool (several server processes),
plugin (Datasette's hooks), pages (paper, concept and start pages), graphview (what the graph pages draw),
completeness (per-source coverage), export_view (.bib/.ris/.csljson renderers), facetpass (all facets of a
page in one query); templates/ and static/ beside them.
"""

from .serve import METADATA_DATABASE, check_port, load_metadata, make_datasette, serve_command

__all__ = ["METADATA_DATABASE", "check_port", "load_metadata", "make_datasette", "serve_command"]
