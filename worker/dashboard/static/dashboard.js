// The dashboard's only script: confirm before a retry, and keep running jobs up to date
// by polling the JSON API. No framework, nothing fetched from elsewhere.
"use strict";

const POLL_MS = 1500;
const LIVE = new Set(["queued", "running"]);

// URLs from the origin alone: a page opened as http://user:pass@host/ must not put the
// credentials into fetch() URLs (browsers refuse those); the browser still sends the auth.
function api(path, params) {
  const url = new URL(path, window.location.origin);
  for (const [key, value] of params || []) url.searchParams.append(key, value);
  return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
    .then((response) => (response.ok ? response.json() : Promise.reject(response.status)));
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function safeHref(url) {
  try {
    const parsed = new URL(url);
    return parsed.protocol === "http:" || parsed.protocol === "https:" ? url : null;
  } catch (_) {
    return null;
  }
}

function badges(job) {
  const cell = document.createDocumentFragment();
  for (const [name, status] of Object.entries(job.destinations)) {
    const href = status.record_url ? safeHref(status.record_url) : null;
    const badge = element(href ? "a" : "span", "badge s-" + status.state);
    if (href) {
      badge.href = href;
      badge.rel = "noopener noreferrer";
      badge.target = "_blank";
    }
    badge.title = status.error || status.record_url || status.state;
    badge.append(element("b", "", name), " " + status.state + (status.attempts > 1 ? " ×" + status.attempts : ""));
    cell.append(badge, " ");
  }
  return cell;
}

function updateRow(row, job) {
  row.dataset.state = job.state;
  row.querySelector("td.state").replaceChildren(element("span", "pill p-" + job.state, job.state));
  const satisfied = !LIVE.has(job.state)
    ? element("span", job.satisfied ? "yes" : "no", job.satisfied ? "yes" : "no")
    : element("span", "muted", "…");
  row.querySelector("td.satisfied").replaceChildren(satisfied);
  row.querySelector("td.badges").replaceChildren(badges(job));
}

function followList(table) {
  const tick = () => {
    const rows = [...table.querySelectorAll("tr[data-job-id]")].filter((row) => LIVE.has(row.dataset.state));
    if (!rows.length) return;
    api("/api/jobs", rows.map((row) => ["id", row.dataset.jobId]))
      .then((answer) => {
        const byId = new Map(answer.jobs.map((job) => [job.id, job]));
        for (const row of rows) if (byId.has(row.dataset.jobId)) updateRow(row, byId.get(row.dataset.jobId));
      })
      .catch(() => {})
      .finally(() => window.setTimeout(tick, POLL_MS));
  };
  window.setTimeout(tick, POLL_MS);
}

// The detail page reloads itself when its job moved on, until the job finished.
function followJob(panel) {
  if (!LIVE.has(panel.dataset.state)) return;
  const signature = (job) => JSON.stringify([job.state, Object.values(job.destinations).map((s) => [s.state, s.attempts])]);
  let seen = null;
  const tick = () => {
    api("/api/jobs/" + encodeURIComponent(panel.dataset.jobId))
      .then((job) => {
        const now = signature(job);
        if ((seen === null && !LIVE.has(job.state)) || (seen !== null && now !== seen)) {
          return window.location.reload();
        }
        seen = now;
        window.setTimeout(tick, POLL_MS);
      })
      .catch(() => window.setTimeout(tick, POLL_MS * 2));
  };
  tick();
}

document.addEventListener("DOMContentLoaded", () => {
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
  const table = document.getElementById("jobs");
  if (table) followList(table);
  const panel = document.getElementById("job");
  if (panel) followJob(panel);
});
