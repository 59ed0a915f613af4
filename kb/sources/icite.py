"""NIH iCite: ``/api/pubs?pmids=...&fl=...``, up to 200 PMIDs per request.

The classic answer is ``{"meta": ..., "data": [{"pmid", "doi", "references": [PMIDs], "cited_by": [PMIDs]}]}``.
iCite changed its API in July 2025: the ``references`` / ``cited_by`` lists may be absent (iCite points
to its bulk snapshots for links); kb accepts both shapes, also ``citedByPmidsByYear`` ([{pmid: year}]),
and when a record has no link lists at all it records status ``no-links`` and says so. One request per
200 papers serves both directions (the second is answered from the cache).
"""

from __future__ import annotations

from . import Answer, Source, Work, citation_record

BATCH = 200
FIELDS = "pmid,doi,references,cited_by,citedByPmidsByYear"
NO_LINKS = "iCite gave no references/cited_by lists (its API no longer includes them since July 2025)"


def _pmids(values) -> list[str] | None:
    if values is None:
        return None
    out = []
    for v in values if isinstance(values, list) else str(values).split():
        if isinstance(v, dict):          # citedByPmidsByYear: [{"12345": 2014}, ...]
            out.extend(str(k) for k in v)
        elif str(v).strip().isdigit():
            out.append(str(v).strip())
    return list(dict.fromkeys(out))


class ICite(Source):
    name = "icite"
    licence = "NIH iCite / NIH Open Citation Collection: public domain (US Government work)"
    limits = ("no published rate limit; up to 200 PMIDs per request (kb: at most 3 requests/s); PubMed papers "
              "only; link lists dropped from the API in July 2025")

    def _records(self, works: list[Work]):
        """{pmid: (record or None, provenance)} for the works with a PMID, 200 per request."""
        pmids = sorted({w.pmid for w in works if w.pmid}, key=int)
        out = {}
        for i in range(0, len(pmids), BATCH):
            chunk = pmids[i:i + BATCH]
            data, prov = self.client.get("pubs", [("pmids", ",".join(chunk)), ("fl", FIELDS)])
            rows = data.get("data") if isinstance(data, dict) else data if isinstance(data, list) else []
            got = {str(r.get("pmid") or r.get("_id")): r for r in rows or [] if isinstance(r, dict)}
            for p in chunk:
                out[p] = (got.get(p), prov)
        return out

    def _links(self, works, field_names, direction):
        answer = Answer()
        records = self._records(works)
        for w in works:
            if not w.pmid:
                answer.note(w.key, status="not-found", message="no PMID to ask iCite with")
                continue
            record, prov = records[w.pmid]
            if record is None:
                answer.note(w.key, status="not-found", message=f"iCite has no PMID {w.pmid}")
                continue
            found = None
            for name in field_names:
                if name in record and record[name] is not None:
                    found = (found or []) + (_pmids(record[name]) or [])
            if found is None:
                answer.note(w.key, status="no-links", message=NO_LINKS)
                continue
            found = list(dict.fromkeys(found))
            for other in found:
                if direction == "references":
                    answer.citations.append(citation_record(w.key, other, None, self.name, prov))
                else:
                    answer.citations.append(citation_record(f"pmid:{other}", w.pmid, w.doi, self.name, prov))
            answer.note(w.key, **{direction: len(found)})
        return answer

    def references(self, works: list[Work]) -> Answer:
        return self._links(works, ("references",), "references")

    def citers(self, works: list[Work]) -> Answer:
        return self._links(works, ("cited_by", "citedByPmidsByYear"), "citers")


SOURCE = ICite
