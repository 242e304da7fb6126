/* The control chart of one characteristic, drawn as SVG (no library: points, a few
   lines and labels; every element is in the DOM with a class, so a test or a person
   with the browser's inspector reads exactly what is drawn).

   Input (from the server's view): {chart, points: [{sid, phase, value, complete,
   signal, rules}], limits: [{phase, center, ucl, lcl}], markers: [{index, type}],
   lsl, usl, nominal}. x = subgroup order (SPC charts are by order, not time); control
   limits drawn per phase (a die change starts a new phase with its own limits);
   annotation markers are vertical lines before the first point of their phase. */
"use strict";
(function () {
  const NS = "http://www.w3.org/2000/svg";
  const W = 640, H = 230, L = 58, R = 14, T = 22, B = 26;

  function el(name, attrs, text) {
    const e = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function render(chart, t) {
    const digits = Number.isInteger(chart.decimals) ? chart.decimals : 3;
    const fmt = v => (v === null || v === undefined ? "" : Number(v).toFixed(digits));
    const svg = el("svg", {viewBox: `0 0 ${W} ${H}`, class: "chart",
                           "data-kind": chart.chart || ""});
    const pts = chart.points || [];
    const individuals = (chart.size || 1) === 1;
    const ys = pts.map(p => p.value);
    for (const lim of chart.limits || []) ys.push(lim.ucl, lim.lcl, lim.center);
    if (individuals) {
      if (chart.lsl !== null) ys.push(chart.lsl);
      if (chart.usl !== null) ys.push(chart.usl);
    }
    if (chart.nominal !== null) ys.push(chart.nominal);
    let lo = Math.min(...ys), hi = Math.max(...ys);
    if (!isFinite(lo) || !isFinite(hi)) { lo = 0; hi = 1; }
    if (hi - lo < 1e-9) { hi += 0.5; lo -= 0.5; }
    const pad = (hi - lo) * 0.08;
    lo -= pad; hi += pad;
    const n = Math.max(pts.length, 1);
    const slots = Math.max(n, 10);
    const x = i => L + (i + 0.5) * (W - L - R) / slots;
    const y = v => T + (hi - v) * (H - T - B) / (hi - lo);
    svg.appendChild(el("rect", {x: L, y: T, width: W - L - R, height: H - T - B,
                                class: "plot"}));
    // tolerance (individuals only: a mean is not judged against the tolerance)
    if (individuals) {
      for (const [key, v] of [["lsl", chart.lsl], ["usl", chart.usl]]) {
        if (v === null || v === undefined) continue;
        svg.appendChild(el("line", {x1: L, x2: W - R, y1: y(v), y2: y(v), class: `spec ${key}`}));
        svg.appendChild(el("text", {x: L + 4, y: y(v) + (key === "usl" ? -3 : 11),
                                    class: `spec-label ${key}`},
                           `${key.toUpperCase()} ${fmt(v)}`));
      }
    }
    // control limits per phase: from its first to its last point
    for (const lim of chart.limits || []) {
      const idx = pts.map((p, i) => [p, i]).filter(([p]) => p.phase === lim.phase)
        .map(([, i]) => i);
      const first = idx.length ? idx[0] : pts.length;
      const last = idx.length ? idx[idx.length - 1] : pts.length;
      const x1 = x(first) - 8, x2 = x(last) + 8;
      for (const key of ["ucl", "center", "lcl"]) {
        svg.appendChild(el("line", {x1, x2, y1: y(lim[key]), y2: y(lim[key]),
                                    class: `limit ${key}`, "data-phase": lim.phase}));
      }
      svg.appendChild(el("text", {x: x2 - 2, y: y(lim.ucl) - 3, class: "limit-label ucl"},
                         `UCL ${fmt(lim.ucl)}`));
      svg.appendChild(el("text", {x: x2 - 2, y: y(lim.lcl) + 11, class: "limit-label lcl"},
                         `LCL ${fmt(lim.lcl)}`));
    }
    // the line through the points, broken at each phase change
    let path = "";
    pts.forEach((p, i) => {
      const move = i === 0 || pts[i - 1].phase !== p.phase;
      path += `${move ? "M" : "L"}${x(i).toFixed(1)},${y(p.value).toFixed(1)} `;
    });
    if (path) svg.appendChild(el("path", {d: path, class: "trace"}));
    // annotation markers
    const stacked = {};
    for (const m of chart.markers || []) {
      const mx = m.index >= pts.length ? x(pts.length) - 6 : x(m.index) - (W - L - R) / slots / 2;
      const level = stacked[m.index] = (stacked[m.index] || 0) + 1;
      const g = el("g", {class: `marker ${m.type}`, "data-type": m.type});
      g.appendChild(el("line", {x1: mx, x2: mx, y1: T, y2: H - B}));
      g.appendChild(el("text", {x: mx + 3, y: T + 11 * level, class: "marker-label"},
                       t("ann." + m.type)));
      svg.appendChild(g);
    }
    // points
    pts.forEach((p, i) => {
      const cls = ["point"];
      if (p.signal) cls.push("signal");
      else if (p.rules && p.rules.length) cls.push("in-signal");
      if (!p.complete) cls.push("partial");
      const c = el("circle", {cx: x(i), cy: y(p.value), r: p.signal ? 6 : 4,
                              class: cls.join(" "), "data-sid": p.sid});
      c.appendChild(el("title", {}, `${p.sid}: ${fmt(p.value)}`));
      svg.appendChild(c);
      if (p.signal) {
        svg.appendChild(el("text", {x: x(i), y: y(p.value) - 9, class: "signal-label"},
                           t("chart.signal", {rules: p.rules.join(", ")})));
      }
    });
    if (!pts.length) {
      svg.appendChild(el("text", {x: W / 2, y: H / 2, class: "empty"}, t("chart.no_points")));
    }
    // y axis: three ticks
    for (const v of [hi - pad, (hi + lo) / 2, lo + pad]) {
      svg.appendChild(el("text", {x: L - 4, y: y(v) + 4, class: "axis tick"}, fmt(v)));
    }
    return svg;
  }

  window.PCChart = {render};
})();
