// Live pages: one event stream per browser session, shared by its tabs.
//
// The tab that holds the Web Lock "imagegen-live-{session tag}" opens /console/events and passes
// each event to the session's other tabs over a BroadcastChannel of the same name; when it goes
// away, a waiting tab takes the lock and the stream. Where there are no Web Locks (a page served
// over plain http to another host is no secure context), the newest tab leads: the server ends
// the older stream of the session ("superseded"), and a leader that goes away says so, so one of
// the others takes over. Each event names a job, its status and place (no record): a page that
// shows the job asks the server for its row, tile or page body.
"use strict";

const STATES = {
  connecting: "connecting",
  live: "live",
  retrying: "offline, retrying",
  elsewhere: "live in another window",
};

function liveFeed(badge, onJob) {
  const name = `imagegen-live-${badge.dataset.tag}`;
  const bus = window.BroadcastChannel ? new BroadcastChannel(name) : null;
  const locks = bus && navigator.locks;
  let leading = false;
  let ended = false;
  let heardLeader = false;
  let current = "connecting";

  const show = (state, shared) => {
    current = state;
    badge.dataset.state = state;
    if (state === "ended") {
      const again = document.createElement("a");
      again.href = "/console/login";
      again.textContent = "log in again";
      badge.setAttribute("role", "alert");
      badge.replaceChildren("Your session ended: ", again);
      return;
    }
    badge.textContent = STATES[state];
    badge.title = shared ? "through another tab of this browser" : "";
  };
  const tell = (message) => { if (bus) bus.postMessage(message); };
  const setState = (state) => {
    show(state, false);
    if (leading) tell({ type: "state", state });
  };
  const end = () => {
    ended = true;
    setState("ended");
  };

  // Holds the stream until it ends for good (the promise keeps the lock).
  const lead = () => new Promise((release) => {
    leading = true;
    let wait = 2000;
    const later = (connect) => {
      setState("retrying");
      setTimeout(connect, wait);
      wait = Math.min(wait * 2, 30000);
    };
    const connect = () => {
      if (ended) { release(); return; }
      const source = new EventSource(badge.dataset.events);
      source.addEventListener("open", () => { wait = 2000; setState("live"); });
      source.addEventListener("job", (e) => {
        let event;
        try { event = JSON.parse(e.data); } catch { return; }
        onJob(event);
        tell({ type: "job", event });
      });
      source.addEventListener("end", (e) => {
        source.close();
        leading = false;
        if (e.data === "superseded") {
          // Another tab of this session leads now: it says how the stream is.
          show("elsewhere", false);
          tell({ type: "hello" });
        } else {
          ended = true;
          show("ended", false);
          tell({ type: "state", state: "ended" });
        }
        release();
      });
      source.addEventListener("error", () => {
        if (source.readyState === EventSource.CONNECTING) { setState("retrying"); return; }
        // Refused (the login's redirect, too many streams, the server away): the session says
        // which.
        source.close();
        fetch(badge.dataset.session, { credentials: "same-origin", redirect: "manual", cache: "no-store" })
          .then((r) => {
            if (r.status === 204) later(connect);
            else { end(); leading = false; release(); }
          })
          .catch(() => later(connect));
      });
    };
    connect();
  });

  if (bus) {
    bus.onmessage = ({ data }) => {
      if (!data || typeof data !== "object" || leading) {
        if (data && data.type === "hello" && leading) tell({ type: "state", state: current });
        return;
      }
      if (data.type === "job" && data.event) {
        onJob(data.event);
      } else if (data.type === "state" && (STATES[data.state] || data.state === "ended")) {
        heardLeader = true;
        if (data.state === "ended") ended = true;
        show(data.state, true);
      } else if (data.type === "bye" && !locks && !ended) {
        // The leading tab went away: one of the others takes over (a tie ends in "superseded").
        heardLeader = false;
        setTimeout(() => { if (!heardLeader && !leading && !ended) lead(); }, 50 + Math.random() * 450);
      }
    };
    window.addEventListener("pagehide", () => { if (leading) tell({ type: "bye" }); });
  }

  if (locks) {
    show("connecting", false);
    navigator.locks.request(name, () => (ended ? undefined : lead()));
    tell({ type: "hello" });
  } else {
    lead();
  }
}

function parse(html) {
  const holder = document.createElement("template");
  holder.innerHTML = html;
  return [...holder.content.children];
}

function fragment(url) {
  return fetch(url, { credentials: "same-origin", cache: "no-store" })
    .then((r) => (r.ok && !r.redirected ? r.text() : Promise.reject(r.status)));
}

// The job table or gallery: the rows or tiles of the jobs events name, put in place (a new one
// that matches the search goes in by its creation time, on the first page only).
function liveList() {
  const list = document.querySelector("[data-live-list]");
  if (!list) return null;
  const pending = new Set();
  let timer = null;
  const flush = () => {
    // At most 50 jobs a request (what the server answers); the rest in the next one.
    const batch = [...pending].slice(0, 50);
    for (const id of batch) pending.delete(id);
    timer = pending.size ? setTimeout(flush, 250) : null;
    const ids = batch.map(encodeURIComponent).join(",");
    fragment(`${list.dataset.fragment}&ids=${ids}`)
      .then((html) => {
        for (const item of parse(html)) {
          const old = item.id && document.getElementById(item.id);
          if (old) {
            old.replaceWith(item);
          } else if (item.dataset.match === "1" && list.dataset.firstPage === "1") {
            for (const empty of list.querySelectorAll(".empty")) empty.remove();
            const created = Number(item.dataset.created);
            const older = [...list.children].find((el) => Number(el.dataset.created) < created);
            list.insertBefore(item, older || null);
          } else {
            continue;
          }
          window.consoleTimes(item);
        }
      })
      .catch(() => {});
  };
  const gallery = list.id === "gallery";
  return (event) => {
    // A job shown here, or one that may join the first page (in the gallery: with its image).
    const shown = document.getElementById(`${gallery ? "tile" : "job"}-${event.job_id}`);
    const joins = list.dataset.firstPage === "1" && (!gallery || event.status === "succeeded");
    if (!shown && !joins) return;
    pending.add(event.job_id);
    if (!timer) timer = setTimeout(flush, 250);
  };
}

// A job's page: its body again whenever an event names the job or one of its chain's steps, and
// every 10 s while it waits (its place in the queue moves with other jobs).
function liveJob() {
  let box = document.getElementById("job-live");
  if (!box) return null;
  let timer = null;
  const refresh = () => {
    timer = null;
    fragment(box.dataset.fragment)
      .then((html) => {
        const fresh = parse(html).find((el) => el.id === "job-live");
        if (!fresh) return;
        box.replaceWith(fresh);
        box = fresh;
        window.consoleTimes(box);
      })
      .catch(() => {});
  };
  const soon = () => { if (!timer) timer = setTimeout(refresh, 100); };
  setInterval(() => {
    if (box.dataset.final === "0" && document.visibilityState === "visible") soon();
  }, 10000);
  return (event) => {
    if (box.dataset.watch.split(" ").includes(event.job_id)) soon();
  };
}

document.addEventListener("DOMContentLoaded", () => {
  const badge = document.getElementById("live-state");
  if (!badge || !window.EventSource) return;
  const handlers = [liveList(), liveJob()].filter(Boolean);
  liveFeed(badge, (event) => {
    if (!event || typeof event.job_id !== "string") return;
    for (const handle of handlers) handle(event);
  });
});
