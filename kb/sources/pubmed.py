"""PubMed as one citation source: NCBI elink over the harvest's E-utilities client (kb.eutils).

``pubmed_pubmed_refs`` gives the PMIDs a paper cites and ``pubmed_pubmed_citedin`` the PMIDs citing it,
200 papers per request, but both only for articles in PubMed Central (NCBI: "you will only retrieve
articles that are in PMC"). The references PubMed prints in a record's ReferenceList (``pubmed-reflist``
records, written by the harvest for every paper) count toward its coverage too.
"""

from __future__ import annotations

from . import Answer, Source, Work, citation_record


class PubMed(Source):
    name = "pubmed"
    licence = "NLM PubMed data (NLM terms and conditions); links from NCBI elink"
    limits = "3 requests/s without an NCBI API key, 10 with; elink refs/citedin cover PMC articles only"
    fatal = True       # PubMed is the backbone of the harvest: its errors stop it (and a re-run resumes)

    def __init__(self, eutils):
        super().__init__(eutils)

    def references(self, works: list[Work]) -> Answer:
        answer = Answer()
        by_pmid = {w.pmid: w for w in works if w.pmid}
        found: dict[str, set] = {w.key: {("pmid", p) if p else ("doi", d) if d else ("text", t)
                                         for p, d, t in w.reflist} for w in works}
        for links, prov in self.client.elink_batches(list(by_pmid), "pubmed_pubmed_refs"):
            for citing, cited_list in links.items():
                work = by_pmid.get(citing)
                for cited in cited_list:
                    answer.citations.append(citation_record(work.key if work else f"pmid:{citing}", cited,
                                                            source="elink:pubmed_pubmed_refs", prov=prov))
                    if work:
                        found[work.key].add(("pmid", cited))
        for w in works:
            answer.note(w.key, references=len(found[w.key]))
        return answer

    def citers(self, works: list[Work]) -> Answer:
        answer = Answer()
        by_pmid = {w.pmid: w for w in works if w.pmid}
        counts = {w.key: 0 for w in works}
        for links, prov in self.client.elink_batches(list(by_pmid), "pubmed_pubmed_citedin"):
            for cited, citers in links.items():
                for citer in citers:
                    answer.citations.append(citation_record(f"pmid:{citer}", cited,
                                                            source="elink:pubmed_pubmed_citedin", prov=prov))
                if cited in by_pmid:
                    counts[by_pmid[cited].key] += len(citers)
        for w in works:
            answer.note(w.key, citers=counts[w.key])
        return answer
