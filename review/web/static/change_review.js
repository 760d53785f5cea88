// The change review page: claim a change, show both dates side by side (same bands, one
// stretch), send "confirmed change", "no change" or "unclear" with one key, show the next.
// The queue mechanics (claim, skip, undo, counters) are those of the item page (review.js),
// through the same endpoints; press ? on the page for every key.
(function () {
  "use strict";
  const root = document.getElementById("review");
  if (!root || !root.classList.contains("change-review")) return;
  const jobId = root.dataset.job;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const $ = (id) => document.getElementById(id);
  const comment = $("comment");
  const shortcuts = $("shortcuts");
  const DATES = ["before", "after"];
  const DECISIONS = { confirmed: "confirmed change", no_change: "no change", unclear: "unclear" };
  const MAX_SKIPPED = 1000; // review.queue.MAX_EXCLUDED
  const store = window.sessionStorage;
  const skipKey = `vision-review-skip-${jobId}`;
  const decidedKey = `vision-review-decided-${jobId}`;
  let current = null;
  let busy = false;
  let loaded = { before: false, after: false };  // nobody decides before seeing both dates
  let decided = Number(readJSON(decidedKey, 0)) || 0;
  let left = null;
  let moreLeft = false;
  let skipped = readJSON(skipKey, []).filter((v) => Number.isInteger(v));
  let heatOn = Boolean(readJSON("vision-change-heatmap", true));
  let opacity = Number(readJSON("vision-review-opacity", 45));
  let heatLoaded = { before: false, after: false };
  let combos = [];
  let comboIndex = 0;

  function readJSON(key, fallback) {
    try { const v = JSON.parse(store.getItem(key)); return v === null ? fallback : v; } catch (e) { return fallback; }
  }
  function writeJSON(key, value) {
    try { store.setItem(key, JSON.stringify(value)); } catch (e) { /* private mode: keep it in memory */ }
  }
  function say(text, isError) {
    const m = $("message");
    m.textContent = text || "";
    m.className = isError ? "error" : "";
  }
  async function post(url, body) {
    const r = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body || {}),
    });
    if (r.status === 401) { window.location.href = "/login?next=" + encodeURIComponent(location.pathname); }
    let data = null;
    try { data = await r.json(); } catch (e) { data = null; }
    return { status: r.status, data: data };
  }
  function detail(r) {
    const d = r.data && r.data.detail;
    return typeof d === "string" ? d : JSON.stringify(d || "");
  }
  async function whyNot(url) {
    try {
      const r = await fetch(url, { credentials: "same-origin" });
      const d = await r.json();
      return (d && d.detail) || `HTTP ${r.status}`;
    } catch (e) { return "the server gave no reason"; }
  }
  function counters() {
    writeJSON(decidedKey, decided);
    $("queue-left").textContent = left == null ? "" : `${left}${moreLeft ? "+" : ""} left in this queue`;
    $("session-count").textContent = `${decided} decided`;
    $("skip-count").textContent = `${skipped.length} skipped`;
    $("skip-count").hidden = !skipped.length;
  }
  function ready() { return Boolean(current) && loaded.before && loaded.after; }
  function setButtons() {
    for (const d of Object.keys(DECISIONS)) $(`btn-${d}`).disabled = !ready();
    $("decide").classList.toggle("waiting", !ready());
  }

  // --- band combinations: by name, the same for both dates ------------------------------
  function bandCombos(view) {
    const names = view.bands || [];
    const has = (list) => list.every((b) => names.includes(b));
    const out = [];
    if (view.default_bands && view.default_bands.length === 3) out.push({ label: `natural colour (${view.default_bands.join(",")})`, v: null });
    for (const [label, v] of [["false colour", ["B08", "B04", "B03"]], ["SWIR", ["B12", "B8A", "B04"]]]) {
      if (has(v)) out.push({ label: `${label} (${v.join(",")})`, v: v });
    }
    if (!out.length) out.push({ label: "default", v: null });
    return out;
  }
  function bandsQuery() {
    const c = combos[comboIndex];
    return c && c.v ? "?bands=" + c.v.join(",") : "";
  }

  // --- pictures ---------------------------------------------------------------------------
  function applyHeatmaps() {
    for (const d of DATES) {
      const hm = $(`${d}-heatmap`);
      hm.style.opacity = String(opacity / 100);
      hm.hidden = !(current && current.change[d].heatmap_url && heatLoaded[d] && heatOn);
    }
    $("heatmap-controls").hidden = !(current && DATES.some((d) => current.change[d].heatmap_url));
    $("heatmap-on").checked = heatOn;
    $("heatmap-opacity").value = opacity;
    $("heatmap-opacity-value").textContent = `${opacity} %`;
  }
  function setPictures() {
    if (!current) return;
    const item = current;
    loaded = { before: false, after: false };
    setButtons();
    $("chip-error").hidden = true;
    for (const d of DATES) {
      const img = $(`${d}-chip`);
      const url = item.change[d].picture_url + bandsQuery();
      img.onload = () => { if (current === item && img.naturalWidth > 0) { loaded[d] = true; setButtons(); } };
      img.onerror = async () => {
        if (current !== item) return;
        const why = await whyNot(url);
        if (current !== item) return;
        $("chip-error").textContent = `The ${d} picture could not be loaded: ${why}. No decision can be made on this change: press S to skip it, and tell an admin.`;
        $("chip-error").hidden = false;
      };
      img.src = url;
    }
  }
  function loadHeatmaps(item) {
    for (const d of DATES) {
      const v = item.change[d];
      const hm = $(`${d}-heatmap`);
      const note = $(`${d}-heatmap-note`);
      heatLoaded[d] = false;
      hm.hidden = true;
      note.textContent = v.heatmap_note || "";
      note.hidden = !v.heatmap_note;
      hm.onload = () => { if (current === item) { heatLoaded[d] = true; applyHeatmaps(); } };
      hm.onerror = async () => {
        heatLoaded[d] = false;
        hm.hidden = true;
        const why = await whyNot(v.heatmap_url);
        if (current !== item) return;
        note.textContent = `No heatmap for the ${d} date: ${why}`;
        note.hidden = false;
      };
      if (v.heatmap_url) hm.src = v.heatmap_url; else hm.removeAttribute("src");
    }
  }

  // --- what is shown of a change ----------------------------------------------------------
  const pct = (p) => (p == null ? "" : `${(p * 100).toFixed(1)} %`);
  const deg = (v, pos, neg) => `${Math.abs(v).toFixed(5)}° ${v >= 0 ? pos : neg}`;
  function dateFacts(v) {
    const w = v.window;
    const where = w ? `rows ${w.row_off}–${w.row_off + w.height}, cols ${w.col_off}–${w.col_off + w.width}` : "whole file";
    const cloud = v.cloud_fraction == null ? "" : `, clouds ${pct(v.cloud_fraction)}`;
    return `${v.file}: ${where} (${v.crs || "no CRS"}); model ${v.model}${cloud}`;
  }
  function show(item) {
    current = item;
    loaded = { before: false, after: false };
    setButtons();
    if (!item) {
      $("workspace").hidden = true;
      $("empty").hidden = false;
      $("empty-text").textContent = skipped.length
        ? `Nothing else is waiting for you in this job. You skipped ${skipped.length} change${skipped.length > 1 ? "s" : ""}: press S to go through ${skipped.length > 1 ? "them" : "it"} again.`
        : "No change is waiting for review in this job.";
      return;
    }
    if (!item.change) { say(`item ${item.id} is not a change item`, true); return; }
    const c = item.change;
    $("workspace").hidden = false;
    $("empty").hidden = true;
    $("item-id").textContent = item.id;
    $("item-stage").textContent = item.stage;
    $("change-id").textContent = c.change_id;
    $("transition").textContent = c.transition;
    $("change-summary").textContent = `${c.before.class_name} → ${c.after.class_name}`;
    for (const d of DATES) {
      const v = c[d];
      $(`${d}-acquired`).textContent = v.acquired ? v.acquired.slice(0, 10) : "date unknown";
      $(`${d}-item`).textContent = v.item || "";
      $(`${d}-class`).textContent = v.class_name || "";
      $(`${d}-p`).textContent = pct(v.p);
      $(`${d}-facts`).textContent = dateFacts(v);
    }
    const g = c.after.wgs84;
    $("loc-latlon").textContent = g ? `${deg(g.lat, "N", "S")}, ${deg(g.lon, "E", "W")}` : "–";
    if (g) {
      const [west, south, east, north] = g.bounds;
      $("loc-wgs84").textContent = `W ${west.toFixed(5)}, S ${south.toFixed(5)}, E ${east.toFixed(5)}, N ${north.toFixed(5)}${west > east ? " (crosses the antimeridian)" : ""}`;
    } else { $("loc-wgs84").textContent = "–"; }
    const area = c.area_ha == null ? "–" : `${c.area_ha.toFixed(2)} ha`;
    $("loc-area").textContent = `${area}${c.aoi_id ? ` in ${c.aoi_id}` : ""}; ${c.alignment === "reprojected" ? "the before grid reprojected onto the after grid" : "same grid"}`;
    const keep = combos[comboIndex];
    combos = bandCombos(c);
    const again = keep ? combos.findIndex((x) => String(x.v) === String(keep.v)) : -1;
    comboIndex = again >= 0 ? again : 0;
    $("bands").replaceChildren(...combos.map((x, i) => {
      const o = document.createElement("option");
      o.value = i; o.textContent = x.label; return o;
    }));
    $("bands").value = comboIndex;
    $("band-picker").hidden = combos.length < 2;
    loadHeatmaps(item);
    setPictures();
    applyHeatmaps();
    comment.value = "";
  }
  function answered(data) {
    if (data && typeof data.left === "number") { left = data.left; moreLeft = Boolean(data.more_left); }
    counters();
  }

  // --- the queue ----------------------------------------------------------------------------
  async function claim() {
    const r = await post(`/api/jobs/${jobId}/claim`, { skip: skipped });
    if (r.status !== 200) { say(`could not load a change (${r.status}): ${detail(r)}`, true); return; }
    answered(r.data);
    show(r.data.item);
  }
  async function send(decision) {
    if (busy || !current) return;
    if (!ready()) { say("the pictures have not loaded: no decision was sent", true); return; }
    busy = true;
    const body = { decision: decision, version: current.version, comment: comment.value || null, skip: skipped };
    try {
      const r = await post(`/api/items/${current.id}/decision`, body);
      if (r.status === 200) {
        decided += 1;
        answered(r.data);
        say(`change ${r.data.item_id}: ${DECISIONS[decision]} (U undoes it)`);
        if (r.data.next_error) {
          current = null;
          setButtons();
          $("workspace").hidden = true;
          say(r.data.next_error, true);
        } else {
          show(r.data.next);
        }
      } else if (r.status === 409) {
        say(detail(r) || "someone else decided this change", true);
        await claim();
      } else {
        say(`not saved (${r.status}): ${detail(r)}`, true);
      }
    } finally {
      busy = false;
    }
  }
  async function skip() {
    if (busy) return;
    if (!current) {
      if (!skipped.length) return;
      skipped = [];
      writeJSON(skipKey, skipped);
      busy = true;
      try { await claim(); } finally { busy = false; }
      return;
    }
    busy = true;
    const id = current.id;
    try {
      const r = await post(`/api/items/${id}/skip`, { skip: skipped });
      if (r.status !== 200) { say(`could not skip (${r.status}): ${detail(r)}`, true); return; }
      skipped = [...skipped.filter((v) => v !== id), id].slice(-MAX_SKIPPED);
      writeJSON(skipKey, skipped);
      answered(r.data);
      say(`skipped change ${id}`);
      show(r.data.item);
    } finally {
      busy = false;
    }
  }
  async function undo() {
    if (busy) return;
    busy = true;
    try {
      const r = await post(`/api/jobs/${jobId}/undo`, { skip: skipped });
      if (r.status !== 200) { say(`nothing undone: ${detail(r)}`, true); return; }
      decided = Math.max(0, decided - 1);
      answered(r.data);
      say(`undid your ${DECISIONS[r.data.undone] || r.data.undone} on change ${r.data.item.id}: it is back, decide it again`);
      show(r.data.item);
    } finally {
      busy = false;
    }
  }
  function toggleHeatmaps() {
    if (!current) return;
    if (!DATES.some((d) => current.change[d].heatmap_url)) {
      say(DATES.map((d) => current.change[d].heatmap_note).filter(Boolean).join(" ") || "no heatmap for this change", true);
      return;
    }
    heatOn = !heatOn;
    writeJSON("vision-change-heatmap", heatOn);
    applyHeatmaps();
  }

  for (const d of Object.keys(DECISIONS)) $(`btn-${d}`).addEventListener("click", () => send(d));
  $("btn-skip").addEventListener("click", skip);
  $("btn-undo").addEventListener("click", undo);
  $("bands").addEventListener("change", (e) => { comboIndex = Number(e.target.value); setPictures(); });
  $("heatmap-on").addEventListener("change", (e) => { heatOn = e.target.checked; writeJSON("vision-change-heatmap", heatOn); applyHeatmaps(); });
  $("heatmap-opacity").addEventListener("input", (e) => { opacity = Number(e.target.value); writeJSON("vision-review-opacity", opacity); applyHeatmaps(); });

  const KEYS = { a: "confirmed", y: "confirmed", r: "no_change", n: "no_change", x: "unclear" };
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (shortcuts.open) {
      if (e.key === "?") { e.preventDefault(); shortcuts.close(); }
      return;
    }
    const active = document.activeElement;
    const inField = ["INPUT", "TEXTAREA", "SELECT"].includes(active.tagName);
    if (e.key === "Escape") { if (inField) active.blur(); return; }
    if (inField) {
      if (e.key === "Enter" && active === comment) { e.preventDefault(); comment.blur(); }
      return;
    }
    if (e.key === "?") { e.preventDefault(); shortcuts.showModal(); return; }
    const k = e.key.toLowerCase();
    if (KEYS[k]) { e.preventDefault(); send(KEYS[k]); }
    else if (k === "/") { e.preventDefault(); comment.focus(); }
    else if (k === "s") { e.preventDefault(); skip(); }
    else if (k === "u") { e.preventDefault(); undo(); }
    else if (k === "h") { e.preventDefault(); toggleHeatmaps(); }
    else if ((k === "[" || k === "]") && current) {
      e.preventDefault();
      opacity = Math.min(100, Math.max(0, opacity + (k === "]" ? 10 : -10)));
      writeJSON("vision-review-opacity", opacity);
      applyHeatmaps();
    }
    else if (k === "b" && combos.length > 1) { comboIndex = (comboIndex + 1) % combos.length; $("bands").value = comboIndex; setPictures(); }
  });

  window.addEventListener("pagehide", () => {
    if (current) {
      fetch(`/api/items/${current.id}/release`, { method: "POST", keepalive: true, credentials: "same-origin", headers: { "X-CSRF-Token": csrf } });
    }
  });

  counters();
  applyHeatmaps();
  claim();
})();
