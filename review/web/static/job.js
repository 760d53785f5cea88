// Live progress on the job page: poll the status until the job is ready or failed.
(function () {
  "use strict";
  const root = document.getElementById("job");
  if (!root) return;
  const jobId = root.dataset.job;
  const live = ["queued", "running", "importing"];
  if (!live.includes(root.dataset.status)) return;
  const bar = document.getElementById("job-progress");
  const text = document.getElementById("job-progress-text");
  const status = document.getElementById("job-status");
  const error = document.getElementById("job-error");
  async function poll() {
    try {
      const r = await fetch(`/api/jobs/${jobId}/status`, { credentials: "same-origin" });
      if (!r.ok) throw new Error(r.status);
      const s = await r.json();
      bar.max = Math.max(1, s.progress_total);
      bar.value = s.progress_done;
      text.textContent = `${s.progress_done} / ${s.progress_total}`;
      const unit = document.getElementById("job-progress-unit");
      if (unit) unit.textContent = (s.status === "importing" || s.kind === "import") ? "rows imported" : "items classified";
      status.textContent = s.status;
      error.textContent = s.error || "";
      for (const k of ["pending", "second", "done"]) {
        const el = document.getElementById(`count-${k}`);
        if (el) el.textContent = s.counts[k];
      }
      if (!live.includes(s.status)) { window.location.reload(); return; }
    } catch (e) { /* transient: try again */ }
    setTimeout(poll, 1000);
  }
  setTimeout(poll, 1000);
})();
