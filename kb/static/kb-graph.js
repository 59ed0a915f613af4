/* kb: draws the citation or concept graph with vis-network from /-/kb/*.json (no network access needed). */
(function () {
  "use strict";
  var PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                 "#17becf", "#bcbd22", "#7f7f7f", "#393b79", "#ad494a"];
  var NONE = "#b0b0b0";
  var box = document.getElementById("kb-graph");
  if (!box) { return; }
  var kind = box.getAttribute("data-kind");
  var status = document.getElementById("kb-status");
  var legend = document.getElementById("kb-legend");
  var details = document.getElementById("kb-details");
  var colourSelect = document.getElementById("kb-colour");

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }
  function short(s, n) { s = s || ""; return s.length > n ? s.slice(0, n - 1) + "…" : s; }
  function colourKeys(data, mode) {
    var keys = {};
    if (kind === "citations" && mode !== "community" && data.concepts) {
      /* one colour per concept of the lexicon, in the same order as the concept graph and the timeline */
      var fixed = {};
      data.concepts.forEach(function (c, i) { fixed[c.id] = { colour: PALETTE[i % PALETTE.length], label: c.label }; });
      return fixed;
    }
    data.nodes.forEach(function (n) {
      var k = mode === "community" ? n.community : (kind === "concepts" ? n.id : n.concept);
      if (k !== null && k !== undefined) { keys[k] = kind === "concepts" && mode !== "community" ? n.label : (mode === "community" ? "community " + k : n.concept_label || k); }
    });
    var ordered = Object.keys(keys).sort(function (a, b) {
      var na = Number(a), nb = Number(b);
      return (isNaN(na) || isNaN(nb)) ? (a < b ? -1 : a > b ? 1 : 0) : na - nb;
    });
    var map = {};
    ordered.forEach(function (k, i) { map[k] = { colour: PALETTE[i % PALETTE.length], label: keys[k] }; });
    return map;
  }
  function nodeKey(n, mode) {
    if (mode === "community") { return n.community; }
    return kind === "concepts" ? n.id : n.concept;
  }
  function drawLegend(map, mode) {
    legend.textContent = "";
    var list = el("ul");
    Object.keys(map).forEach(function (k) {
      var li = el("li");
      var sw = el("span", { "class": "kb-swatch", style: "background:" + map[k].colour });
      li.appendChild(sw);
      li.appendChild(document.createTextNode(" " + map[k].label));
      list.appendChild(li);
    });
    if (kind === "citations") {
      var li = el("li");
      li.appendChild(el("span", { "class": "kb-swatch", style: "background:" + NONE }));
      li.appendChild(document.createTextNode(mode === "community" ? " no community" : " no concept matched"));
      list.appendChild(li);
      var seed = el("li");
      seed.appendChild(el("span", { "class": "kb-swatch kb-swatch-seed" }));
      seed.appendChild(document.createTextNode(" seed paper (thick border)"));
      list.appendChild(seed);
      var size = el("li", {}, "Bigger = higher PageRank");
      list.appendChild(size);
    } else {
      list.appendChild(el("li", {}, "Bigger = more papers; thicker line = stronger association"));
    }
    legend.appendChild(list);
  }
  function showDetails(n) {
    details.textContent = "";
    if (!n) { return; }
    if (kind === "citations") {
      details.appendChild(el("p", { "class": "kb-details-title" }, n.title || n.id));
      var dl = el("dl");
      [["Year", n.year], ["Journal", n.journal], ["Key", n.id], ["Main concept", n.concept_label],
       ["Community", n.community], ["Hops from seed", n.hop], ["Cited by (in KB)", n.in_degree],
       ["Cites (in KB)", n.out_degree], ["PageRank", n.pagerank ? n.pagerank.toFixed(4) : "0"]].forEach(function (p) {
        if (p[1] === null || p[1] === undefined || p[1] === "") { return; }
        dl.appendChild(el("dt", {}, p[0])); dl.appendChild(el("dd", {}, p[1]));
      });
      details.appendChild(dl);
      var links = el("p");
      var a = el("a", { href: n.url }, "Open paper page"); links.appendChild(a);
      links.appendChild(document.createTextNode(" · "));
      links.appendChild(el("a", { href: n.focus_url }, "Focus on this paper"));
      details.appendChild(links);
    } else {
      details.appendChild(el("p", { "class": "kb-details-title" }, n.label));
      if (n.description) { details.appendChild(el("p", {}, n.description)); }
      details.appendChild(el("p", {}, n.papers + " paper" + (n.papers === 1 ? "" : "s")));
      var l2 = el("p");
      l2.appendChild(el("a", { href: n.url }, "Open concept page"));
      l2.appendChild(document.createTextNode(" · "));
      l2.appendChild(el("a", { href: n.papers_url }, "Its papers in the citation graph"));
      details.appendChild(l2);
    }
  }
  function tooltip(n) {
    if (kind === "citations") {
      return (n.title || n.id) + "\n" + [n.year, n.journal].filter(Boolean).join(", ") +
        "\nPageRank " + (n.pagerank || 0).toFixed(4) + " · cited by " + n.in_degree + " in the KB";
    }
    return n.label + "\n" + n.papers + " papers";
  }

  function build(data) {
    var byId = {};
    data.nodes.forEach(function (n) { byId[n.id] = n; });
    var labelled = {};
    if (kind === "citations") {
      data.nodes.slice().sort(function (a, b) { return (b.pagerank || 0) - (a.pagerank || 0); })
        .slice(0, data.focus ? 60 : 15).forEach(function (n) { labelled[n.id] = true; });
    }
    function visNodes(mode) {
      var map = colourKeys(data, mode);
      drawLegend(map, mode);
      return data.nodes.map(function (n) {
        var key = nodeKey(n, mode);
        var colour = (key !== null && key !== undefined && map[key]) ? map[key].colour : NONE;
        var node = { id: n.id, title: tooltip(n), color: { background: colour, border: n.is_seed || n.id === data.focus ? "#111" : colour,
          highlight: { background: colour, border: "#111" }, hover: { background: colour, border: "#111" } } };
        if (kind === "citations") {
          node.value = n.pagerank || 0;
          node.label = (labelled[n.id] || n.is_seed || n.id === data.focus) ? short(n.title, 40) + (n.year ? " (" + n.year + ")" : "") : undefined;
          node.borderWidth = n.is_seed || n.id === data.focus ? 5 : 1;
          if (n.is_seed || n.id === data.focus) { node.font = { size: 16, color: "#000" }; }
        } else {
          node.value = n.papers;
          node.label = n.label + " (" + n.papers + ")";
          node.borderWidth = 2;
        }
        return node;
      });
    }
    var nodes = new vis.DataSet(visNodes(colourSelect ? colourSelect.value : "concept"));
    var edges = new vis.DataSet(data.edges.map(function (e, i) {
      if (kind === "citations") {
        return { id: i, from: e.from, to: e.to, arrows: { to: { enabled: true, scaleFactor: 0.5 } },
                 color: { color: "#9aa4b1", highlight: "#333", hover: "#333" }, title: "cites (" + (e.source || "") + ")" };
      }
      return { id: i, from: e.from, to: e.to, value: e.weight, color: { color: "#8895a7", highlight: "#333", hover: "#333" },
               title: e.papers + " shared papers · strength " + Number(e.strength || 0).toPrecision(3) };
    }));
    var options = {
      layout: { randomSeed: 7, improvedLayout: data.nodes.length < 150 },
      interaction: { hover: true, tooltipDelay: 120, navigationButtons: false, keyboard: true },
      nodes: { shape: "dot", scaling: kind === "citations" ? { min: 8, max: 42,
                 /* size relative to the largest PageRank shown (area-like), not stretched between the smallest and
                    largest: six near-equal PageRanks should give six near-equal dots */
                 customScalingFunction: function (min, max, total, value) { return max > 0 ? Math.sqrt(value / max) : 0.5; } } : { min: 14, max: 60, label: { enabled: true, min: 14, max: 26 } },
               font: { size: 13, face: "Helvetica, Arial, sans-serif", strokeWidth: 3, strokeColor: "#ffffff" } },
      edges: { smooth: false, scaling: { min: 1, max: 12 }, selectionWidth: 2 },
      physics: { solver: "forceAtlas2Based",
                 forceAtlas2Based: { gravitationalConstant: data.nodes.length < 40 ? -150 : -60, avoidOverlap: 0.4,
                                     springLength: kind === "concepts" ? 180 : (data.nodes.length < 40 ? 150 : 90) },
                 stabilization: { iterations: 300, fit: true } }
    };
    var network = new vis.Network(box, { nodes: nodes, edges: edges }, options);
    box.kbNetwork = network; /* for tests and the browser console */
    var finished = false;
    function done() {
      if (finished) { return; }
      finished = true;
      network.setOptions({ physics: false });
      box.setAttribute("data-nodes-drawn", String(data.nodes.length));
      box.setAttribute("data-edges-drawn", String(data.edges.length));
    }
    network.once("stabilizationIterationsDone", done);
    network.on("afterDrawing", function () { if (!box.hasAttribute("data-first-draw")) { box.setAttribute("data-first-draw", "1"); } });
    setTimeout(done, 8000);
    network.on("hoverNode", function (p) { showDetails(byId[p.node]); });
    network.on("click", function (p) {
      if (p.nodes.length) { window.location.href = byId[p.nodes[0]].url; }
    });
    network.on("doubleClick", function (p) {
      if (p.nodes.length) { var n = byId[p.nodes[0]]; window.location.href = kind === "citations" ? n.focus_url : n.papers_url; }
    });
    if (colourSelect) {
      colourSelect.addEventListener("change", function () { nodes.update(visNodes(colourSelect.value)); });
    }
    var msg;
    if (kind === "citations") {
      msg = "Showing " + data.shown + " of " + data.total + " papers" + (data.capped ?
        (data.focus ? " (the neighbours with the highest PageRank)" : " (the top " + data.shown + " by PageRank; raise \"Papers shown\" or filter to see others)") : "") +
        " and " + data.edges.length + " citations between them.";
    } else {
      msg = data.nodes.length + " concepts, " + data.edges.length + " co-occurrence links.";
    }
    status.textContent = msg;
    if (!data.nodes.length) { box.setAttribute("data-nodes-drawn", "0"); status.textContent = "No papers match these filters."; }
  }

  fetch(box.getAttribute("data-src"), { headers: { Accept: "application/json" } })
    .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.json(); })
    .then(build)
    .catch(function (err) { status.textContent = "Could not load the graph: " + err.message; box.setAttribute("data-error", err.message); });
})();
