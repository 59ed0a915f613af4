"""A generated, realistic knowledge base of some 4,800 papers for the explorer's tests (issue 11).

Shaped like a KB built from a MEDLINE sample: ~600 resolved papers (PMIDs, years 1990-2016, authors,
journals, MeSH headings, abstracts that use the lexicon's words) whose reference lists cite ~4,200 works
known only from their reference text (about 85% of cited works are such stubs, written Vancouver style:
"Smith J, Lee K. Title words. Nat Prod Rep. 2014 Dec;31(12):1234-45."), a few of them with PMIDs; about
15% of references join two resolved papers, mostly within a topic, so the citation graph has communities.
One seed (2011, ~25 references, cited by later papers), one paper with 140 references, and citation
records from several open sources (europepmc, opencitations, PubMed elink) so edges carry more than one source.

Deterministic: the same `seed` gives the same records, byte for byte. `build_large_kb(dir)` writes
DIR/records/*.jsonl and builds DIR/kb.db with kb.store.build in a few seconds.

    from largekb import large_kb          # session-scoped pytest fixture -> LargeKB
"""

from __future__ import annotations

import bisect
import itertools
import random
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kb.records import provenance, write_records

N_RESOLVED = 600
N_STUBS = 6000
YEARS = (1990, 2016)
SEED_PMID = "21547618"        # the seed gets the real Kato 2011 PMID, the others 30000001...
BIG_REFS = 140

LAST_NAMES = """Smith Lee Kato Koh Kikuchi Takemoto Moulopoulos Shih Kwee Daldrup-Link Henning Link Wang Zhang Li
Liu Chen Yang Huang Zhao Wu Zhou Xu Sun Ma Zhu Hu Guo He Lin Tanaka Suzuki Watanabe Ito Yamamoto Nakamura Kobayashi
Saito Sato Yoshida Yamada Sasaki Mueller Schmidt Schneider Fischer Weber Meyer Wagner Becker Schulz Hoffmann Rossi
Russo Ferrari Esposito Bianchi Romano Colombo Ricci Martin Bernard Dubois Thomas Robert Richard Petit Durand Leroy
Moreau Simon Laurent Garcia Fernandez Gonzalez Rodriguez Lopez Martinez Sanchez Perez Johnson Williams Brown Jones
Miller Davis Wilson Anderson Taylor Moore Jackson White Harris Thompson Clark Lewis Walker Hall Allen Young King
Wright Scott Green Baker Adams Nelson Hill Campbell Mitchell Roberts Carter Phillips Evans Turner Torres Parker
Collins Edwards Stewart Morris Murphy Cook Rogers Morgan Peterson Cooper Reed Bailey Bell Kim Park Choi Jung Kang
Cho Yoon Jang Lim Han Oh Seo Shin Kwon Hwang Ahn Song Yoo Hong Jeon Ko Moon Yang Son Bae Baek Heo Nam""".split()
INITIALS = ["J", "K", "M", "A", "S", "T", "H", "Y", "R", "P", "C", "D", "E", "L", "N", "JH", "MK", "AS", "TR",
            "HE", "KL", "SY", "YJ", "RB", "PC"]

JOURNALS = [  # (title, ISO abbreviation)
    ("Blood", "Blood"), ("International Journal of Hematology", "Int J Hematol"),
    ("British Journal of Haematology", "Br J Haematol"), ("European Radiology", "Eur Radiol"),
    ("Radiology", "Radiology"), ("AJR. American Journal of Roentgenology", "AJR Am J Roentgenol"),
    ("Pediatric Radiology", "Pediatr Radiol"), ("Pediatrics International", "Pediatr Int"),
    ("Journal of Clinical Oncology", "J Clin Oncol"), ("Leukemia", "Leukemia"),
    ("Haematologica", "Haematologica"), ("Pediatric Blood & Cancer", "Pediatr Blood Cancer"),
    ("Journal of Magnetic Resonance Imaging", "J Magn Reson Imaging"), ("Cancer", "Cancer"),
    ("Skeletal Radiology", "Skeletal Radiol"), ("Natural Product Reports", "Nat Prod Rep"),
    ("Annals of Hematology", "Ann Hematol"), ("Leukemia & Lymphoma", "Leuk Lymphoma"),
    ("Journal of Pediatric Hematology/Oncology", "J Pediatr Hematol Oncol"), ("Clinical Radiology", "Clin Radiol"),
]
MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()

# Topics: (lexicon concept words for titles/abstracts, MeSH headings (ui, name)).
TOPICS = {
    "leukemia": (["acute lymphoblastic leukemia", "acute myeloid leukemia", "leukemia", "AML", "childhood leukemia"],
                 [("D007938", "Leukemia"), ("D015470", "Leukemia, Myeloid, Acute"),
                  ("D054198", "Precursor Cell Lymphoblastic Leukemia-Lymphoma")]),
    "lymphoma": (["lymphoma", "non-Hodgkin lymphoma", "Hodgkin disease", "diffuse large B-cell lymphoma"],
                 [("D008223", "Lymphoma"), ("D008228", "Lymphoma, Non-Hodgkin"), ("D006689", "Hodgkin Disease")]),
    "neuroblastoma": (["neuroblastoma", "metastatic neuroblastoma", "neuroblastoma in children"],
                      [("D009447", "Neuroblastoma")]),
    "marrow-mri": (["bone marrow MRI", "magnetic resonance imaging of the bone marrow", "diffusion-weighted imaging",
                    "whole-body MRI", "MR imaging of marrow"],
                   [("D008279", "Magnetic Resonance Imaging"), ("D001853", "Bone Marrow"),
                    ("D038524", "Diffusion Magnetic Resonance Imaging")]),
    "myeloma": (["multiple myeloma", "plasma cell myeloma", "myeloma bone disease"],
                [("D009101", "Multiple Myeloma"), ("D001853", "Bone Marrow")]),
}
COMMON_MESH = [("D006801", "Humans"), ("D002648", "Child"), ("D000293", "Adolescent"), ("D008297", "Male"),
               ("D005260", "Female"), ("D000328", "Adult"), ("D011379", "Prognosis"),
               ("D003952", "Diagnostic Imaging"), ("D001859", "Bone Marrow Examination"),
               ("D009364", "Neoplasm Staging"), ("D016896", "Treatment Outcome")]
WORDS = """assessment evaluation findings patterns features role value diagnosis detection response therapy
treatment follow-up outcome prognosis infiltration involvement imaging quantitative signal changes relapse
remission case series cohort prospective retrospective study children adults patients review comparison
correlation biopsy aspiration staging survival chemotherapy transplantation marrow cellularity fat""".split()
STUB_WORDS = """synthesis natural products biosynthesis alkaloids isolation structure elucidation compounds marine
cytotoxic activity derivatives total enzymes pathway gene cluster analogues mechanism inhibitors kinase protein
expression cells tumour tumor growth signalling molecular targets clinical trial phase randomized efficacy safety
mice model in vitro in vivo resistance screening novel new potent selective metabolites fungal bacterial""".split()


@dataclass
class LargeKB:
    """What the generator made: the database, the data directory and the ids the tests look at."""
    db: Path
    data: Path
    seed: str
    big: str                                   # the paper with BIG_REFS references
    resolved: list = field(default_factory=list)
    counts: dict = field(default_factory=dict)


def _authors(rng: random.Random, n: int) -> list[dict]:
    out = []
    for _ in range(n):
        last = rng.choice(LAST_NAMES)
        ini = rng.choice(INITIALS)
        out.append({"last": last, "fore": ini, "initials": ini, "suffix": None, "collective": None,
                    "orcid": None, "affiliations": []})
    return out


def _vancouver(authors: list[dict], title: str, iso: str, year: int, month: str, volume: str, issue: str,
               pages: str) -> str:
    names = [f"{a['last']} {a['initials']}" for a in authors[:6]]
    who = ", ".join(names) + (", et al" if len(authors) > 6 else "")
    return f"{who}. {title.rstrip('.')}. {iso}. {year} {month};{volume}({issue}):{pages}."


def _pages(rng: random.Random) -> str:
    first = rng.randint(1, 2999)
    last = first + rng.randint(3, 14)
    # Vancouver abbreviates the last page: 1234-45
    a, b = str(first), str(last)
    i = 0
    while i < len(a) and len(a) == len(b) and a[i] == b[i]:
        i += 1
    return f"{a}-{b[i:] or b[-1]}"


def generate(seed: int = 11, n_resolved: int = N_RESOLVED, n_stubs: int = N_STUBS) -> tuple[list[dict], dict]:
    """All the records (papers, citations, the seed), in a fixed order; and the ids worth knowing.
    (`n_resolved`/`n_stubs` scale it up for benchmarks; the defaults are what the tests use.)"""
    rng = random.Random(seed)
    topics = sorted(TOPICS)
    prov = provenance("pubmed", request="generated by tests/largekb.py", note="synthetic test data")

    # Resolved papers: pmid, year, topic.
    resolved = []
    for i in range(n_resolved):
        year = YEARS[0] + int((YEARS[1] - YEARS[0] + 1) * (rng.random() ** 0.6))  # more recent papers
        year = min(year, YEARS[1])
        resolved.append({"pmid": str(30000001 + i), "year": year, "topic": rng.choice(topics)})
    # The seed: Kato 2011 (leukemia + marrow MRI), and the big paper (a 2014 review).
    resolved[0].update(pmid=SEED_PMID, year=2011, topic="leukemia")
    resolved[1].update(year=2014, topic="marrow-mri")
    seed_pmid, big_pmid = resolved[0]["pmid"], resolved[1]["pmid"]
    resolved.sort(key=lambda r: (r["year"], r["pmid"]))

    # Fields of each resolved paper, and its Vancouver reference string (as others cite it).
    for r in resolved:
        words, _mesh = TOPICS[r["topic"]]
        concept = rng.choice(words)
        r["authors"] = _authors(rng, rng.randint(1, 9))
        if r["pmid"] == seed_pmid:
            r["authors"] = [{"last": "Kato", "fore": "Motohiro", "initials": "M", "suffix": None,
                             "collective": None, "orcid": None, "affiliations": []}] + r["authors"][:4]
            r["title"] = ("Case series of pediatric acute leukemia without a peripheral blood abnormality, "
                          "detected by magnetic resonance imaging")
            r["journal"] = ("International Journal of Hematology", "Int J Hematol")
        else:
            r["title"] = (f"{rng.choice(WORDS).capitalize()} of {concept}: "
                          f"{rng.choice(WORDS)} and {rng.choice(WORDS)} in {rng.randint(5, 300)} "
                          f"{rng.choice(['patients', 'children', 'cases', 'adults'])}")
            r["journal"] = rng.choice(JOURNALS)
        r["volume"], r["issue"] = str(rng.randint(1, 130)), str(rng.randint(1, 12))
        r["month"], r["pages"] = rng.choice(MONTHS), _pages(rng)
        r["raw"] = _vancouver(r["authors"], r["title"], r["journal"][1], r["year"], r["month"], r["volume"],
                              r["issue"], r["pages"])
        r["concept"] = concept

    # Reference-only works: Vancouver strings, a third of them with a PMID (as PubMed reference lists give).
    stubs = []
    for i in range(n_stubs):
        year = rng.randint(1965, 2015)
        title = " ".join(rng.choice(STUB_WORDS) for _ in range(rng.randint(4, 10))).capitalize()
        if rng.random() < 0.35:   # some stubs are about the KB's concepts too
            title += " in " + rng.choice(TOPICS[rng.choice(topics)][0])
        _t, iso = rng.choice(JOURNALS)
        raw = _vancouver(_authors(rng, rng.randint(1, 8)), title, iso, year, rng.choice(MONTHS),
                         str(rng.randint(1, 90)), str(rng.randint(1, 12)), _pages(rng))
        pmid = str(10000001 + i) if rng.random() < 0.33 else None
        stubs.append({"raw": raw, "pmid": pmid, "year": year, "topic": rng.choice(topics)})
    # Zipf-like: some works cited often (cumulative weights: one bisect per draw)
    stub_cum = list(itertools.accumulate(1.0 / (1 + i) ** 0.3 for i in range(n_stubs)))
    resolved_pmids = {r["pmid"] for r in resolved}

    by_topic = {t: [r for r in resolved if r["topic"] == t] for t in topics}
    topic_years = {t: [r["year"] for r in by_topic[t]] for t in topics}
    all_years = [r["year"] for r in resolved]
    records, citations = [], []
    source_cycle = ["europepmc", "opencitations", "elink:pubmed_pubmed_refs", "crossref"]
    for r in resolved:
        pmid = r["pmid"]
        n_refs = BIG_REFS if pmid == big_pmid else (25 if pmid == seed_pmid else int(rng.triangular(0, 40, 12)))
        # the papers published up to this one's year (lists sorted by year: a prefix), without itself
        same = by_topic[r["topic"]]
        earlier_same = [p for p in same[:bisect.bisect_right(topic_years[r["topic"]], r["year"])] if p["pmid"] != pmid]
        earlier_any = [p for p in resolved[:bisect.bisect_right(all_years, r["year"])] if p["pmid"] != pmid]
        refs, seen = [], set()
        n_resolved = sum(1 for _ in range(n_refs) if rng.random() < 0.15)
        if pmid in (seed_pmid, big_pmid):
            n_resolved = max(n_resolved, n_refs // 5)
        for _ in range(n_resolved):
            pool = earlier_same if earlier_same and rng.random() < 0.8 else earlier_any
            if not pool:
                break
            # preferential attachment: cite the older, already cited papers more often
            target = pool[min(int(len(pool) * rng.random() ** 1.7), len(pool) - 1)]
            if target["pmid"] in seen:
                continue
            seen.add(target["pmid"])
            refs.append({"citation": target["raw"], "pmid": target["pmid"], "doi": None, "pmcid": None})
        while len(refs) < n_refs:
            s = rng.choices(stubs, cum_weights=stub_cum)[0]
            if s["raw"] in seen or s["year"] > r["year"]:
                if rng.random() < 0.3:     # avoid a long loop for early papers
                    n_refs -= 1
                continue
            seen.add(s["raw"])
            refs.append({"citation": s["raw"], "pmid": s["pmid"], "doi": None, "pmcid": None})
        r["refs"] = refs
        # Open-source citation records for some of the resolved edges (issue 9: edges by source).
        for ref in refs:
            if ref["pmid"] in resolved_pmids and rng.random() < 0.5:
                for src in rng.sample(source_cycle, rng.randint(1, 2)):
                    citations.append({"type": "citation", "citing": f"pmid:{pmid}", "cited": f"pmid:{ref['pmid']}",
                                      "cited_pmid": ref["pmid"], "cited_doi": None, "raw": None, "source": src,
                                      "resolved": True, "provenance": provenance(src, note="synthetic test data")})

    # The seed is cited by later leukemia and MRI papers (so its view has citers as well as references).
    later = [p for p in resolved if p["year"] > 2011 and p["topic"] in ("leukemia", "marrow-mri")]
    for p in rng.sample(later, min(12, len(later))):
        if not any(ref["pmid"] == seed_pmid for ref in p["refs"]):
            p["refs"].insert(0, {"citation": next(r["raw"] for r in resolved if r["pmid"] == seed_pmid),
                                 "pmid": seed_pmid, "doi": None, "pmcid": None})

    for r in resolved:
        words, mesh = TOPICS[r["topic"]]
        other = rng.choice(topics)
        headings = [{"ui": ui, "name": name, "major": i == 0, "descriptor_major": i == 0, "qualifiers": []}
                    for i, (ui, name) in enumerate(mesh)]
        if rng.random() < 0.4:  # a second topic as a minor heading
            ui, name = TOPICS[other][1][0]
            if ui not in {h["ui"] for h in headings}:
                headings.append({"ui": ui, "name": name, "major": False, "descriptor_major": False, "qualifiers": []})
        for ui, name in rng.sample(COMMON_MESH, 4):
            headings.append({"ui": ui, "name": name, "major": False, "descriptor_major": False, "qualifiers": []})
        headings.sort(key=lambda h: h["name"])
        abstract = (f"Background: {r['concept'].capitalize()} is studied with {rng.choice(WORDS)} and "
                    f"{rng.choice(WORDS)}. Methods: We reviewed {rng.randint(5, 300)} patients with "
                    f"{rng.choice(words)}; bone marrow findings were assessed by magnetic resonance imaging "
                    f"where available. Results: {rng.choice(WORDS).capitalize()} correlated with "
                    f"{rng.choice(TOPICS[other][0])}. Conclusions: {rng.choice(WORDS).capitalize()} matters.")
        title, iso = r["journal"]
        records.append({
            "type": "paper", "id": f"pmid:{r['pmid']}", "pmid": r["pmid"],
            "doi": "10.1007/s12185-011-0842-7" if r["pmid"] == seed_pmid else f"10.5555/largekb.{r['pmid']}",
            "pmcid": None, "title": r["title"], "abstract": abstract, "authors": r["authors"],
            "journal": {"title": title, "iso": iso, "issn": None, "issn_type": None, "issn_linking": None,
                        "nlm_id": None, "country": None, "medline_ta": iso},
            "year": r["year"], "pub_date": f"{r['year']}-{MONTHS.index(r['month']) + 1:02d}",
            "volume": r["volume"], "issue": r["issue"], "pages": r["pages"], "languages": ["eng"],
            "publication_types": [{"ui": "D016016" if r["pmid"] == big_pmid else "D016428",
                                   "name": "Review" if r["pmid"] == big_pmid else "Journal Article"}],
            "mesh": headings,
            "keywords": [{"text": rng.choice(words), "major": False, "owner": "NOTNLM"}],
            "chemicals": [], "references": r["refs"], "kind": "article", "book": None, "provenance": prov,
        })
    records.sort(key=lambda rec: rec["id"])
    citations.sort(key=lambda c: (c["citing"], c["cited"], c["source"]))
    seeds = [{"type": "seed", "id": f"pmid:{seed_pmid}", "query": seed_pmid}]
    info = {"seed": f"pmid:{seed_pmid}", "big": f"pmid:{big_pmid}",
            "resolved": sorted(f"pmid:{r['pmid']}" for r in resolved)}
    return records + citations + seeds, info


def write_generated(folder: Path, seed: int, n_resolved: int, n_stubs: int) -> Path:
    """Generated records in one file of a new records directory `folder` (to build from); returns it."""
    records, _info = generate(seed, n_resolved, n_stubs)
    folder.mkdir()
    write_records(folder / "a.jsonl", records)
    return folder


def build_large_kb(directory: str | Path, seed: int = 11, scale: int = 1) -> LargeKB:
    """Write the generated records under DIR/records and build DIR/kb.db; returns what was made."""
    from kb.store import build

    directory = Path(directory)
    records, info = generate(seed, N_RESOLVED * scale, N_STUBS * scale)
    rec_dir = directory / "records"
    rec_dir.mkdir(parents=True, exist_ok=True)
    files = {"papers.jsonl": [r for r in records if r["type"] == "paper"],
             "sources.jsonl": [r for r in records if r["type"] == "citation"],
             "seeds.jsonl": [r for r in records if r["type"] == "seed"]}
    for name, recs in files.items():
        write_records(rec_dir / name, recs)
    db = directory / "kb.db"
    summary = build(sorted(rec_dir / name for name in files), db)
    return LargeKB(db=db, data=directory, seed=info["seed"], big=info["big"], resolved=info["resolved"],
                   counts=summary.get("counts", {}))


@pytest.fixture(scope="session")
def large_kb(tmp_path_factory) -> LargeKB:
    """A generated KB of ~4,800 papers (600 resolved), built once per test session."""
    return build_large_kb(tmp_path_factory.mktemp("largekb"))


if __name__ == "__main__":   # python tests/largekb.py DIR [SCALE]: build it by hand, to look at it with kb serve
    import sys
    import time

    t = time.perf_counter()
    kb = build_large_kb(sys.argv[1] if len(sys.argv) > 1 else "largekb",
                        scale=int(sys.argv[2]) if len(sys.argv) > 2 else 1)
    print(f"{kb.db}: {kb.counts} in {time.perf_counter() - t:.1f}s; seed {kb.seed}, big {kb.big}")
