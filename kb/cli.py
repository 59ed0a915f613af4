"""kb's command line: a thin click layer over the library modules."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from . import __version__
from .errors import KbError
from .paths import DEFAULT_DATA_DIR, DEFAULT_DB


class KbGroup(click.Group):
    """Turns kb's own errors and Ctrl-C into one line and a non-zero exit, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KbError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except click.UsageError as exc:   # a bad option value: one line too, not the usage text
            where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
            click.echo(f"Error: {exc.format_message()}{where}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("Interrupted: everything fetched so far is kept; run the same command again to resume.", err=True)
            sys.exit(130)
        except BrokenPipeError:
            sys.exit(1)


def data_option(f):
    return click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path),
                        default=None, help=f"Data directory (default: ./{DEFAULT_DATA_DIR})")(f)


def eutils_options(f):
    """Options shared by every command that talks to NCBI E-utilities."""
    f = click.option("--email", envvar="NCBI_EMAIL", help="Contact e-mail sent to NCBI (or NCBI_EMAIL)")(f)
    f = click.option("--api-key", envvar="NCBI_API_KEY",
                     help="NCBI API key: 10 requests/s instead of 3 (or NCBI_API_KEY); never stored")(f)
    f = click.option("--offline", is_flag=True, help="Never touch the network; fail on a cache miss")(f)
    f = click.option("--refresh", is_flag=True, help="Refetch instead of answering from the cache")(f)
    return f


@click.group(cls=KbGroup)
@click.version_option(__version__, prog_name="kb")
def cli():
    """kb: turn one paper into a browsable literature knowledge base.

    \b
    kb fetch PMID|DOI|PMCID|URL ...   harvest papers, references, citers from PubMed
    kb refs FILE                      parse and resolve a pasted reference list
    kb import FILE ...                import PubMed XML / MEDLINE text files
    kb build                          write the SQLite knowledge base
    kb serve                          browse it in Datasette
    kb export FORMAT                  GraphML, GEXF, JSON, CSV, BibTeX, RIS, CSL-JSON
    kb mesh import desc20XX.xml       MeSH tree numbers from NLM's descriptor file
    """


@cli.command()
@click.argument("identifiers", nargs=-1, required=False)
@data_option
@click.option("--depth", type=click.IntRange(0, 10), default=1, show_default=True,
              help="Hops to follow: 1 = the seeds and their references")
@click.option("--cited-by", is_flag=True, help="Also follow citing papers (PubMed: citers in PMC only)")
@click.option("--max-papers", type=click.IntRange(1), default=None, help="Stop expanding after this many papers")
@click.option("--sources", envvar="KB_SOURCES", default=None, metavar="LIST",
              help="Citation sources, comma-separated: pubmed,europepmc,opencitations,crossref,icite "
                   "(default: all; or KB_SOURCES)")
@eutils_options
@click.option("--query", metavar="TEXT", default=None,
              help="Start from a PubMed search: its papers (at most --max-papers; PubMed serves the first 9,999) "
                   "are seeds")
@click.option("--similar", type=click.IntRange(0), default=0, metavar="N",
              help="Also store the top N PubMed similar articles of each seed paper (with scores) and fetch them")
@click.option("--mesh-trees", is_flag=True,
              help="Also fetch the MeSH tree numbers of every descriptor of the harvested papers (db=mesh)")
def fetch(identifiers, data_dir, depth, cited_by, max_papers, sources, email, api_key, offline, refresh, query,
          similar, mesh_trees):
    """Harvest papers, their references and (with --cited-by) their citers from PubMed and open citation
    indexes (Europe PMC, OpenCitations, Crossref, iCite: see --sources).

    Start from identifiers (PMID, DOI, PMCID, URL), from a PubMed search (--query), or both."""
    from .harvest import harvest_command

    if not identifiers and not query:
        raise KbError("give at least one identifier (PMID, DOI, PMCID or URL) or --query TEXT")
    harvest_command(identifiers, data_dir=data_dir or DEFAULT_DATA_DIR, depth=depth, cited_by=cited_by,
                    max_papers=max_papers, email=email, api_key=api_key, offline=offline, refresh=refresh,
                    sources=sources, query=query, similar=similar, mesh_trees=mesh_trees)


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@data_option
@click.option("--citing", help="Identifier of the paper this reference list belongs to")
@click.option("--match", "match_paths", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="Record files or data directories to match references against offline")
@eutils_options
def refs(file, data_dir, citing, match_paths, email, api_key, offline, refresh):
    """Parse a numbered (Vancouver) reference list and resolve it to PubMed records."""
    from .refs import refs_command

    refs_command(file, data_dir=data_dir or DEFAULT_DATA_DIR, citing=citing, match_paths=match_paths,
                 email=email, api_key=api_key, offline=offline, refresh=refresh)


@cli.command(name="import")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@data_option
@click.option("--seed", "seeds", multiple=True, metavar="ID",
              help="Mark an imported paper as a seed (PMID, DOI, PMCID or URL; repeatable)")
def import_(files, data_dir, seeds):
    """Import PubMed XML (efetch output, baseline/update files, .gz) and MEDLINE text (.nbib)."""
    from .parse import import_command
    from .seeds import check_identifiers, mark_seeds

    check_identifiers(seeds)
    summary = import_command(files, data_dir=data_dir or DEFAULT_DATA_DIR)
    if seeds:
        keys = mark_seeds(data_dir or DEFAULT_DATA_DIR, seeds, summary["outputs"])
        click.echo(f"Seed{'s' if len(keys) > 1 else ''}: {', '.join(keys)}")


@cli.command()
@data_option
@click.option("--db", "db_path", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_DB,
              show_default=True, help="SQLite database to write")
@click.option("--concepts", "lexicon", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Concept lexicon (YAML), or 'auto': concepts from the KB's 30 most frequent MeSH headings; "
                   "default: the shipped datasets/concepts.yml")
@click.option("--seed", "seeds", multiple=True, metavar="ID",
              help="Mark a paper as a seed (PMID, DOI, PMCID, URL or kb key; repeatable), besides the seed records")
@click.option("--full", is_flag=True,
              help="Rebuild everything; by default only new records are added when the records only grew")
def build(data_dir, db_path, lexicon, seeds, full):
    """Build the SQLite knowledge base from the records (default: the embedded seed dataset)."""
    from .paths import existing_file, output_file
    from .store import build_command

    output_file(db_path, "--db")          # a mistyped path is an error before anything is built or created
    if lexicon is not None and str(lexicon) != "auto":
        existing_file(lexicon, "--concepts")
    build_command(data_dir=data_dir, db_path=db_path, lexicon=lexicon, seeds=seeds, full=full)


@cli.command()
@click.argument("format", type=click.Choice(
    ["graphml", "gexf", "json", "csv", "bibtex", "ris", "csl-json"], case_sensitive=False))
@click.option("--db", "db_path", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_DB,
              show_default=True)
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None, help="File to write (default: stdout)")
@click.option("--graph", type=click.Choice(["citations", "concepts"]), default="citations", show_default=True,
              help="Which graph (graph formats only)")
@click.option("--where", "where", metavar="SQL", default=None,
              help="Only the papers matching this WHERE clause over the papers table, e.g. \"year >= 2010\"")
@click.option("--query", "query", metavar="NAME", default=None,
              help="Only the papers a canned query of metadata.yml returns (its `paper` column)")
@click.option("-p", "--param", "params", nargs=2, multiple=True, metavar="NAME VALUE",
              help="A parameter of --query (repeatable)")
def export(format, db_path, output, graph, where, query, params):
    """Export the knowledge base (or the papers --where or --query select) as a graph file or a bibliography."""
    from .export import export_command

    export_command(format.lower(), db_path=db_path, output=output, graph=graph, where=where, query=query,
                   params=dict(params))


class PortType(click.ParamType):
    """A TCP port: 1-65535, or 0 for any free port (the one picked is printed)."""

    name = "port"

    def convert(self, value, param, ctx):
        from .publish import check_port

        try:
            return check_port(value)
        except KbError:
            self.fail(f"{value} is not a port: give a number from 1 to 65535, or 0 for any free port", param, ctx)


@cli.command()
@data_option
@click.option("--db", "db_path", type=click.Path(path_type=Path), default=None,
              help=f"SQLite database to serve; it must exist (default: ./{DEFAULT_DB}, built first when missing)")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface)")
@click.option("--port", type=PortType(), default=8001, show_default=True, help="Port, 1-65535; 0 picks a free one")
@click.option("--rebuild", is_flag=True, help="Rebuild the database even when it exists (or build a missing --db)")
@click.option("--processes", type=click.IntRange(1, 16), default=1, show_default=True,
              help="Server processes over the same database (one per core for many concurrent users)")
@click.option("--cache-mb", type=click.IntRange(0, 4096), default=64, show_default=True,
              help="Memory per process for whole pages answered again from memory (the database is immutable); 0: off")
def serve(data_dir, db_path, host, port, rebuild, processes, cache_mb):
    """Serve the knowledge base in Datasette, building it first when it is missing."""
    from .publish import serve_command

    serve_command(data_dir=data_dir, db_path=db_path, host=host, port=port, rebuild=rebuild, processes=processes,
                  cache_mb=cache_mb)


@cli.group()
def mesh():
    """MeSH vocabulary: tree numbers for the concept lexicon's tree-prefix matching."""


@mesh.command(name="import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@data_option
def mesh_import(file, data_dir):
    """Import NLM's MeSH descriptor file (desc20XX.xml or .xml.gz) as "mesh" records for kb build."""
    from .mesh import import_command

    import_command(file, data_dir=data_dir or DEFAULT_DATA_DIR)


if __name__ == "__main__":  # pragma: no cover
    cli()
