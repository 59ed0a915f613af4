"""Datasette under load (issue 6, item 5): a generated KB of a few thousand papers served by a real `kb serve`,
driven from this process by 20 concurrent clients over table, row, search, canned-query and graph endpoints.

Zero errors allowed; p50/p95 latencies are printed (timings are never asserted). Every write attempt is refused.
Duration: KB_LOAD_SECONDS (default 10).
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import sqlite3
import statistics
import threading
import time
from collections import defaultdict
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest
from serving import kb_serve
import yaml

from kb.export import query_parameters
from kb.ids import register_sql_functions
from kb.records import provenance, write_records

pytestmark = pytest.mark.slow

PAPERS = int(os.environ.get("KB_LOAD_PAPERS", "3000"))
SECONDS = float(os.environ.get("KB_LOAD_SECONDS", "10"))
CLIENTS = int(os.environ.get("KB_LOAD_CLIENTS", "20"))
PROJECT = Path(__file__).resolve().parent.parent

MESH = [("D008279", "Magnetic Resonance Imaging"), ("D001853", "Bone Marrow"), ("D007938", "Leukemia"),
        ("D015470", "Leukemia, Myeloid, Acute"), ("D008223", "Lymphoma"), ("D009447", "Neuroblastoma"),
        ("D002648", "Child"), ("D006801", "Humans"), ("D001859", "Bone Marrow Neoplasms"), ("D003952", "Diagnostic Imaging"),
        ("D001706", "Biopsy"), ("D008297", "Male"), ("D005260", "Female")]
WORDS = ("marrow signal imaging leukemia lymphoma neuroblastoma children diffusion weighted infiltration "
         "biopsy aspiration staging relapse therapy conversion pattern tumour fat water sequence").split()
JOURNALS = [("Radiology", "Radiology"), ("Pediatric radiology", "Pediatr Radiol"), ("European radiology", "Eur Radiol"),
            ("International journal of hematology", "Int J Hematol"), ("Blood", "Blood"), ("Skeletal radiology", "Skeletal Radiol")]


def generate_records(n: int, seed: int = 6) -> list[dict]:
    """A citation network with preferential attachment (a few much-cited papers, many rarely cited)."""
    rng = random.Random(seed)
    prov = provenance("generated", retrieved="2026-11-24", note="tests/test_load.py")
    records, cited_weight = [], []
    for i in range(n):
        pmid = str(1_000_000 + i)
        year = 1985 + (i * 40) // n
        mesh = rng.sample(MESH, rng.randint(2, 6))
        words = rng.sample(WORDS, 6)
        journal = rng.choice(JOURNALS)
        refs = set()
        if i:
            for _ in range(min(i, rng.randint(3, 15))):
                # preferential attachment: earlier papers cited in proportion to their citations + 1
                j = rng.choice(cited_weight) if cited_weight and rng.random() < 0.7 else rng.randrange(i)
                refs.add(j)
        for j in refs:
            cited_weight.append(j)
        records.append({
            "type": "paper", "id": f"pmid:{pmid}", "pmid": pmid, "doi": f"10.5555/load.{i}", "pmcid": f"PMC{9_000_000 + i}" if i % 7 == 0 else None,
            "title": f"{words[0].capitalize()} {words[1]} and {words[2]} in {words[3]} ({i})",
            "abstract": " ".join(rng.choice(WORDS) for _ in range(60)), "abstract_sections": [],
            "authors": [{"last": f"Author{rng.randrange(800)}", "fore": "A", "initials": "A", "suffix": None,
                         "collective": None, "orcid": None, "affiliations": []} for _ in range(rng.randint(1, 5))],
            "journal": {"title": journal[0], "iso": journal[1], "issn": None, "issn_type": None, "issn_linking": None,
                        "nlm_id": None, "country": None},
            "year": year, "pub_date": str(year), "volume": str(rng.randint(1, 300)), "issue": "1", "pages": "1-9",
            "languages": ["eng"], "publication_types": [{"ui": "D016428", "name": "Journal Article"}] +
            ([{"ui": "D016454", "name": "Review"}] if i % 9 == 0 else []),
            "mesh": [{"ui": ui, "name": name, "major": k == 0, "qualifiers": []} for k, (ui, name) in enumerate(mesh)],
            "keywords": [{"text": w, "major": False, "owner": "NOTNLM"} for w in words[4:]], "chemicals": [],
            "references": [{"citation": None, "pmid": str(1_000_000 + j), "doi": None, "pmcid": None} for j in sorted(refs)],
            "kind": "article", "provenance": prov})
    records.append({"type": "seed", "id": f"pmid:{1_000_000 + n // 2}", "query": str(1_000_000 + n // 2)})
    return records


@pytest.fixture(scope="module")
def load_kb(tmp_path_factory):
    from kb.store import build

    tmp = tmp_path_factory.mktemp("load")
    write_records(tmp / "records" / "papers.jsonl", generate_records(PAPERS))
    t = time.perf_counter()
    build([tmp / "records" / "papers.jsonl"], tmp / "kb.db")
    print(f"\nbuilt a {PAPERS}-paper KB in {time.perf_counter() - t:.1f}s")
    return tmp / "kb.db"


@pytest.fixture(scope="module")
def server(load_kb):
    with kb_serve(load_kb) as (_, port):
        yield ("127.0.0.1", port)


def request_mix(db_path: Path) -> list[tuple[str, str]]:
    """(group, path) pairs covering tables, rows, search, every canned query and the graph endpoints."""
    conn = sqlite3.connect(db_path)
    rng = random.Random(1)
    ids = [r[0] for r in conn.execute("select id from papers order by id")]
    top = [r[0] for r in conn.execute("select id from papers order by pagerank desc limit 50")]
    concepts = [r[0] for r in conn.execute("select id from concepts order by id")]
    queries = yaml.safe_load((PROJECT / "metadata.yml").read_text())["databases"]["kb"]["queries"]
    mix = []
    for _ in range(40):
        pid, other = rng.choice(ids), rng.choice(ids)
        c1, c2 = rng.sample(concepts, 2)
        mix += [
            ("table papers+facets", "/kb/papers"),
            ("table papers+facets", "/kb/papers.json?_facet=year&_facet=journal&_size=20"),
            ("table citations", f"/kb/citations?cited_id={quote(rng.choice(top))}"),
            ("row", "/kb/papers/" + pid.replace(":", "~3A")),
            ("search", f"/kb/papers?_search={rng.choice(WORDS)}+{rng.choice(WORDS)}"),
            ("graph json", "/-/kb/citations.json"),
            ("graph json", f"/-/kb/citations.json?focus={quote(rng.choice(top))}"),
            ("graph json", f"/-/kb/citations.json?concept={c1}&year_min=2000"),
            ("graph json", "/-/kb/concepts.json"),
            ("graph json", "/-/kb/timeline.json"),
            ("graph json", f"/-/kb/paper.json?id={quote(pid)}"),
            ("graph page", "/-/kb/citations"),
        ]
        values = {"paper": rng.choice(top), "concept": c1, "concept_a": c1, "concept_b": c2, "min_papers": "",
                  "from_paper": pid, "to_paper": other, "max_steps": "", "include_stubs": rng.choice(["", "yes"])}
        for name, query in queries.items():
            params = {p: values[p] for p in query_parameters(query["sql"])}
            mix.append((f"canned {name}", f"/kb/{name}.json?_shape=objects&" + urlencode(params)))
    rng.shuffle(mix)
    return mix


def test_datasette_under_load(server, load_kb):
    host, port = server
    mix = request_mix(load_kb)
    latencies: dict[str, list[float]] = defaultdict(list)
    errors: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + SECONDS

    def client(offset: int):
        conn = http.client.HTTPConnection(host, port, timeout=30)
        i = offset
        while time.monotonic() < stop_at:
            group, path = mix[i % len(mix)]
            i += 1
            t = time.perf_counter()
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                body = response.read()
                status = response.status
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=30)
                with lock:
                    errors.append(f"{path}: {exc!r}")
                continue
            elapsed = time.perf_counter() - t
            with lock:
                latencies[group].append(elapsed)
                if status != 200 or not body:
                    errors.append(f"{path}: HTTP {status}")
        conn.close()

    threads = [threading.Thread(target=client, args=(k * 7,)) for k in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=SECONDS + 60)
    assert not any(t.is_alive() for t in threads)

    total = sum(len(v) for v in latencies.values())
    print(f"\n{CLIENTS} clients, {SECONDS:.0f}s, {PAPERS} papers: {total} requests, {total / SECONDS:.0f} req/s, "
          f"{len(errors)} errors")
    print(f"{'endpoint':34} {'n':>5} {'p50 ms':>8} {'p95 ms':>8}")
    everything = []
    for group in sorted(latencies):
        values = sorted(latencies[group])
        everything += values
        print(f"{group:34} {len(values):5d} {percentile(values, 50) * 1000:8.1f} {percentile(values, 95) * 1000:8.1f}")
    everything.sort()
    print(f"{'all':34} {len(everything):5d} {percentile(everything, 50) * 1000:8.1f} {percentile(everything, 95) * 1000:8.1f}")
    assert errors == [], errors[:10]
    groups = {g for g, _ in mix}
    assert groups <= set(latencies), groups - set(latencies)  # every kind of request was served at least once


def percentile(values: list[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def test_writes_are_refused_under_serve(server, load_kb):
    host, port = server
    before = load_kb.stat().st_mtime_ns, load_kb.stat().st_size
    attempts = [("POST", "/-/create", json.dumps({"table": "x", "rows": [{"a": 1}]})),
                ("POST", "/kb/-/create", json.dumps({"table": "x", "rows": [{"a": 1}]})),
                ("POST", "/kb/papers/-/insert", json.dumps({"row": {"id": "x"}})),
                ("POST", "/kb/papers/-/upsert", json.dumps({"rows": [{"id": "x"}]})),
                ("POST", "/kb/papers/pmid~3A1000001/-/delete", ""),
                ("POST", "/kb/papers/pmid~3A1000001/-/update", json.dumps({"update": {"title": "x"}})),
                ("POST", "/kb/seed_references", "csrftoken=x"),
                ("PUT", "/kb/papers", ""), ("DELETE", "/kb/papers", ""), ("PATCH", "/kb/papers", "")]
    for method, path, body in attempts:
        conn = http.client.HTTPConnection(host, port, timeout=10)
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        assert response.status == 405, (method, path, response.status)
        conn.close()
    for sql in ("insert into papers (id) values ('x')", "update papers set title = 'x'", "delete from citations",
                "drop table papers", "create table x (a)", "attach database ':memory:' as m",
                "with x as (select 1) insert into papers (id) select 'y'"):
        conn = http.client.HTTPConnection(host, port, timeout=10)
        conn.request("GET", "/kb.json?" + urlencode({"sql": sql}))
        response = conn.getresponse()
        response.read()
        assert response.status in (400, 403), (sql, response.status)
        conn.close()
    assert (load_kb.stat().st_mtime_ns, load_kb.stat().st_size) == before
    count = sqlite3.connect(load_kb).execute("select count(*) from papers where id in ('x', 'y')").fetchone()[0]
    assert count == 0


def test_queries_use_indexes_on_a_larger_kb(load_kb):
    """With real ANALYZE statistics of a few thousand papers, no canned query reads a large table row by row."""
    conn = sqlite3.connect(load_kb)
    register_sql_functions(conn)  # kb_ref(), which the canned queries use to read identifiers
    big = ("papers", "citations", "paper_concepts", "paper_similarity", "paper_mesh", "paper_authors")
    queries = yaml.safe_load((PROJECT / "metadata.yml").read_text())["databases"]["kb"]["queries"]
    for name, query in queries.items():
        params = {p: "pmid:1000001" for p in query_parameters(query["sql"])}
        plan = [r[3] for r in conn.execute("explain query plan " + query["sql"], params)]
        aliases = set(big)
        for table in big:
            aliases |= set(re.findall(rf"\b{table}\s+(?:as\s+)?([a-z])\b", query["sql"]))
        limited = re.search(r"\blimit\s+\d+\s*$", query["sql"].strip(), re.I)
        scans = []
        for line in plan:
            m = re.fullmatch(r"SCAN (\w+)( USING (COVERING )?INDEX \w+)?", line)
            if m and m.group(1) in aliases and not (m.group(2) and limited):
                scans.append(line)
        assert scans == [], (name, plan)
