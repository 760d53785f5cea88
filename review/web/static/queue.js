// What both review pages share (review.js: items, change_review.js: changes): the queue
// mechanics — claim, decide, skip, undo, the counters, the ids skipped in this tab's session
// (sessionStorage) — and the small helpers they use. Loaded before the page's own script.
(function () {
  "use strict";
  const MAX_SKIPPED = 1000; // review.queue.MAX_EXCLUDED
  const store = window.sessionStorage;
  const $ = (id) => document.getElementById(id);

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

  function detail(r) {
    const d = r.data && r.data.detail;
    return typeof d === "string" ? d : JSON.stringify(d || "");
  }

  // An <img> that failed says nothing of why: ask the server for its message.
  async function whyNot(url) {
    try {
      const r = await fetch(url, { credentials: "same-origin" });
      const d = await r.json();
      return (d && d.detail) || `HTTP ${r.status}`;
    } catch (e) { return "the server gave no reason"; }
  }

  // The queue of the job on `root` (data-job). `page` says what the page shows:
  //   noun ("item"/"change") and article ("an"/"a"); current(): the item shown (or null);
  //   show(item): show it (null: nothing left); cleared(): a decision was saved but no next
  //   item came; isReady(): its pictures have loaded; notReady: what to say when they have
  //   not; label(decision, className): a decision as the page names it.
  function queue(root, page) {
    const jobId = root.dataset.job;
    const csrf = document.querySelector('meta[name="csrf-token"]').content;
    const skipKey = `vision-review-skip-${jobId}`;
    const decidedKey = `vision-review-decided-${jobId}`;
    let busy = false;
    let decided = Number(readJSON(decidedKey, 0)) || 0;
    let left = null;
    let moreLeft = false;  // the server stops counting at 1000 (review.queue.LEFT_CAP)
    // Items skipped in this tab's session: sent with every claim so they do not come back.
    let skipped = readJSON(skipKey, []).filter((v) => Number.isInteger(v));

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

    function counters() {
      writeJSON(decidedKey, decided);
      $("queue-left").textContent = left == null ? "" : `${left}${moreLeft ? "+" : ""} left in this queue`;
      $("session-count").textContent = `${decided} decided`;
      $("skip-count").textContent = `${skipped.length} skipped`;
      $("skip-count").hidden = !skipped.length;
    }

    function answered(data) {
      if (data && typeof data.left === "number") { left = data.left; moreLeft = Boolean(data.more_left); }
      counters();
    }

    async function claim() {
      const r = await post(`/api/jobs/${jobId}/claim`, { skip: skipped });
      if (r.status !== 200) { say(`could not load ${page.article} ${page.noun} (${r.status}): ${detail(r)}`, true); return; }
      answered(r.data);
      page.show(r.data.item);
    }

    async function send(decision, className) {
      const current = page.current();
      if (busy || !current) return;
      if (!page.isReady()) { say(page.notReady, true); return; }
      busy = true;
      const body = { decision: decision, version: current.version, comment: $("comment").value || null, skip: skipped };
      if (decision === "correct") body.class_name = className;
      try {
        const r = await post(`/api/items/${current.id}/decision`, body);
        if (r.status === 200) {
          decided += 1;
          answered(r.data);
          say(`${page.noun} ${r.data.item_id}: ${page.label(decision, className)} (U undoes it)`);
          if (r.data.next_error) {  // saved, but no next item: say so (not "nothing left")
            page.cleared();
            say(r.data.next_error, true);
          } else {
            page.show(r.data.next);
          }
        } else if (r.status === 409) {
          say(detail(r) || `someone else decided this ${page.noun}`, true);
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
      const current = page.current();
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
        say(`skipped ${page.noun} ${id}`);
        page.show(r.data.item);
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
        say(`undid your ${page.label(r.data.undone)} on ${page.noun} ${r.data.item.id}: it is back, decide it again`);
        page.show(r.data.item);
      } finally {
        busy = false;
      }
    }

    window.addEventListener("pagehide", () => {
      const current = page.current();
      if (current) {
        fetch(`/api/items/${current.id}/release`, { method: "POST", keepalive: true, credentials: "same-origin", headers: { "X-CSRF-Token": csrf } });
      }
    });

    return { claim: claim, send: send, skip: skip, undo: undo, counters: counters, skipped: () => skipped.length };
  }

  window.visionReview = { $: $, readJSON: readJSON, writeJSON: writeJSON, say: say, whyNot: whyNot, queue: queue };
})();
