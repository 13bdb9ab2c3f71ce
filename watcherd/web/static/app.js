// watcherd dashboard: times in the viewer's zone, the job list kept live, a job's progress
// streamed. Everything from the server is set as text (textContent), never as HTML, except
// the list fragment, which the server rendered and escaped.
"use strict";

function localTimes(root) {
  for (const node of root.querySelectorAll("time[datetime]")) {
    const when = new Date(node.getAttribute("datetime"));
    if (!isNaN(when)) {
      node.title = node.getAttribute("datetime");
      node.textContent = when.toLocaleString();
    }
  }
}

function liveList() {
  const holder = document.getElementById("live-list");
  if (!holder) return;
  const refresh = async () => {
    try {
      const response = await fetch(holder.dataset.src, {credentials: "same-origin"});
      if (response.ok) {
        holder.innerHTML = await response.text();  // server-rendered, escaped
        localTimes(holder);
      }
    } catch (e) { /* the next turn tries again */ }
  };
  setInterval(refresh, 2000);
}

function liveProgress() {
  const log = document.getElementById("progress");
  if (!log || log.dataset.ended === "true" || !window.EventSource) return;
  log.textContent = "";
  const source = new EventSource(log.dataset.events);
  source.addEventListener("line", (event) => {
    const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.append(document.createTextNode(JSON.parse(event.data) + "\n"));
    if (atEnd) log.scrollTop = log.scrollHeight;
  });
  source.addEventListener("end", () => {
    source.close();
    setTimeout(() => window.location.reload(), 500);  // the summary, the diff, the record
  });
}

document.addEventListener("DOMContentLoaded", () => {
  localTimes(document);
  liveList();
  liveProgress();
});
