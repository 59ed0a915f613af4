"""OpenCitations Index API v2: ``/references/{id}`` and ``/citations/{id}``, id = ``doi:...`` or ``pmid:...``.

The answer is a JSON list of citations, each with ``oci``, ``citing`` and ``cited``, where ``citing``
and ``cited`` are space-separated identifiers of one work ("omid:br/0610... doi:10.1/x pmid:123"),
possibly prefixed by the index name ("coci => ..."). kb asks by DOI when the paper has one (most of
the index is DOI-to-DOI), else by PMID. An unknown id is an empty list. One request per paper and
direction. An OpenCitations access token, if set in OPENCITATIONS_ACCESS_TOKEN, is sent in the
``authorization`` header (as OpenCitations asks of applications) and never stored.
"""

from __future__ import annotations

import os

from . import Answer, Source, Work, citation_record
from .http import path_id


def parse_ids(value) -> dict:
    """{"doi": first DOI, "pmid": first PMID, "omid": ...} from an OpenCitations id string."""
    out: dict[str, str] = {}
    text = str(value or "")
    if "=>" in text:
        text = text.split("=>", 1)[1]
    for token in text.replace(";", " ").split():
        scheme, _, rest = token.partition(":")
        scheme = scheme.lower()
        if rest and scheme in ("doi", "pmid", "omid", "pmcid") and scheme not in out:
            out[scheme] = rest.lower() if scheme == "doi" else rest
    if "pmid" in out and not out["pmid"].isdigit():
        del out["pmid"]
    return out


class OpenCitations(Source):
    name = "opencitations"
    licence = "OpenCitations Index: CC0 1.0 (public domain)"
    limits = "no published rate limit (an access token is requested for applications); kb sends at most 3 requests/s"

    @classmethod
    def headers(cls) -> dict:
        token = os.environ.get("OPENCITATIONS_ACCESS_TOKEN")
        return {"authorization": token} if token else {}

    @staticmethod
    def _id(w: Work) -> str | None:
        return f"doi:{w.doi}" if w.doi else f"pmid:{w.pmid}" if w.pmid else None

    def _list(self, what: str, w: Work):
        data, prov = self.client.get(f"{what}/{path_id(self._id(w))}")
        return [r for r in (data if isinstance(data, list) else []) if isinstance(r, dict)], prov

    def _links(self, works: list[Work], what: str, other: str, count: str) -> Answer:
        """Ask `what` (references or citations) of each work; `other` is the field naming the linked work."""
        def ask(w: Work, answer: Answer):
            if not self._id(w):
                return answer.note(w.key, status="not-found", message="no DOI or PMID to ask OpenCitations with")
            rows, prov = self._list(what, w)
            seen = set()
            for row in rows:
                ids = parse_ids(row.get(other))
                ident = ids.get("pmid") or ids.get("doi")
                if not ident or ident in seen:
                    continue
                seen.add(ident)
                if what == "references":
                    record = citation_record(w.key, ids.get("pmid"), ids.get("doi"), self.name, prov)
                else:
                    citing = f"pmid:{ids['pmid']}" if ids.get("pmid") else f"doi:{ids['doi']}"
                    record = citation_record(citing, w.pmid, w.doi, self.name, prov)
                answer.citations.append(record)
            answer.note(w.key, **{count: len(seen)})
        return self.each(works, ask)

    def references(self, works: list[Work]) -> Answer:
        return self._links(works, "references", "cited", "references")

    def citers(self, works: list[Work]) -> Answer:
        return self._links(works, "citations", "citing", "citers")


SOURCE = OpenCitations
