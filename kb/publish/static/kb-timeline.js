/* kb: papers per year per concept, drawn with plotly.js served by kb (no network access needed). */
(function () {
  "use strict";
  var box = document.getElementById("kb-timeline");
  if (!box) { return; }
  var status = document.getElementById("kb-status");
  var PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                 "#17becf", "#bcbd22", "#7f7f7f", "#393b79", "#ad494a"];
  fetch(box.getAttribute("data-src"), { headers: { Accept: "application/json" } })
    .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.json(); })
    .then(function (data) {
      /* one group of bars per year, one bar per concept; all papers of the year as a dashed grey line */
      var traces = [];
      data.series.forEach(function (s, i) {
        traces.push({ type: "bar", name: s.label, marker: { color: PALETTE[i % PALETTE.length] },
                      x: s.points.map(function (p) { return p[0]; }), y: s.points.map(function (p) { return p[1]; }),
                      hovertemplate: "%{x}: %{y} papers<extra>" + s.label.replace(/[<>&]/g, "") + "</extra>" });
      });
      traces.push({ type: "scatter", mode: "lines+markers", name: "all papers",
                    line: { color: "#777", dash: "dot", width: 2 }, marker: { color: "#777", size: 5 },
                    x: data.total.map(function (p) { return p[0]; }), y: data.total.map(function (p) { return p[1]; }),
                    hovertemplate: "%{x}: %{y} papers<extra>all papers</extra>" });
      var top = 0;
      data.series.forEach(function (s) { s.points.forEach(function (p) { top = Math.max(top, p[1]); }); });
      data.total.forEach(function (p) { top = Math.max(top, p[1]); });
      var layout = { margin: { t: 20, r: 20, b: 50, l: 60 }, xaxis: { title: { text: "Publication year" }, tickformat: "d" },
                     /* whole papers only: integer ticks (dtick 1 for small counts, where plotly would pick 0.5) */
                     yaxis: { title: { text: "Papers" }, rangemode: "tozero", tickformat: ",d",
                              dtick: top <= 10 ? 1 : (top <= 20 ? 2 : undefined) }, legend: { orientation: "h", y: -0.2 },
                     hovermode: "closest", barmode: "group", bargap: 0.15 };
      Plotly.newPlot(box, traces, layout, { displaylogo: false, responsive: true }).then(function () {
        box.setAttribute("data-series-drawn", String(data.series.length));
      });
      var years = data.total.length;
      status.textContent = data.series.length + " concepts over " + years + " year" + (years === 1 ? "" : "s") + ".";
    })
    .catch(function (err) { status.textContent = "Could not load the timeline: " + err.message; });
})();
