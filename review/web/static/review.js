// The review page: claim an item, show it, send a decision with one key, show the next.
(function () {
  "use strict";
  const root = document.getElementById("review");
  if (!root) return;
  const jobId = root.dataset.job;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const $ = (id) => document.getElementById(id);
  const classSelect = $("correct-class");
  const comment = $("comment");
  let current = null;
  let busy = false;
  // Decisions are only possible once the item's picture has loaded: nobody decides blind.
  let ready = false;
  let decided = 0;
  let combos = [];
  let comboIndex = 0;

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

  function setChip() {
    if (!current) return;
    const c = combos[comboIndex];
    const chip = $("chip");
    const url = current.chip_url + (c && combos.length > 1 && comboIndex > 0 ? "?bands=" + c.v.join(",") : "");
    const item = current;
    setReady(false);
    $("chip-error").hidden = true;
    chip.onload = () => { if (current === item && chip.naturalWidth > 0) setReady(true); };
    chip.onerror = async () => {
      if (current !== item) return;
      setReady(false);
      const why = await whyNot(url);
      if (current !== item) return;
      $("chip-error").textContent = `The picture could not be loaded: ${why}. No decision can be made on this item; tell an admin.`;
      $("chip-error").hidden = false;
    };
    chip.src = url;
  }

  function show(item) {
    current = item;
    setReady(false);
    if (!item) {
      $("workspace").hidden = true;
      $("empty").hidden = false;
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
    const top = $("top3");
    top.replaceChildren(...item.top3.map((t) => {
      const li = document.createElement("li");
      li.textContent = `${t.class_name}: ${(t.p * 100).toFixed(1)} %`;
      return li;
    }));
    const w = item.window;
    $("loc-window").textContent = w ? `rows ${w.row_off}–${w.row_off + w.height}, cols ${w.col_off}–${w.col_off + w.width}` : "whole file";
    $("loc-bounds").textContent = item.bounds ? item.bounds.map((v) => Number(v).toFixed(2)).join(", ") : "–";
    $("loc-crs").textContent = item.crs || "–";
    const keep = combos[comboIndex];
    combos = bandCombos(item.bands || []);
    const again = keep ? combos.findIndex((c) => c.v.join() === keep.v.join()) : -1;
    comboIndex = again >= 0 ? again : 0;
    const picker = $("bands");
    picker.replaceChildren(...combos.map((c, i) => {
      const o = document.createElement("option");
      o.value = i; o.textContent = c.label; return o;
    }));
    picker.value = comboIndex;
    $("band-picker").hidden = combos.length < 2;
    setChip();
    const ov = $("overview");
    ov.hidden = !item.overview_url;
    if (item.overview_url) ov.src = item.overview_url;
    const hm = $("heatmap");
    const note = $("heatmap-note");
    hm.hidden = true;
    note.textContent = item.heatmap_note || "";
    note.hidden = !item.heatmap_note;
    // Shown once it has loaded; when it cannot be made, the note says why.
    hm.onload = () => { if (current === item) hm.hidden = false; };
    hm.onerror = async () => {
      hm.hidden = true;
      if (!item.heatmap_url) return;
      const why = await whyNot(item.heatmap_url);
      if (current !== item) return;
      note.textContent = `No heatmap: ${why}`;
      note.hidden = false;
    };
    if (item.heatmap_url) hm.src = item.heatmap_url; else hm.removeAttribute("src");
    const predicted = item.classes.indexOf(item.class_name);
    if (predicted >= 0) classSelect.selectedIndex = predicted;
    comment.value = "";
  }

  async function claim() {
    const r = await post(`/api/jobs/${jobId}/claim`);
    if (r.status !== 200) { say(`could not load an item (${r.status}): ${r.data && r.data.detail}`, true); return; }
    show(r.data.item);
  }

  async function send(decision, className) {
    if (busy || !current) return;
    if (!ready) { say("the picture has not loaded: no decision was sent", true); return; }
    busy = true;
    const body = { decision: decision, version: current.version, comment: comment.value || null };
    if (decision === "correct") body.class_name = className;
    try {
      const r = await post(`/api/items/${current.id}/decision`, body);
      if (r.status === 200) {
        decided += 1;
        $("session-count").textContent = `${decided} decided`;
        say(`item ${r.data.item_id}: ${decision}${className ? " → " + className : ""}`);
        if (r.data.next_error) {  // saved, but no next item: say so (not "nothing left")
          current = null;
          setReady(false);
          $("workspace").hidden = true;
          say(r.data.next_error, true);
        } else {
          show(r.data.next);
        }
      } else if (r.status === 409) {
        say((r.data && r.data.detail) || "someone else decided this item", true);
        await claim();
      } else {
        say(`not saved (${r.status}): ${(r.data && JSON.stringify(r.data.detail)) || ""}`, true);
      }
    } finally {
      busy = false;
    }
  }

  $("btn-accept").addEventListener("click", () => send("accept"));
  $("btn-reject").addEventListener("click", () => send("reject"));
  $("btn-correct").addEventListener("click", () => send("correct", classSelect.value));
  $("bands").addEventListener("change", (e) => { comboIndex = Number(e.target.value); setChip(); });

  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const inField = ["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement.tagName);
    if (e.key === "Escape") { document.activeElement.blur(); return; }
    if (inField) {
      if (e.key === "Enter" && document.activeElement === classSelect) { e.preventDefault(); classSelect.blur(); send("correct", classSelect.value); }
      else if (e.key === "Enter" && document.activeElement === comment) { e.preventDefault(); comment.blur(); }
      return;
    }
    const k = e.key.toLowerCase();
    if (k === "a") { e.preventDefault(); send("accept"); }
    else if (k === "r") { e.preventDefault(); send("reject"); }
    else if (k === "c") { e.preventDefault(); classSelect.focus(); }
    else if (k === "/") { e.preventDefault(); comment.focus(); }
    else if (k === "b" && combos.length > 1) { comboIndex = (comboIndex + 1) % combos.length; $("bands").value = comboIndex; setChip(); }
    else if (/^[1-9]$/.test(k) && current) {
      const cls = current.classes[Number(k) - 1];
      if (cls) { e.preventDefault(); send("correct", cls); }
    }
  });

  window.addEventListener("pagehide", () => {
    if (current) {
      fetch(`/api/items/${current.id}/release`, { method: "POST", keepalive: true, credentials: "same-origin", headers: { "X-CSRF-Token": csrf } });
    }
  });

  claim();
})();
