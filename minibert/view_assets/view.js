// minibert attention view: head view, model view, step view. Reads the JSON block
// #minibert-data written by minibert/view.py; no library, no network.
// T = tokens, A = heads; attention[layer] is a Float64Array [A, T, T] (query rows, key columns).
(function () {
  "use strict";

  const data = JSON.parse(document.getElementById("minibert-data").textContent);
  const T = data.tokens.length;
  const A = data.num_heads;
  const LAYERS = data.attention.map((entry) => entry.layer);
  const isPad = data.attention_mask.map((m) => m === 0);
  const hasPair = data.token_type_ids.some((t) => t !== 0);

  // Head colours: categorical, none of them grey (grey means padding).
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22",
    "#17becf", "#393b79", "#637939", "#ad494a", "#7b4173", "#3182bd", "#e6550d", "#31a354"];
  const PAD_COLOUR = "#9a9a9a";
  const SEGMENT_FILL = ["#e6effc", "#fdebd9"]; // segment A, segment B
  const PAD_FILL = "#efefef";
  const headColour = (h) => (h < PALETTE.length ? PALETTE[h] : "hsl(" + ((h * 137.5) % 360) + ", 60%, 45%)");

  // ---- the data: base64 of little-endian uint16 round(p * scale) -> Float64Array [A, T, T]
  function decodeAttention(b64) {
    const bin = atob(b64);
    const out = new Float64Array(bin.length / 2); // float64: exactly the stored value q / scale
    for (let i = 0; i < out.length; i++) {
      out[i] = (bin.charCodeAt(2 * i) | (bin.charCodeAt(2 * i + 1) << 8)) / data.attention_scale;
    }
    return out;
  }
  const attention = {};
  data.attention.forEach((entry) => { attention[entry.layer] = decodeAttention(entry.data); });
  const weight = (layer, h, q, k) => attention[layer][(h * T + q) * T + k];

  // ---- helpers
  const $ = (id) => document.getElementById(id);
  const esc = (s) => String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
  const shortLabel = (s) => (s.length > 16 ? s.slice(0, 15) + "\u2026" : s);
  function fmt(v) { // about Python's "{:.4g}"; non-finite values arrive as strings
    if (v === null || v === undefined) return "";
    if (typeof v === "string") return v;
    if (v === 0) return "0";
    const a = Math.abs(v);
    return a >= 1e5 || a < 1e-4 ? v.toExponential(3) : String(Number(v.toPrecision(4)));
  }
  // viridis (as the static PNGs: dark 0 .. yellow 1), 9 stops, linear in between
  const VIRIDIS = ["#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962", "#addc30", "#fde725"]
    .map((c) => [1, 3, 5].map((i) => parseInt(c.slice(i, i + 2), 16)));
  const LUT = [];
  for (let i = 0; i < 256; i++) {
    const x = (i / 255) * (VIRIDIS.length - 1), j = Math.min(Math.floor(x), VIRIDIS.length - 2), f = x - j;
    LUT.push(VIRIDIS[j].map((c, n) => Math.round(c + f * (VIRIDIS[j + 1][n] - c))));
  }
  function colourOf(w, greyed) { // [r, g, b] of a weight; padding rows/columns washed out
    const c = LUT[Math.max(0, Math.min(255, Math.round(w * 255)))];
    if (!greyed) return c;
    const g = Math.round(175 + 0.25 * (0.3 * c[0] + 0.59 * c[1] + 0.11 * c[2])); // grey, lighter for larger weights
    return [g, g, g];
  }

  // ---- state
  const state = {
    layer: LAYERS[0],
    heads: new Set(Array.from({ length: A }, (_, h) => h)),
    heatHead: 0,
    threshold: data.threshold,
    hover: null, // {side: "q" | "k", index}
  };

  // ---- header
  $("title").textContent = data.title;
  const info = [];
  if (data.model_file) info.push(data.model_file);
  info.push(T + " tokens");
  info.push("layers " + (LAYERS.length === data.num_layers ? "0\u2013" + (data.num_layers - 1) : LAYERS.join(", ")) +
    " of " + data.num_layers + ", " + A + " heads");
  if (data.dtype) info.push(data.dtype + (data.backend ? " (" + data.backend + ")" : ""));
  if (data.batch_size > 1) info.push("row " + data.batch_index + " of a batch of " + data.batch_size);
  info.push("attention stored to \u00b1" + (0.5 / data.attention_scale).toExponential(1));
  $("info").textContent = info.join(" \u00b7 ");

  // ---- tabs
  function showView(name) {
    document.querySelectorAll(".tab").forEach((b) => b.classList.toggle("active", b.dataset.view === name));
    document.querySelectorAll(".view").forEach((s) => s.classList.toggle("active", s.id === "view-" + name));
  }
  document.querySelectorAll(".tab").forEach((b) => b.addEventListener("click", () => showView(b.dataset.view)));

  // =====================================================================================
  // Head view
  // =====================================================================================
  const ROW = 20, TOP = 26, LABEL_W = 128, GAP = 210;
  const XL = LABEL_W, XR = LABEL_W + GAP; // line ends: right edge of the query labels, left edge of the keys
  const svg = $("head-svg");
  const svgNS = "http://www.w3.org/2000/svg";

  function tokenColumn(side, x) { // labels of one column: segment A/B backgrounds, padding greyed
    let out = "";
    for (let i = 0; i < T; i++) {
      const y = TOP + i * ROW;
      const fill = isPad[i] ? PAD_FILL : SEGMENT_FILL[data.token_type_ids[i] ? 1 : 0];
      const rx = side === "q" ? x - LABEL_W + 4 : x;
      const tx = side === "q" ? x - 8 : x + 8;
      out += '<g class="tok' + (isPad[i] ? " pad" : "") + '" data-side="' + side + '" data-i="' + i + '">' +
        '<rect x="' + rx + '" y="' + (y - ROW / 2 + 1) + '" width="' + (LABEL_W - 4) + '" height="' + (ROW - 2) +
        '" rx="3" fill="' + fill + '"/>' +
        '<text x="' + tx + '" y="' + (y + 4) + '" text-anchor="' + (side === "q" ? "end" : "start") + '" fill="' +
        (isPad[i] ? PAD_COLOUR : "#222") + '"><title>' + esc(data.tokens[i]) + " (" + i + ")</title>" +
        esc(shortLabel(data.tokens[i])) + "</text></g>";
    }
    return out;
  }

  function buildHeadView() {
    const width = XR + LABEL_W, height = TOP + T * ROW;
    svg.setAttribute("width", width);
    svg.setAttribute("height", height);
    svg.setAttribute("viewBox", "0 0 " + width + " " + height);
    svg.innerHTML =
      '<text class="colhead" x="' + (XL - 8) + '" y="12" text-anchor="end">queries</text>' +
      '<text class="colhead" x="' + (XR + 8) + '" y="12">keys</text>' +
      '<g id="head-lines"></g>' + tokenColumn("q", XL) + tokenColumn("k", XR);
    svg.querySelectorAll(".tok").forEach((g) => {
      g.addEventListener("mouseenter", () => { state.hover = { side: g.dataset.side, index: +g.dataset.i }; drawLines(); });
      g.addEventListener("mouseleave", () => { state.hover = null; drawLines(); });
    });
    $("layer").innerHTML = LAYERS.map((l) => '<option value="' + l + '">layer ' + l + "</option>").join("");
    $("layer").addEventListener("change", () => { state.layer = +$("layer").value; drawAll(); });
    $("heat-head").innerHTML = Array.from({ length: A }, (_, h) => '<option value="' + h + '">' + h + "</option>").join("");
    $("heat-head").addEventListener("change", () => { state.heatHead = +$("heat-head").value; drawHeatmap(); });
    $("heads").innerHTML = Array.from({ length: A }, (_, h) =>
      '<span class="swatch" data-head="' + h + '" title="head ' + h + '" style="background:' + headColour(h) + '">' + h + "</span>").join("");
    $("heads").querySelectorAll(".swatch").forEach((s) => {
      const h = +s.dataset.head;
      s.addEventListener("click", () => {
        if (state.heads.has(h)) state.heads.delete(h); else { state.heads.add(h); state.heatHead = h; }
        drawAll();
      });
      s.addEventListener("dblclick", () => { selectOnly(h); drawAll(); });
    });
    $("heads-all").addEventListener("click", () => { for (let h = 0; h < A; h++) state.heads.add(h); drawAll(); });
    $("heads-none").addEventListener("click", () => { state.heads.clear(); drawAll(); });
    $("threshold").value = state.threshold;
    $("threshold").addEventListener("input", () => {
      const v = parseFloat($("threshold").value);
      if (v >= 0 && v <= 1) { state.threshold = v; drawLines(); }
    });
    const legend = [];
    if (hasPair) {
      legend.push('<span class="seg" style="background:' + SEGMENT_FILL[0] + '">segment A</span>');
      legend.push('<span class="seg" style="background:' + SEGMENT_FILL[1] + '">segment B</span>');
    }
    if (isPad.some(Boolean)) legend.push('<span class="seg" style="background:' + PAD_FILL + ';color:' + PAD_COLOUR + '">padding</span> (lines from padding queries in grey)');
    $("legend").innerHTML = legend.join("");
  }

  function selectOnly(h) { state.heads.clear(); state.heads.add(h); state.heatHead = h; }

  function drawLines() { // one <line> per (head, query, key) with weight >= threshold
    const att = attention[state.layer], thr = state.threshold, hover = state.hover;
    const heads = Array.from(state.heads).sort((a, b) => a - b);
    const parts = [];
    for (const h of heads) {
      for (let q = 0; q < T; q++) {
        if (hover && hover.side === "q" && hover.index !== q) continue;
        const y1 = TOP + q * ROW;
        for (let k = 0; k < T; k++) {
          if (hover && hover.side === "k" && hover.index !== k) continue;
          const w = att[(h * T + q) * T + k];
          if (w < thr) continue;
          parts.push('<line data-h="' + h + '" data-q="' + q + '" data-k="' + k + '" x1="' + (XL + 2) + '" y1="' + y1 +
            '" x2="' + (XR - 2) + '" y2="' + (TOP + k * ROW) + '" stroke="' + (isPad[q] ? PAD_COLOUR : headColour(h)) +
            '" stroke-opacity="' + w.toFixed(4) + '"/>');
        }
      }
    }
    $("head-lines").innerHTML = parts.join("");
    svg.querySelectorAll(".tok").forEach((g) => g.classList.toggle("hover",
      !!hover && g.dataset.side === hover.side && +g.dataset.i === hover.index));
    $("line-count").textContent = parts.length + " lines (weights \u2265 " + thr + ") in layer " + state.layer +
      ", heads " + (heads.length ? heads.join(" ") : "none") + (hover ? ", " + (hover.side === "q" ? "from" : "to") +
      ' token "' + data.tokens[hover.index] + '"' : "");
  }

  // ---- the full heat map of one head, labels on both axes, values on hover
  const heat = { cell: Math.max(8, Math.min(28, Math.floor(480 / T))), margin: 0 };
  function drawHeatmap() {
    const canvas = $("heatmap"), ctx = canvas.getContext("2d"), cell = heat.cell;
    const font = Math.max(7, Math.min(12, cell - 1)) + "px system-ui, sans-serif";
    ctx.font = font;
    const labelW = Math.ceil(Math.max(...data.tokens.map((t) => ctx.measureText(shortLabel(t)).width))) + 8;
    heat.margin = labelW;
    const size = labelW + T * cell, dpr = window.devicePixelRatio || 1;
    canvas.width = size * dpr; canvas.height = size * dpr;
    canvas.style.width = size + "px"; canvas.style.height = size + "px";
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, size, size);
    const att = attention[state.layer], h = state.heatHead;
    for (let q = 0; q < T; q++) {
      for (let k = 0; k < T; k++) {
        const c = colourOf(att[(h * T + q) * T + k], isPad[q] || isPad[k]);
        ctx.fillStyle = "rgb(" + c[0] + "," + c[1] + "," + c[2] + ")";
        ctx.fillRect(labelW + k * cell, labelW + q * cell, cell, cell);
      }
    }
    ctx.font = font; ctx.textBaseline = "middle";
    for (let i = 0; i < T; i++) {
      ctx.fillStyle = isPad[i] ? PAD_COLOUR : (data.token_type_ids[i] ? "#b35806" : "#222");
      ctx.textAlign = "right";
      ctx.fillText(shortLabel(data.tokens[i]), labelW - 4, labelW + (i + 0.5) * cell); // query rows
      ctx.save(); // key columns: rotated labels along the top
      ctx.translate(labelW + (i + 0.5) * cell, labelW - 4); ctx.rotate(-Math.PI / 2); ctx.textAlign = "left";
      ctx.fillText(shortLabel(data.tokens[i]), 0, 0);
      ctx.restore();
    }
    $("heat-head").value = h;
    $("heat-title").textContent = "layer " + state.layer + ", head " + h + " (rows: queries, columns: keys)";
  }
  $("heatmap").addEventListener("mousemove", (e) => {
    const rect = $("heatmap").getBoundingClientRect();
    const k = Math.floor((e.clientX - rect.left - heat.margin) / heat.cell);
    const q = Math.floor((e.clientY - rect.top - heat.margin) / heat.cell);
    const tip = $("heat-tip");
    if (q < 0 || k < 0 || q >= T || k >= T) { tip.hidden = true; return; }
    tip.hidden = false;
    tip.dataset.q = q; tip.dataset.k = k;
    tip.textContent = '"' + data.tokens[q] + '" (' + q + ') \u2192 "' + data.tokens[k] + '" (' + k + "): " +
      weight(state.layer, state.heatHead, q, k).toFixed(4);
    tip.style.left = (e.clientX - rect.left + 14) + "px";
    tip.style.top = (e.clientY - rect.top + 14) + "px";
  });
  $("heatmap").addEventListener("mouseleave", () => { $("heat-tip").hidden = true; });

  function drawColorbar() {
    const c = document.createElement("canvas");
    c.width = 256; c.height = 1;
    const ctx = c.getContext("2d"), img = ctx.createImageData(256, 1);
    for (let i = 0; i < 256; i++) { img.data.set(LUT[i], 4 * i); img.data[4 * i + 3] = 255; }
    ctx.putImageData(img, 0, 0);
    $("colorbar").append("0", c, "1");
  }

  function drawAll() {
    $("layer").value = state.layer;
    $("heads").querySelectorAll(".swatch").forEach((s) => s.classList.toggle("off", !state.heads.has(+s.dataset.head)));
    drawLines();
    drawHeatmap();
  }

  // =====================================================================================
  // Model view: every layer x head as a small heat map
  // =====================================================================================
  function buildModelView() {
    const px = Math.max(40, Math.min(88, Math.floor(1100 / A) - 8));
    let html = "<table><tr><th></th>" + Array.from({ length: A }, (_, h) => "<th>head " + h + "</th>").join("") + "</tr>";
    for (const l of LAYERS) {
      html += "<tr><th>layer " + l + "</th>";
      for (let h = 0; h < A; h++) {
        html += '<td><canvas class="thumb" data-layer="' + l + '" data-head="' + h + '" width="' + T + '" height="' + T +
          '" style="width:' + px + "px;height:" + px + "px;image-rendering:" + (T <= px ? "pixelated" : "auto") +
          '" title="layer ' + l + ", head " + h + '"></canvas></td>';
      }
      html += "</tr>";
    }
    $("model-grid").innerHTML = html + "</table>";
    $("model-grid").querySelectorAll(".thumb").forEach((canvas) => {
      const l = +canvas.dataset.layer, h = +canvas.dataset.head;
      const ctx = canvas.getContext("2d"), img = ctx.createImageData(T, T);
      for (let q = 0; q < T; q++) {
        for (let k = 0; k < T; k++) {
          img.data.set(colourOf(weight(l, h, q, k), isPad[q] || isPad[k]), 4 * (q * T + k));
          img.data[4 * (q * T + k) + 3] = 255;
        }
      }
      ctx.putImageData(img, 0, 0);
      canvas.addEventListener("click", () => { state.layer = l; selectOnly(h); drawAll(); showView("head"); });
    });
  }

  // =====================================================================================
  // Step view: the trace summary; a click draws the histogram of a step's values
  // =====================================================================================
  function buildStepView() {
    const body = $("steps").querySelector("tbody");
    body.innerHTML = data.steps.map((s, i) =>
      '<tr data-step="' + i + '"><td>' + esc(s.name) + "</td><td>[" + s.shape.join(", ") + ']</td><td class="num">' +
      fmt(s.mean) + '</td><td class="num">' + fmt(s.std) + '</td><td class="num">' + fmt(s.min) + '</td><td class="num">' +
      fmt(s.max) + "</td></tr>").join("");
    body.querySelectorAll("tr").forEach((tr) => tr.addEventListener("click", () => {
      body.querySelectorAll("tr.selected").forEach((r) => r.classList.remove("selected"));
      tr.classList.add("selected");
      state.step = +tr.dataset.step;
      drawHistogram();
    }));
    $("step-filter").addEventListener("input", () => {
      const f = $("step-filter").value.trim();
      body.querySelectorAll("tr").forEach((tr) => { tr.hidden = !!f && !data.steps[+tr.dataset.step].name.includes(f); });
    });
    $("hist-log").addEventListener("change", drawHistogram);
  }

  function drawHistogram() {
    if (state.step === undefined) return;
    const s = data.steps[state.step], counts = s.hist.counts, log = $("hist-log").checked;
    const W = 420, H = 250, L = 48, R = 10, TP = 10, B = 36;
    const scale = (c) => (log ? Math.log10(1 + c) : c);
    const top = Math.max(1e-9, ...counts.map(scale));
    const bw = (W - L - R) / counts.length;
    let out = '<line class="axis" x1="' + L + '" y1="' + (H - B) + '" x2="' + (W - R) + '" y2="' + (H - B) + '"/>' +
      '<line class="axis" x1="' + L + '" y1="' + TP + '" x2="' + L + '" y2="' + (H - B) + '"/>';
    counts.forEach((c, i) => {
      const h = (scale(c) / top) * (H - B - TP);
      out += '<rect class="bar" data-count="' + c + '" x="' + (L + i * bw + 0.5) + '" y="' + (H - B - h) + '" width="' +
        Math.max(0.5, bw - 1) + '" height="' + h + '"><title>' + c + "</title></rect>";
    });
    const maxCount = Math.max(...counts);
    out += '<text x="' + (L - 4) + '" y="' + (TP + 8) + '" text-anchor="end">' + maxCount + "</text>" +
      '<text x="' + (L - 4) + '" y="' + (H - B) + '" text-anchor="end">0</text>' +
      '<text x="' + L + '" y="' + (H - B + 14) + '">' + fmt(s.hist.lo) + "</text>" +
      '<text x="' + (W - R) + '" y="' + (H - B + 14) + '" text-anchor="end">' + fmt(s.hist.hi) + "</text>" +
      '<text x="' + ((L + W - R) / 2) + '" y="' + (H - 4) + '" text-anchor="middle">value (' + counts.length +
      " bins)" + (log ? ", log count" : "") + "</text>";
    $("histogram").innerHTML = out;
    $("hist-title").textContent = s.name;
    const n = s.shape.reduce((a, b) => a * b, 1);
    $("hist-info").textContent = "shape [" + s.shape.join(", ") + "], " + n + " values; mean " + fmt(s.mean) + ", std " +
      fmt(s.std) + ", min " + fmt(s.min) + ", max " + fmt(s.max) + (s.nonfinite ? "; " + s.nonfinite + " not finite (not counted)" : "");
  }

  // ---- start
  buildHeadView();
  drawColorbar();
  buildModelView();
  buildStepView();
  drawAll();
  window.minibertView = { data, state, weight, heat, showView }; // for the console and the browser tests
})();
