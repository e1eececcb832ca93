// The page of `sonify serve`: receives the run's score as Server-Sent Events and hands it to the player
// (player.js, the same player as the notebook's). Only the stream and the page's header live here.

import { createPlayer, escapeHtml } from "./player.js";

const token = new URLSearchParams(location.search).get("token") || "";
const $ = (id) => document.getElementById(id);
const player = createPlayer($("player"));
const { state } = player;

const events = new EventSource(`events?token=${encodeURIComponent(token)}`);
events.addEventListener("open", () => {
  if (state.serverStatus.state === "connecting" || state.serverStatus.state === "disconnected") {
    player.setStatus({ state: "waiting", text: "waiting for the run" });
  }
});
events.addEventListener("error", () => {
  state.disconnects += 1;
  player.setStatus({ state: "disconnected", text: "disconnected: reconnecting" });
});
events.addEventListener("run", (event) => {
  const data = JSON.parse(event.data);
  $("source").textContent = data.source + (data.current ? ` (${data.current})` : "");
  if (data.runs) {
    $("runs").innerHTML = "runs here: " + data.runs.map((name) =>
      `<span class="${name === data.current ? "current" : ""}">${escapeHtml(name)}</span>`).join(", ");
  }
  player.startRun(data);
});
events.addEventListener("history", (event) => player.history(JSON.parse(event.data)));
events.addEventListener("steps", (event) => player.receive(JSON.parse(event.data)));
events.addEventListener("status", (event) => player.setStatus(JSON.parse(event.data)));

// For tests and the curious: the page's own account, and the offline renderer of a whole score.
window.sonify = player;
