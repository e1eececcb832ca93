// The notebook player as an anywidget: the kernel pushes the score, this hands it to the player
// (player.js, the same player as `sonify serve`'s page).
//
// Push only: while the cell runs, messages from the kernel arrive and none can go back (the kernel reads
// the browser's messages only between cells), so nothing here ever asks the kernel for anything. The run's
// layers and instrument, its status and the replay at the end are synced traits; each batch of steps is a
// custom message with binary buffers (steps, frequency, gain, kind, norms).

import { createPlayer } from "./player.js";

// A buffer as its own ArrayBuffer: typed arrays need an aligned start, and a DataView may not have one.
function bytes(buffer) {
  if (buffer instanceof ArrayBuffer) return buffer;
  return buffer.buffer.slice(buffer.byteOffset, buffer.byteOffset + buffer.byteLength);
}

function rowsOf(values, voices, finiteOnly) {
  const rows = [];
  for (let start = 0; start < values.length; start += voices) {
    const row = Array.from(values.subarray(start, start + voices));
    rows.push(finiteOnly ? row.map((v) => (Number.isFinite(v) ? v : null)) : row);
  }
  return rows;
}

function decodeSteps(message, buffers) {
  const voices = message.voices;
  return {
    run: message.run,
    steps: Array.from(new Float64Array(bytes(buffers[0]))),
    frequency: rowsOf(new Float64Array(bytes(buffers[1])), voices, false),
    gain: rowsOf(new Float64Array(bytes(buffers[2])), voices, false),
    kind: rowsOf(new Uint8Array(bytes(buffers[3])), voices, false),
    norms: rowsOf(new Float64Array(bytes(buffers[4])), voices, true),
  };
}

function render({ model, el }) {
  const root = document.createElement("div");
  el.appendChild(root);
  const player = createPlayer(root);
  const run = () => {
    const data = model.get("run");
    if (data && data.layers) player.startRun(data);
  };
  const status = () => {
    const data = model.get("status");
    if (data && data.state) player.setStatus(data);
  };
  const replay = () => {
    const wav = model.get("replay");
    if (wav && wav.byteLength) player.replay(wav, model.get("caption"));
  };
  run();
  status();
  replay();
  model.on("change:run", run);
  model.on("change:status", status);
  model.on("change:replay", replay);
  model.on("msg:custom", (message, buffers) => {
    if (message.type === "steps") player.receive(decodeSteps(message, buffers));
  });
  // For tests and the curious: every player on the page, with its own account.
  (window.sonifyPlayers = window.sonifyPlayers || []).push(player);
  return () => player.close();
}

export default { render };
