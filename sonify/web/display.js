// The notebook player where widgets cannot be shown (no widget manager in the front end, or anywidget
// installed into a kernel that is still running): the kernel displays the player once, then updates a
// second, hidden output with each batch of steps; that output's script hands the batch to the player
// (player.js, the same player as everywhere else). Front ends that show each output in its own frame
// get the batch over a BroadcastChannel named after the player.

import { createPlayer } from "./player.js";

export function mount(id, run) {
  const root = document.getElementById(id);
  if (!root || root.dataset.mounted) return;
  root.dataset.mounted = "yes";
  const player = createPlayer(root);
  player.startRun(run);
  player.setStatus({ state: "waiting", text: "waiting for the first step" });
  const deliver = (message) => {
    if (message.type === "steps") player.receive(message);
    else if (message.type === "status") player.setStatus(message);
  };
  window.sonifyDeliver = window.sonifyDeliver || {};
  window.sonifyDeliver[id] = deliver;
  const early = (window.sonifyInbox || {})[id] || [];
  if (window.sonifyInbox) delete window.sonifyInbox[id];
  early.forEach(deliver);
  if (typeof BroadcastChannel !== "undefined") {
    new BroadcastChannel(`sonify-${id}`).onmessage = (event) => deliver(event.data);
  }
  (window.sonifyPlayers = window.sonifyPlayers || []).push(player);
}
