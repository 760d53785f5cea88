// The review page: claim an item, show it, send a decision with one key, show the next.
// Every action has a key (press ? on the page for the list); the page works without a mouse.
(function () {
  "use strict";
  const root = document.getElementById("review");
  if (!root) return;
  const jobId = root.dataset.job;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const $ = (id) => document.getElementById(id);
  const comment = $("comment");
  const picker = $("class-picker");
  const filter = $("class-filter");
  const shortcuts = $("shortcuts");
  const MAX_SKIPPED = 1000; // review.queue.MAX_EXCLUDED
  const store = window.sessionStorage;
  const skipKey = `vision-review-skip-${jobId}`;
  let current = null;
  let busy = false;
  // Decisions are only possible once the item's picture has loaded: nobody decides blind.
  let ready = false;
  const decidedKey = `vision-review-decided-${jobId}`;
  let decided = Number(readJSON(decidedKey, 0)) || 0;
  let left = null;
  let moreLeft = false;  // the server stops counting at 1000 (review.queue.LEFT_CAP)
  let combos = [];
  let comboIndex = 0;
  // Items skipped in this tab's session: sent with every claim so they do not come back.
  let skipped = readJSON(skipKey, []).filter((v) => Number.isInteger(v));
  // null = automatic (on over natural colour, off over false colour); else the reviewer's choice.
  let heatPref = readJSON("vision-review-heatmap", null);
  let opacity = Number(readJSON("vision-review-opacity", 45));
  let heatLoaded = false;
  let zoomed = false;
  let matches = [];
  let highlighted = 0;

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
      method: "POST",
      credentials: "same-origin",
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

  function counters() {
    writeJSON(decidedKey, decided);
    $("queue-left").textContent = left == null ? "" : `${left}${moreLeft ? "+" : ""} left in this queue`;
    $("session-count").textContent = `${decided} decided`;
    $("skip-count").textContent = `${skipped.length} skipped`;
    $("skip-count").hidden = !skipped.length;
  }

  function setReady(on) {
    ready = on;
    for (const id of ["btn-accept", "btn-reject", "btn-correct"]) $(id).disabled = !on;
    $("decide").classList.toggle("waiting", !on);
  }

  // An <img> that failed says nothing of why: ask the server for its message.
  async function whyNot(url) {
    try {
      const r = await fetch(url, { credentials: "same-origin" });
      const d = await r.json();
      return (d && d.detail) || `HTTP ${r.status}`;
    } catch (e) { return "the server gave no reason"; }
  }

  function bandCombos(bands) {
    const idx = (name) => bands.indexOf(name) + 1;
    const out = [];
    if (bands.length >= 3) {
      if (["B04", "B03", "B02"].every((b) => bands.includes(b))) out.push({ label: "natural colour (B04,B03,B02)", v: [idx("B04"), idx("B03"), idx("B02")] });
      if (["B08", "B04", "B03"].every((b) => bands.includes(b))) out.push({ label: "false colour (B08,B04,B03)", v: [idx("B08"), idx("B04"), idx("B03")] });
      if (["B12", "B8A", "B04"].every((b) => bands.includes(b))) out.push({ label: "SWIR (B12,B8A,B04)", v: [idx("B12"), idx("B8A"), idx("B04")] });
      if (!out.length) out.push({ label: "bands 1,2,3", v: [1, 2, 3] });
      for (let i = 1; i + 2 <= bands.length && out.length < 12; i++) {
        const v = [i + 2, i + 1, i];
        if (!out.some((c) => c.v.join() === v.join())) out.push({ label: `${bands[v[0] - 1]},${bands[v[1] - 1]},${bands[v[2] - 1]}`, v: v });
      }
    }
    return out;
  }

  // The chosen combination as a query: none for the first one (the server's natural default).
  function bandsQuery() {
    const c = combos[comboIndex];
    return c && combos.length > 1 && comboIndex > 0 ? "?bands=" + c.v.join(",") : "";
  }

  function naturalView() {
    if (!current || !current.natural_bands) return false;
    const c = combos[comboIndex];
    return !c || c.v.join() === current.natural_bands.join();
  }

  function heatmapOn() { return heatPref === null ? naturalView() : heatPref; }

  function applyHeatmap() {
    const hm = $("heatmap");
    const available = Boolean(current && current.heatmap_url);
    const on = heatmapOn();
    hm.style.opacity = String(opacity / 100);
    hm.hidden = !(available && heatLoaded && on);
    $("heatmap-controls").hidden = !available;
    $("heatmap-on").checked = on;
    $("heatmap-opacity").value = opacity;
    $("heatmap-opacity-value").textContent = `${opacity} %`;
    let state = "";
    if (available && !heatLoaded) state = on ? "loading…" : "";
    else if (available && !on) state = naturalView() ? "hidden" : "hidden over this false-colour view";
    $("heatmap-state").textContent = state;
  }

  function toggleHeatmap() {
    if (!current) return;
    if (!current.heatmap_url) { say($("heatmap-note").textContent || "this item has no heatmap", true); return; }
    heatPref = !heatmapOn();
    writeJSON("vision-review-heatmap", heatPref);
    applyHeatmap();
  }

  function setZoom(on) {
    zoomed = on;
    $("workspace").classList.toggle("zoomed", on);
    $("zoom-state").hidden = !on;
    const view = $("chip-view");
    if (on) { // start at the centre of the chip
      view.scrollLeft = (view.scrollWidth - view.clientWidth) / 2;
      view.scrollTop = (view.scrollHeight - view.clientHeight) / 2;
    } else { view.scrollLeft = 0; view.scrollTop = 0; }
  }

  function setPictures() {
    if (!current) return;
    const chip = $("chip");
    const url = current.chip_url + bandsQuery();
    const item = current;
    setReady(false);
    $("chip-error").hidden = true;
    chip.onload = () => { if (current === item && chip.naturalWidth > 0) setReady(true); };
    chip.onerror = async () => {
      if (current !== item) return;
      setReady(false);
      const why = await whyNot(url);
      if (current !== item) return;
      $("chip-error").textContent = `The picture could not be loaded: ${why}. No decision can be made on this item: press S to skip it, and tell an admin.`;
      $("chip-error").hidden = false;
    };
    chip.src = url;
    const ov = $("overview");
    ov.hidden = !item.overview_url;
    if (item.overview_url) ov.src = item.overview_url + bandsQuery();
    applyHeatmap();
  }

  const deg = (v, pos, neg) => `${Math.abs(v).toFixed(5)}° ${v >= 0 ? pos : neg}`;

  function showLocation(item) {
    const w = item.window;
    $("loc-window").textContent = w ? `rows ${w.row_off}–${w.row_off + w.height}, cols ${w.col_off}–${w.col_off + w.width}` : "whole file";
    $("loc-bounds").textContent = item.bounds ? item.bounds.map((v) => Number(v).toFixed(2)).join(", ") : "–";
    $("loc-crs").textContent = item.crs || "–";
    const g = item.wgs84;
    $("loc-latlon").textContent = g ? `${deg(g.lat, "N", "S")}, ${deg(g.lon, "E", "W")}` : "–";
    if (g) {
      const [west, south, east, north] = g.bounds;
      const across = west > east ? " (crosses the antimeridian)" : "";
      $("loc-wgs84").textContent = `W ${west.toFixed(5)}, S ${south.toFixed(5)}, E ${east.toFixed(5)}, N ${north.toFixed(5)}${across}`;
    } else { $("loc-wgs84").textContent = "–"; }
  }

  function show(item) {
    current = item;
    setReady(false);
    if (zoomed) setZoom(false);
    if (!item) {
      $("workspace").hidden = true;
      $("empty").hidden = false;
      $("empty-text").textContent = skipped.length
        ? `Nothing else is waiting for you in this job. You skipped ${skipped.length} item${skipped.length > 1 ? "s" : ""}: press S to go through ${skipped.length > 1 ? "them" : "it"} again.`
        : "Nothing is waiting for review in this job.";
      return;
    }
    $("workspace").hidden = false;
    $("empty").hidden = true;
    $("item-id").textContent = item.id;
    $("item-stage").textContent = item.stage;
    $("item-file").textContent = item.file;
    $("pred-class").textContent = item.class_name;
    $("pred-conf").textContent = item.confidence == null ? "" : (item.confidence * 100).toFixed(1) + " %";
    $("pred-interest").hidden = !item.interest;
    $("top3").replaceChildren(...item.top3.map((t) => {
      const li = document.createElement("li");
      li.textContent = `${t.class_name}: ${(t.p * 100).toFixed(1)} %`;
      return li;
    }));
    showLocation(item);
    const keep = combos[comboIndex];
    combos = bandCombos(item.bands || []);
    const again = keep ? combos.findIndex((c) => c.v.join() === keep.v.join()) : -1;
    comboIndex = again >= 0 ? again : 0;
    const bands = $("bands");
    bands.replaceChildren(...combos.map((c, i) => {
      const o = document.createElement("option");
      o.value = i; o.textContent = c.label; return o;
    }));
    bands.value = comboIndex;
    $("band-picker").hidden = combos.length < 2;
    const hm = $("heatmap");
    const note = $("heatmap-note");
    heatLoaded = false;
    hm.hidden = true;
    note.textContent = item.heatmap_note || "";
    note.hidden = !item.heatmap_note;
    // Shown once it has loaded (and switched on); when it cannot be made, the note says why.
    hm.onload = () => { if (current === item) { heatLoaded = true; applyHeatmap(); } };
    hm.onerror = async () => {
      heatLoaded = false;
      hm.hidden = true;
      if (!item.heatmap_url) return;
      const why = await whyNot(item.heatmap_url);
      if (current !== item) return;
      note.textContent = `No heatmap: ${why}`;
      note.hidden = false;
      $("heatmap-controls").hidden = true;
    };
    if (item.heatmap_url) hm.src = item.heatmap_url; else hm.removeAttribute("src");
    setPictures();
    comment.value = "";
  }

  function answered(data) {
    if (data && typeof data.left === "number") { left = data.left; moreLeft = Boolean(data.more_left); }
    counters();
  }

  async function claim() {
    const r = await post(`/api/jobs/${jobId}/claim`, { skip: skipped });
    if (r.status !== 200) { say(`could not load an item (${r.status}): ${detail(r)}`, true); return; }
    answered(r.data);
    show(r.data.item);
  }

  async function send(decision, className) {
    if (busy || !current) return;
    if (!ready) { say("the picture has not loaded: no decision was sent", true); return; }
    busy = true;
    const body = { decision: decision, version: current.version, comment: comment.value || null, skip: skipped };
    if (decision === "correct") body.class_name = className;
    try {
      const r = await post(`/api/items/${current.id}/decision`, body);
      if (r.status === 200) {
        decided += 1;
        answered(r.data);
        say(`item ${r.data.item_id}: ${decision}${className ? " → " + className : ""} (U undoes it)`);
        if (r.data.next_error) {  // saved, but no next item: say so (not "nothing left")
          current = null;
          setReady(false);
          $("workspace").hidden = true;
          say(r.data.next_error, true);
        } else {
          show(r.data.next);
        }
      } else if (r.status === 409) {
        say(detail(r) || "someone else decided this item", true);
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
    if (!current) {  // everything left was skipped: go through the skipped ones again
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
      say(`skipped item ${id}`);
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
      say(`undid your ${r.data.undone} on item ${r.data.item.id}: it is back, decide it again`);
      show(r.data.item);
    } finally {
      busy = false;
    }
  }

  // --- the class picker (C): every class, however many, filtered by typing ---------------
  function renderMatches() {
    const list = $("class-list");
    list.replaceChildren(...matches.map((c, i) => {
      const li = document.createElement("li");
      const n = current.classes.indexOf(c);
      li.textContent = (n < 10 ? `${(n + 1) % 10}  ` : "   ") + c;
      li.dataset.cls = c;
      li.setAttribute("role", "option");
      li.setAttribute("aria-selected", String(i === highlighted));
      li.className = i === highlighted ? "picked" : "";
      li.addEventListener("click", () => choose(c));
      return li;
    }));
    const el = list.children[highlighted];
    if (el) el.scrollIntoView({ block: "nearest" });
  }

  function refilter() {
    const q = filter.value.trim().toLowerCase();
    matches = current.classes.filter((c) => c.toLowerCase().includes(q));
    highlighted = 0;
    renderMatches();
  }

  function openPicker() {
    if (!current) return;
    if (!ready) { say("the picture has not loaded: no decision can be sent", true); return; }
    filter.value = "";
    refilter();
    picker.showModal();
    filter.focus();
  }

  function choose(cls) {
    picker.close();
    if (cls) send("correct", cls);
  }

  filter.addEventListener("input", refilter);
  filter.addEventListener("keydown", (e) => {
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      e.preventDefault();
      if (!matches.length) return;
      highlighted = (highlighted + (e.key === "ArrowDown" ? 1 : -1) + matches.length) % matches.length;
      renderMatches();
    } else if (e.key === "Enter") {
      e.preventDefault();
      if (matches.length) choose(matches[highlighted]);
    }
  });

  // ------------------------------------------------------------------------------------------
  $("btn-accept").addEventListener("click", () => send("accept"));
  $("btn-reject").addEventListener("click", () => send("reject"));
  $("btn-correct").addEventListener("click", openPicker);
  $("btn-skip").addEventListener("click", skip);
  $("btn-undo").addEventListener("click", undo);
  $("bands").addEventListener("change", (e) => { comboIndex = Number(e.target.value); setPictures(); });
  $("heatmap-on").addEventListener("change", (e) => { heatPref = e.target.checked; writeJSON("vision-review-heatmap", heatPref); applyHeatmap(); });
  $("heatmap-opacity").addEventListener("input", (e) => { opacity = Number(e.target.value); writeJSON("vision-review-opacity", opacity); applyHeatmap(); });

  const PAN = { ArrowLeft: [-64, 0], ArrowRight: [64, 0], ArrowUp: [0, -64], ArrowDown: [0, 64] };

  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (shortcuts.open) {  // ? or Esc (the dialog's own) closes it; nothing else acts under it
      if (e.key === "?") { e.preventDefault(); shortcuts.close(); }
      return;
    }
    if (picker.open) return;  // its own keys (Esc closes it)
    const active = document.activeElement;
    const inField = ["INPUT", "TEXTAREA", "SELECT"].includes(active.tagName);
    if (e.key === "Escape") {
      if (inField) active.blur(); else if (zoomed) setZoom(false);
      return;
    }
    if (inField) {
      if (e.key === "Enter" && active === comment) { e.preventDefault(); comment.blur(); }
      return;
    }
    if (zoomed && PAN[e.key]) {
      e.preventDefault();
      $("chip-view").scrollBy(PAN[e.key][0], PAN[e.key][1]);
      return;
    }
    if (e.key === "?") { e.preventDefault(); shortcuts.showModal(); return; }
    const k = e.key.toLowerCase();
    if (k === "a") { e.preventDefault(); send("accept"); }
    else if (k === "r") { e.preventDefault(); send("reject"); }
    else if (k === "c") { e.preventDefault(); openPicker(); }
    else if (k === "/") { e.preventDefault(); comment.focus(); }
    else if (k === "s") { e.preventDefault(); skip(); }
    else if (k === "u") { e.preventDefault(); undo(); }
    else if (k === "h") { e.preventDefault(); toggleHeatmap(); }
    else if (k === "z" && current) { e.preventDefault(); setZoom(!zoomed); }
    else if ((k === "[" || k === "]") && current && current.heatmap_url) {
      e.preventDefault();
      opacity = Math.min(100, Math.max(0, opacity + (k === "]" ? 10 : -10)));
      writeJSON("vision-review-opacity", opacity);
      applyHeatmap();
    }
    else if (k === "b" && combos.length > 1) { comboIndex = (comboIndex + 1) % combos.length; $("bands").value = comboIndex; setPictures(); }
    else if (/^[0-9]$/.test(k) && current) {
      const cls = current.classes[k === "0" ? 9 : Number(k) - 1];
      if (cls) { e.preventDefault(); send("correct", cls); }
    }
  });

  window.addEventListener("pagehide", () => {
    if (current) {
      fetch(`/api/items/${current.id}/release`, { method: "POST", keepalive: true, credentials: "same-origin", headers: { "X-CSRF-Token": csrf } });
    }
  });

  counters();
  applyHeatmap();
  claim();
})();
