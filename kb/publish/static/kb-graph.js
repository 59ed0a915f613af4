/* kb: draws the citation, similarity or concept graph with vis-network from /-/kb/*.json (no network access needed).
   Click a node for its details in the side panel (with an explicit "open" link); double-click to focus on it.
   Layout "by year" puts each paper at its publication year (x), the force layout spreads the rest. */
(function () {
  "use strict";
  var PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                 "#17becf", "#bcbd22", "#7f7f7f", "#393b79", "#ad494a"];
  var SOURCE_PALETTE = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#1f78b4"];
  var SIMILAR_KINDS = { "cocitation": ["#e6550d", "co-citation (cited together)"],
                        "coupling": ["#3182bd", "bibliographic coupling (shared references)"],
                        "pubmed": ["#31a354", "PubMed similar articles"], "several": ["#333333", "several of these"] };
  var EDGE = "#9aa4b1", LAYER = "#8e44ad", NONE = "#b0b0b0", STUB_FILL = "#eef0f3";
  var LABEL_PX = 13;      /* labels keep this size on screen at any zoom */
  var MAX_LABELS = 40;    /* with more nodes, only the most central are labelled (hover shows the others) */

  var box = document.getElementById("kb-graph");
  if (!box) { return; }
  var kind = box.getAttribute("data-kind");
  var status = document.getElementById("kb-status");
  var legend = document.getElementById("kb-legend");
  var details = document.getElementById("kb-details");
  var colourSelect = document.getElementById("kb-colour");
  var edgeSelect = document.getElementById("kb-edge-colour");
  var layerBox = document.getElementById("kb-similar-layer");
  var layoutRadios = document.querySelectorAll("input[name=kb-layout]");
  var query = new URLSearchParams(window.location.search);
  var state = { data: null, layout: query.get("layout") === "years" ? "years" : "force",
                edges: query.get("edges") === "source" ? "source" : "plain", pinned: null, network: null };
  var byId = {};

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }
  function num(n) { return Number(n || 0).toLocaleString("en"); }
  function plural(n, word) { return num(n) + " " + word + (n === 1 ? "" : "s"); }
  function isPaperKind() { return kind === "citations" || kind === "similar"; }
  function withParams(url, changes) {
    var u = new URL(url, window.location.href);
    Object.keys(changes).forEach(function (k) {
      if (changes[k] === null) { u.searchParams.delete(k); } else { u.searchParams.set(k, changes[k]); }
    });
    return u.pathname + u.search;
  }
  function syncUrl() {
    var url = withParams(window.location.href, { layout: state.layout === "years" ? "years" : null,
                                                 edges: state.edges === "source" ? "source" : null });
    window.history.replaceState(null, "", url);
  }

  /* ---- colours and legend ---- */
  function colourKeys(data, mode) {
    if (isPaperKind() && mode !== "community" && data.concepts) {
      /* one colour per concept of the lexicon, in the same order as the concept graph and the timeline */
      var fixed = {};
      data.concepts.forEach(function (c, i) { fixed[c.id] = { colour: PALETTE[i % PALETTE.length], label: c.label }; });
      return fixed;
    }
    var keys = {};
    data.nodes.forEach(function (n) {
      var k = mode === "community" ? n.community : (kind === "concepts" ? n.id : n.concept);
      if (k !== null && k !== undefined) {
        keys[k] = mode === "community" ? "community " + k : (kind === "concepts" ? n.label : n.concept_label || k);
      }
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
  function sourceColours(data) {
    var map = {};
    (data.edge_sources || []).forEach(function (s, i) { map[s.source] = SOURCE_PALETTE[i % SOURCE_PALETTE.length]; });
    return map;
  }
  function rarestSource(sources, data) {
    /* the source that reported the fewest of the drawn arrows: it says most about where an arrow came from */
    var count = {};
    (data.edge_sources || []).forEach(function (s) { count[s.source] = s.edges; });
    return sources.slice().sort(function (a, b) { return (count[a] || 0) - (count[b] || 0) || (a < b ? -1 : 1); })[0];
  }
  function swatchItem(list, swatchClass, style, text, small) {
    var li = el("li");
    li.appendChild(el("span", { "class": swatchClass, style: style || "" }));
    li.appendChild(document.createTextNode(" " + text));
    if (small) { li.appendChild(document.createTextNode(" ")); li.appendChild(el("small", {}, small)); }
    list.appendChild(li);
    return li;
  }
  function drawLegend(map, mode) {
    var data = state.data;
    legend.textContent = "";
    var list = el("ul");
    Object.keys(map).forEach(function (k) { swatchItem(list, "kb-swatch", "background:" + map[k].colour, map[k].label); });
    if (isPaperKind()) {
      swatchItem(list, "kb-swatch", "background:" + NONE, mode === "community" ? "no community" : "no concept matched");
      swatchItem(list, "kb-swatch kb-swatch-seed", "", kind === "similar" ? "the paper compared (thick border)" :
                 (data.focus ? "seed paper or focus (thick border)" : "seed paper (thick border)"));
      swatchItem(list, "kb-swatch kb-swatch-stub", "", "known only from a reference list");
      list.appendChild(el("li", {}, "Bigger = higher PageRank"));
    } else {
      list.appendChild(el("li", {}, "Bigger = more papers; thicker line = stronger association"));
    }
    legend.appendChild(list);
    if (kind === "citations") {
      var edgesList = el("ul", { "class": "kb-edge-legend" });
      if (state.edges === "source") {
        var colours = sourceColours(data);
        (data.edge_sources || []).forEach(function (s) {
          var li = swatchItem(edgesList, "kb-swatch-line", "border-color:" + colours[s.source], s.source, plural(s.edges, "arrow"));
          li.className = "kb-source-item" + (state.sourceOnly === s.source ? " kb-source-on" : "");
          li.setAttribute("data-source", s.source);
          li.setAttribute("role", "button");
          li.setAttribute("tabindex", "0");
          li.title = "Show only the arrows " + s.source + " reported (click again for all)";
          var pick = function () { state.sourceOnly = state.sourceOnly === s.source ? null : s.source; refreshEdges(); };
          li.addEventListener("click", pick);
          li.addEventListener("keydown", function (ev) { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); pick(); } });
        });
        edgesList.appendChild(el("li", { "class": "kb-hint" }, "An arrow reported by several sources takes the colour of the rarest; click a source to see only its arrows."));
      } else {
        swatchItem(edgesList, "kb-swatch-line", "border-color:" + EDGE, "cites (arrow: citing → cited)");
      }
      if (data.similar_edges) {
        swatchItem(edgesList, "kb-swatch-line kb-swatch-dash", "border-color:" + LAYER, "similar papers",
                   plural(data.similar_edges.length, "link"));
      }
      if (data.more && data.more.length) {
        swatchItem(edgesList, "kb-swatch-line kb-swatch-dash", "border-color:#777", "to a box of hidden works");
      }
      legend.appendChild(el("p", { "class": "kb-hint" }, "Arrows"));
      legend.appendChild(edgesList);
    } else if (kind === "similar") {
      var simList = el("ul");
      Object.keys(SIMILAR_KINDS).forEach(function (k) {
        swatchItem(simList, "kb-swatch-line", "border-color:" + SIMILAR_KINDS[k][0], SIMILAR_KINDS[k][1]);
      });
      legend.appendChild(el("p", { "class": "kb-hint" }, "Lines (thicker = more similar)"));
      legend.appendChild(simList);
    }
  }

  /* ---- the side panel ---- */
  function actions(links) {
    var p = el("p", { "class": "kb-actions" });
    links.forEach(function (l) { if (l[1]) { p.appendChild(el("a", { href: l[1], "data-action": l[2] }, l[0])); } });
    return p;
  }
  function showDetails(n) {
    details.textContent = "";
    if (!n) {
      details.appendChild(el("p", { "class": "kb-hint" }, "Click a " + (kind === "concepts" ? "concept" : "paper") +
        " to see it here; double-click to " + (kind === "concepts" ? "see its papers." : "focus on it.")));
      return;
    }
    if (n.kb_more) {
      details.appendChild(el("p", { "class": "kb-details-label" }, n.label));
      var of = byId[n.of];
      details.appendChild(el("p", {}, n.kind === "stubs" ?
        plural(n.count, "work") + " cited by " + (of ? of.label : n.of) + ", known only from reference lists, not drawn one by one." :
        plural(n.count, "more paper") + " linked to " + (of ? of.label : n.of) + " beyond the number of papers shown."));
      if (state.data.focus) {
        details.appendChild(actions([["Show them all", moreTarget(n), "expand"], ["List them on the paper page", n.url, "open"]]));
      } else {
        details.appendChild(actions([["Focus on " + (of ? of.label : n.of), n.focus_url, "focus"], ["Open paper page", n.url, "open"]]));
      }
      return;
    }
    if (isPaperKind()) {
      details.appendChild(el("p", { "class": "kb-details-label" }, n.label));
      details.appendChild(el("p", { "class": "kb-details-title" }, n.title || n.id));
      if (!n.resolved) { details.appendChild(el("p", {}, "")).appendChild(el("span", { "class": "kb-stub-badge" }, "known only from a reference list")); }
      var dl = el("dl");
      [["Authors", n.authors], ["Year", n.year], ["Journal", n.journal], ["Key", n.id], ["Main concept", n.concept_label],
       ["Community", n.community], ["Hops from seed", n.hop], ["Cited by (in KB)", n.in_degree],
       ["Cites (in KB)", n.out_degree ? n.out_degree + (n.stub_references ? " (" + n.stub_references + " only as references)" : "") : null],
       ["PageRank", n.pagerank ? n.pagerank.toFixed(5) : "0"]].forEach(function (p) {
        if (p[1] === null || p[1] === undefined || p[1] === "") { return; }
        dl.appendChild(el("dt", {}, p[0])); dl.appendChild(el("dd", {}, p[1]));
      });
      details.appendChild(dl);
      details.appendChild(actions([["Open paper page", n.url, "open"], ["Focus on it", n.focus_url, "focus"],
                                   ["Similar papers", n.similar_url, "similar"]]));
    } else {
      details.appendChild(el("p", { "class": "kb-details-label" }, n.label));
      if (n.description) { details.appendChild(el("p", {}, n.description)); }
      details.appendChild(el("p", {}, plural(n.papers, "paper")));
      details.appendChild(actions([["Open concept page", n.url, "open"], ["Its papers in the citation graph", n.papers_url, "focus"]]));
    }
  }
  function moreTarget(n) {
    /* double-click on a "+N" box: in a focus view, draw them all; in the whole view, focus on their paper */
    if (!state.data.focus) { return n.focus_url; }
    return withParams(window.location.href, n.kind === "stubs" ? { stubs: "all" } : { limit: "500" });
  }
  function showEdge(e) {
    details.textContent = "";
    var a = byId[e.from], b = byId[e.to];
    var name = function (n, id) { return n ? n.label : id; };
    if (e.kb_kind === "cites") {
      details.appendChild(el("p", { "class": "kb-details-label" }, name(a, e.from) + " cites " + name(b, e.to)));
      details.appendChild(el("p", {}, "Reported by: " + (e.sources || []).join(", ")));
    } else if (e.kb_kind === "similar") {
      details.appendChild(el("p", { "class": "kb-details-label" }, name(a, e.from) + " and " + name(b, e.to) + " are similar"));
      details.appendChild(el("p", {}, similarText(e)));
    }
  }
  function similarText(e) {
    var parts = [];
    if (e.cocitations) { parts.push(plural(e.cocitations, "paper") + " cite both"); }
    if (e.coupling) { parts.push(plural(e.coupling, "shared reference")); }
    if (e.pubmed_rank) { parts.push("PubMed similar article, rank " + e.pubmed_rank); }
    return parts.join("; ") || "similar";
  }
  function tooltip(n) {
    if (n.kb_more) { return n.label + " (click for details)"; }
    if (isPaperKind()) {
      return n.label + ": " + (n.title || n.id) + "\n" + [n.year, n.journal].filter(Boolean).join(", ") +
        (n.resolved ? "" : "\n(known only from a reference list)") +
        "\nPageRank " + (n.pagerank || 0).toFixed(5) + " · cited by " + n.in_degree + " in the KB";
    }
    return n.label + "\n" + n.papers + " papers";
  }

  /* ---- nodes and edges for vis ---- */
  function labelledSet(data) {
    var set = {};
    /* papers with full records first (a KB's reference-only works often have the higher PageRank), then PageRank */
    var ranked = data.nodes.slice().sort(function (a, b) {
      return (b.resolved ? 1 : 0) - (a.resolved ? 1 : 0) || (b.pagerank || 0) - (a.pagerank || 0) || (a.id < b.id ? -1 : 1);
    });
    if (state.layout === "years") {
      /* by year: the most central papers of every year in turn, so that labels spread along the axis */
      var byYear = {}, years = [];
      ranked.forEach(function (n) {
        var y = n.year || 0;
        if (!byYear[y]) { byYear[y] = []; years.push(y); }
        byYear[y].push(n);
      });
      var picked = 0;
      for (var round = 0; picked < MAX_LABELS && round < ranked.length; round++) {
        var any = false;
        for (var i = 0; i < years.length && picked < MAX_LABELS; i++) {
          var n = byYear[years[i]][round];
          if (n && (n.resolved || round === 0)) { set[n.id] = true; picked++; any = true; }
        }
        if (!any) { break; }
      }
    } else {
      ranked.slice(0, MAX_LABELS).forEach(function (n) { set[n.id] = true; });
    }
    data.nodes.forEach(function (n) { if (n.is_seed || n.id === data.focus || n.id === data.paper) { set[n.id] = true; } });
    return set;
  }
  function yearPositions(data) {
    /* x = publication year, oldest on the left; a year's slot is as wide as its papers need, so that empty decades
       of old reference-only works do not squeeze the years where most papers are */
    var counts = {};
    data.nodes.forEach(function (n) { if (n.year) { counts[n.year] = (counts[n.year] || 0) + 1; } });
    var years = Object.keys(counts).map(Number);
    var min = years.length ? Math.min.apply(null, years) : 2000, max = years.length ? Math.max.apply(null, years) : 2000;
    var centre = {}, at = 0;
    for (var y = min; y <= max; y++) {
      var width = counts[y] ? 46 + 9 * Math.sqrt(counts[y]) : 14;
      centre[y] = at + width / 2;
      at += width;
    }
    var step = 60;
    return { min: min, max: max, step: step, counts: counts,
             x: function (year) { return year ? (centre[year] !== undefined ? centre[year] : (year < min ? -step : at)) : -2.5 * step; } };
  }
  function visNodes(mode) {
    var data = state.data;
    var map = colourKeys(data, mode);
    drawLegend(map, mode);
    var labelled = kind === "concepts" ? null : labelledSet(data);
    var axis = state.layout === "years" ? yearPositions(data) : null;
    var out = data.nodes.map(function (n, i) {
      var key = nodeKey(n, mode);
      var colour = (key !== null && key !== undefined && map[key]) ? map[key].colour : NONE;
      var marked = n.is_seed || n.id === data.focus || n.id === data.paper;
      var node = { id: n.id, title: tooltip(n) };
      if (kind === "concepts") {
        node.color = { background: colour, border: colour, highlight: { background: colour, border: "#111" }, hover: { background: colour, border: "#111" } };
        node.value = n.papers;
        node.label = n.label + " (" + n.papers + ")";
        node.borderWidth = 2;
        return node;
      }
      var fill = n.resolved ? colour : STUB_FILL;
      node.color = { background: fill, border: marked ? "#111" : colour,
                     highlight: { background: fill, border: "#111" }, hover: { background: fill, border: "#111" } };
      node.shape = n.resolved ? "dot" : "square";
      node.value = n.pagerank || 0;
      node.borderWidth = marked ? 5 : (n.resolved ? 1 : 2);
      node.label = labelled[n.id] ? n.label : undefined;
      if (marked) { node.font = { bold: true }; }
      if (axis) {
        node.x = axis.x(n.year);
        node.y = ((i * 7919) % 997) - 498;   /* a spread start, the same on every load */
        node.fixed = { x: true, y: false };
      }
      return node;
    });
    (data.more || []).forEach(function (m) {
      var node = { id: m.id, label: m.label, title: tooltip({ kb_more: true, label: m.label }), shape: "box", kb_more: true,
                   font: { size: box.kbLabelSize || LABEL_PX, color: "#222" },
                   color: { background: "#ffffff", border: "#777", highlight: { background: "#f4f4f4", border: "#111" } },
                   shapeProperties: { borderDashes: [5, 4] }, borderWidth: 1.5, margin: 6 };
      if (axis) {
        var parent = byId[m.of];
        node.x = axis.x(parent && parent.year) - axis.step * 0.8;
        node.y = m.kind === "stubs" ? 260 : -260;
        node.fixed = { x: true, y: false };
      }
      out.push(node);
    });
    return out;
  }
  function visEdges() {
    var data = state.data, out = [];
    if (kind === "concepts") {
      return data.edges.map(function (e, i) {
        return { id: "e" + i, from: e.from, to: e.to, value: e.weight, color: { color: "#8895a7", highlight: "#333", hover: "#333" },
                 title: e.papers + " shared papers · strength " + Number(e.strength || 0).toPrecision(3) };
      });
    }
    if (kind === "similar") {
      var max = Math.max.apply(null, data.edges.map(function (e) { return e.strength || 1; }).concat([1]));
      return data.edges.map(function (e, i) {
        var k = (e.kind || "").indexOf("+") >= 0 ? "several" : (e.kind || "several");
        var colour = (SIMILAR_KINDS[k] || SIMILAR_KINDS.several)[0];
        return { id: "s" + i, from: e.from, to: e.to, value: (e.strength || 1) / max, kb_kind: "similar",
                 cocitations: e.cocitations, coupling: e.coupling, pubmed_rank: e.pubmed_rank,
                 color: { color: colour, highlight: "#111", hover: "#111", opacity: 0.8 }, title: similarText(e) };
      });
    }
    var colours = sourceColours(data);
    data.edges.forEach(function (e, i) {
      var sources = e.sources || [];
      var colour = EDGE, width = 1;
      if (state.edges === "source") {
        colour = colours[rarestSource(sources, data)] || EDGE;
        width = 1.5;
        if (state.sourceOnly && sources.indexOf(state.sourceOnly) < 0) { colour = "#eceef1"; width = 1; }
        else if (state.sourceOnly) { colour = colours[state.sourceOnly]; width = 2; }
      }
      out.push({ id: "c" + i, from: e.from, to: e.to, arrows: { to: { enabled: true, scaleFactor: 0.5 } }, width: width,
                 kb_kind: "cites", sources: sources, color: { color: colour, highlight: "#111", hover: "#111" },
                 title: "cites · " + (sources.join(", ") || "source unknown") });
    });
    (data.more || []).forEach(function (m, i) {
      out.push({ id: "m" + i, from: m.of, to: m.id, dashes: true, arrows: m.kind === "stubs" ? { to: { enabled: true, scaleFactor: 0.5 } } : undefined,
                 color: { color: "#777" }, kb_kind: "more" });
    });
    (data.similar_edges || []).forEach(function (e, i) {
      out.push({ id: "s" + i, from: e.from, to: e.to, dashes: [4, 4], width: 1.5, physics: false, kb_kind: "similar",
                 cocitations: e.cocitations, coupling: e.coupling, pubmed_rank: e.pubmed_rank,
                 color: { color: LAYER, opacity: 0.7, highlight: LAYER, hover: LAYER }, title: "similar: " + similarText(e) });
    });
    return out;
  }

  /* ---- labels that stay legible, and the year axis ---- */
  var labelFrame = null;
  function fitLabels() {
    var net = state.network;
    if (!net || kind === "concepts") { return; }
    var scale = net.getScale() || 1;
    var size = Math.min(LABEL_PX / Math.min(scale, 1), 120);
    if (Math.abs(size - (box.kbLabelSize || 0)) > 0.5) {
      net.setOptions({ nodes: { font: { size: size } } });
      var boxes = net.body.data.nodes.get({ filter: function (n) { return n.kb_more; } });
      if (boxes.length) {
        net.body.data.nodes.update(boxes.map(function (n) { return { id: n.id, font: { size: size, color: "#222" } }; }));
      }
      box.kbLabelSize = size;
    }
    box.kbLabelPx = Math.round(size * scale * 10) / 10;   /* on-screen label size, for tests */
  }
  function drawAxis(ctx) {
    if (state.layout !== "years" || !state.axis) { return; }
    var net = state.network, axis = state.axis;
    var scale = net.getScale() || 1;
    var topLeft = net.DOMtoCanvas({ x: 0, y: 0 });
    var bottomRight = net.DOMtoCanvas({ x: box.clientWidth, y: box.clientHeight });
    ctx.save();
    ctx.font = (12 / scale) + "px Helvetica, Arial, sans-serif";
    ctx.textAlign = "center";
    ctx.lineWidth = 1 / scale;
    var last = -Infinity, drawn = [];
    /* a tick per year with papers (or every fifth year), skipping those too close to the previous one on screen */
    for (var y = axis.min; y <= axis.max; y++) {
      if (!axis.counts[y] && y % 5 !== 0 && y !== axis.min && y !== axis.max) { continue; }
      var x = axis.x(y);
      var minGap = (y % 5 === 0 ? 34 : 44) / scale;
      if (x - last < minGap) { continue; }
      last = x;
      drawn.push(y);
      ctx.strokeStyle = y % 10 === 0 ? "#d3d9e0" : "#eaedf1";
      ctx.beginPath(); ctx.moveTo(x, topLeft.y + 22 / scale); ctx.lineTo(x, bottomRight.y); ctx.stroke();
      ctx.fillStyle = "#4a5560";
      ctx.fillText(String(y), x, topLeft.y + 16 / scale);
    }
    if (state.data.nodes.some(function (n) { return !n.year; })) {
      ctx.fillStyle = "#4a5560";
      ctx.fillText("no year", axis.x(null), topLeft.y + 16 / scale);
    }
    ctx.restore();
    box.kbAxisYears = drawn;   /* for tests */
  }

  /* ---- the network ---- */
  function draw() {
    var data = state.data;
    byId = {};
    data.nodes.forEach(function (n) { byId[n.id] = n; });
    (data.more || []).forEach(function (m) { byId[m.id] = Object.assign({ kb_more: true }, m); });
    state.axis = state.layout === "years" && isPaperKind() ? yearPositions(data) : null;
    if (state.network) { state.network.destroy(); state.network = null; }
    ["data-nodes-drawn", "data-edges-drawn", "data-first-draw"].forEach(function (a) { box.removeAttribute(a); });
    box.kbLabelSize = 0;
    var nodes = new vis.DataSet(visNodes(colourSelect ? colourSelect.value : "concept"));
    var edges = new vis.DataSet(visEdges());
    var many = data.nodes.length >= 40;
    var physics = state.axis ?
      { solver: "forceAtlas2Based", forceAtlas2Based: { gravitationalConstant: -110, centralGravity: 0.003, springLength: 110, avoidOverlap: 1 },
        stabilization: { iterations: 250, fit: true } } :
      { solver: "forceAtlas2Based",
        forceAtlas2Based: { gravitationalConstant: many ? -70 : -150, avoidOverlap: 0.5, centralGravity: 0.012,
                            springLength: kind === "concepts" ? 180 : (many ? 95 : 150) },
        stabilization: { iterations: 300, fit: true } };
    var options = {
      layout: { randomSeed: 7, improvedLayout: data.nodes.length < 150 && !state.axis },
      interaction: { hover: true, tooltipDelay: 150, navigationButtons: false, keyboard: true, multiselect: false },
      nodes: { shape: "dot",
               scaling: isPaperKind() ? { min: 7, max: 40,
                 /* size relative to the largest PageRank shown (area-like), not stretched between the smallest and
                    largest: six near-equal PageRanks should give six near-equal dots */
                 customScalingFunction: function (min, max, total, value) { return max > 0 ? Math.sqrt(value / max) : 0.5; } } :
                 { min: 14, max: 60, label: { enabled: true, min: 14, max: 26 } },
               font: { size: LABEL_PX, face: "Helvetica, Arial, sans-serif", strokeWidth: 4, strokeColor: "#ffffff", color: "#111" } },
      edges: { smooth: false, scaling: { min: 1, max: 10 }, selectionWidth: 2 },
      physics: physics
    };
    var network = new vis.Network(box, { nodes: nodes, edges: edges }, options);
    state.network = network;
    box.kbNetwork = network; /* for tests and the browser console */
    var citationEdges = kind === "concepts" ? data.edges.length : edges.get({ filter: function (e) { return e.kb_kind !== "more" && !(kind === "citations" && e.kb_kind === "similar"); } }).length;
    var finished = false;
    function done() {
      if (finished) { return; }
      finished = true;
      network.setOptions({ physics: false });
      if (!state.axis && data.nodes.length > 20) {
        /* the force layout comes out round; the box is wide: stretch it sideways so that labels overlap less */
        var stretch = Math.max(1, Math.min(1.8, box.clientWidth / Math.max(box.clientHeight, 1)));
        var positions = network.getPositions();
        Object.keys(positions).forEach(function (id) { network.moveNode(id, positions[id].x * stretch, positions[id].y); });
      }
      network.fit({ animation: false });
      fitLabels();
      box.kbState = { layout: state.layout, nodes: data.nodes.length, more: (data.more || []).length, edges: citationEdges,
                      similarEdges: (data.similar_edges || []).length, labelled: nodes.get({ filter: function (n) { return !!n.label; } }).length };
      box.setAttribute("data-layout", state.layout);
      box.setAttribute("data-nodes-drawn", String(data.nodes.length));
      box.setAttribute("data-edges-drawn", String(citationEdges));
    }
    network.once("stabilizationIterationsDone", done);
    setTimeout(done, 8000);
    network.on("afterDrawing", function () { if (!box.hasAttribute("data-first-draw")) { box.setAttribute("data-first-draw", "1"); } });
    network.on("beforeDrawing", drawAxis);
    network.on("zoom", function () {
      if (labelFrame) { return; }
      labelFrame = window.requestAnimationFrame(function () { labelFrame = null; fitLabels(); });
    });
    network.on("hoverNode", function (p) { if (!state.pinned) { showDetails(byId[p.node]); } });
    network.on("blurNode", function () { if (!state.pinned) { showDetails(null); } });
    network.on("click", function (p) {
      /* a click selects and shows details (with the links); it never navigates, so that a double-click can focus */
      if (p.nodes.length) {
        state.pinned = p.nodes[0];
        showDetails(byId[p.nodes[0]]);
      } else if (p.edges.length) {
        state.pinned = null;
        var e = edges.get(p.edges[0]);
        if (e && e.kb_kind !== "more") { showEdge(e); }
      } else {
        state.pinned = null;
        showDetails(null);
      }
    });
    network.on("doubleClick", function (p) {
      if (!p.nodes.length) { return; }
      var n = byId[p.nodes[0]];
      var target = n.kb_more ? moreTarget(n) :
        (kind === "concepts" ? n.papers_url : (kind === "similar" ? n.similar_url : n.focus_url));
      if (target) { window.location.href = target; }
    });
    if (state.pinned && byId[state.pinned]) { showDetails(byId[state.pinned]); }
    status.textContent = message(data);
    if (!data.nodes.length) { box.setAttribute("data-nodes-drawn", "0"); box.setAttribute("data-edges-drawn", "0"); }
  }

  function message(data) {
    if (kind === "concepts") { return data.nodes.length + " concepts, " + data.edges.length + " co-occurrence links."; }
    if (!data.nodes.length) { return kind === "similar" ? "No paper to compare." : "No papers match these filters."; }
    if (kind === "similar") {
      var others = data.nodes.length - 1;
      var msg = "The " + plural(others, "paper") + " most similar to " + data.nodes[0].label + " (of " +
        num(data.total - 1) + " with any similarity), " + plural(data.edges.length, "similarity link") + ".";
      if (data.sources && !data.sources.similar_articles) {
        msg += " PubMed's similar articles were not fetched for this knowledge base: co-citation and coupling only.";
      }
      return msg;
    }
    var citations = data.edges.length;
    var msg2 = "Showing " + num(data.shown) + " of " + plural(data.total, "paper") + " and " + num(citations) + " of " +
      plural(data.total_edges === null || data.total_edges === undefined ? citations : data.total_edges, "citation") +
      (data.focus ? " in this neighbourhood." : " among them.");
    if (data.method === "grown") {
      var fromSeed = data.nodes.some(function (n) { return n.is_seed; });
      msg2 += " Chosen by growing from " + (fromSeed ? "the seed" : "the most central paper") +
        " along citations, the most central and best linked papers first" +
        (data.resolved_total !== undefined ? " (" + num(data.resolved_total) + " papers have full records; the rest are known only from reference lists)." : ".");
    }
    if (data.focus) {
      (data.more || []).forEach(function (m) { msg2 += " " + m.label + " in a dashed box."; });
    } else if (data.more && data.more.length) {
      msg2 += " Few of these papers cite each other: they are joined by the works they both cite, and each paper's" +
        " other reference-only works are one dashed \"+N refs\" box.";
    }
    if (data.similar_edges) { msg2 += " " + plural(data.similar_edges.length, "similarity link") + " (dashed)."; }
    return msg2;
  }

  function load(src) {
    status.textContent = "Loading…";
    return fetch(src, { headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) { return r.text().then(function (t) { throw new Error("HTTP " + r.status + (t ? ": " + t.slice(0, 200) : "")); }); } return r.json(); })
      .then(function (data) { state.data = data; draw(); })
      .catch(function (err) { status.textContent = "Could not load the graph: " + err.message; box.setAttribute("data-error", err.message); });
  }

  if (colourSelect) {
    colourSelect.addEventListener("change", function () {
      if (state.network) { state.network.body.data.nodes.update(visNodes(colourSelect.value)); }
    });
  }
  function refreshEdges() {
    if (!state.network) { return; }
    state.network.body.data.edges.update(visEdges());
    var mode = colourSelect ? colourSelect.value : "concept";
    drawLegend(colourKeys(state.data, mode), mode);
  }
  if (edgeSelect) {
    edgeSelect.value = state.edges;
    edgeSelect.addEventListener("change", function () {
      state.edges = edgeSelect.value;
      state.sourceOnly = null;
      syncUrl();
      refreshEdges();
    });
  }
  Array.prototype.forEach.call(layoutRadios, function (radio) {
    radio.checked = radio.value === state.layout;
    radio.addEventListener("change", function () {
      if (!radio.checked) { return; }
      state.layout = radio.value;
      syncUrl();
      if (state.data) { draw(); }
    });
  });
  var src = box.getAttribute("data-src");
  if (layerBox) {
    layerBox.addEventListener("change", function () {
      src = withParams(src, { similar: layerBox.checked ? "1" : null });
      window.history.replaceState(null, "", withParams(window.location.href, { similar: layerBox.checked ? "1" : null }));
      load(src);
    });
  }
  var form = document.querySelector("form.kb-filters");
  if (form) {
    /* the view switches live in the URL too: keep them when the filters are applied */
    form.addEventListener("submit", function () {
      var keep = { layout: state.layout === "years" ? "years" : null, edges: state.edges === "source" ? "source" : null,
                   similar: layerBox && layerBox.checked ? "1" : null };
      Object.keys(keep).forEach(function (k) {
        if (keep[k] && !form.querySelector("input[name=" + k + "]")) { form.appendChild(el("input", { type: "hidden", name: k, value: keep[k] })); }
      });
    });
  }
  load(src);
})();
