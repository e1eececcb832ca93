// The player: what a run's score becomes in a browser, wherever the score comes from.
//
// `sonify serve`'s page (app.js, fed by Server-Sent Events) and the notebook player (widget.js, fed by the
// kernel's messages) both build this one player: the Listen button, the status, mute, volume, solo and
// mute per layer, the live curves, and the scheduling. The browser only synthesizes (synth.js); the score
// comes from sonify's one sound path in Python.
//
// Latency policy, as `play --follow`: every step is played while the sound keeps up (a burst too, when
// its sound ends before the next burst is due); otherwise the newest step, carrying every alarm and spike
// of the steps skipped before it, and the skipped steps are counted.

import { ABOVE, ACCENT, ALARM, BELOW, Synth, ZERO, newestKeepingAlarms, renderOffline } from "./synth.js";

const LEAD = 0.05; // seconds between scheduling a step and its first sample: one audio callback and some
const HISTORY = 2000; // steps drawn
const COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
  "#bcbd22", "#17becf"];
const LEGEND = "gradient norm per layer, log scale; red line: NaN/Inf (the alarm); &#9650; a spike (accented); " +
  "&#9642; off the map (a glide); ticks along the bottom: exactly zero (a dead layer)";

// The player's elements, built inside `root` (several players may share a document: a notebook).
function build(root) {
  root.classList.add("sonify-player");
  root.innerHTML = `
    <div class="sonify-controls">
      <button class="sonify-listen" type="button">Listen</button>
      <label><input class="sonify-mute" type="checkbox"> mute</label>
      <label>volume <input class="sonify-volume" type="range" min="0" max="1" step="0.01" value="1"></label>
      <span class="sonify-step">step -</span>
      <span class="sonify-status" role="status">connecting</span>
    </div>
    <div class="sonify-layers"></div>
    <canvas class="sonify-curves" width="960" height="320" aria-label="gradient norm per layer, log scale"></canvas>
    <p class="sonify-legend">${LEGEND}</p>
    <div class="sonify-replay"></div>`;
  const find = (name) => root.querySelector(`.sonify-${name}`);
  return {
    listen: find("listen"), mute: find("mute"), volume: find("volume"), step: find("step"), status: find("status"),
    layers: find("layers"), curves: find("curves"), replay: find("replay"),
  };
}

export function createPlayer(root) {
  const ui = build(root);
  const state = {
    run: 0,
    layers: [],
    instrument: null,
    synth: null,
    queue: [], // steps received and not yet scheduled
    nextTime: 0, // the context time where the next step starts
    lastArrival: null,
    burstInterval: 0, // seconds between batches of rows, smoothed
    received: 0,
    played: 0,
    skipped: 0,
    heard: [], // steps played, in order (for tests: the page's own account)
    playedRows: [], // the newest rows as played (skipped steps folded in), to compare with the sound
    receivedSteps: [],
    alarmsReceived: 0,
    alarmsPlayed: 0,
    disconnects: 0, // times the stream dropped (the browser reconnects by itself)
    curves: [], // {step, norms, kind}
    lastStep: null,
    serverStatus: { state: "connecting", text: "connecting" },
    solo: new Set(),
    muted: new Set(),
    closed: false,
    endedAt: null, // the context time when the run's end was announced
    firstArrival: null, // page clock (s) of the first steps received, and of the end's announcement
    endedArrival: null,
  };

  // The AudioContext exists from the start (suspended until Listen: the browser's autoplay policy), so that
  // the first steps do not fall into a stream that is still starting.
  const context = new AudioContext({ sampleRate: 44100, latencyHint: "interactive" });
  // Silent until Listen, even where the page may already play (in a notebook, the Shift+Enter that ran the
  // cell counts as a user gesture): nobody should be startled by a cell's output.
  if (context.state === "running") context.suspend();
  const master = context.createGain();
  master.connect(context.destination);

  ui.listen.addEventListener("click", async () => {
    if (context.state === "running") {
      await context.suspend();
    } else {
      await context.resume();
      state.nextTime = 0;
    }
    render();
  });
  const setVolume = () =>
    master.gain.setTargetAtTime(ui.mute.checked ? 0 : Number(ui.volume.value), context.currentTime, 0.01);
  ui.mute.addEventListener("change", setVolume);
  ui.volume.addEventListener("input", setVolume);
  setVolume();
  context.addEventListener("statechange", render);

  // -- what comes in ------------------------------------------------------------------------------

  function startRun(data) {
    const fresh = data.run !== state.run;
    state.run = data.run;
    state.layers = data.layers;
    state.instrument = data.instrument;
    state.synth = new Synth(data.instrument);
    state.queue = [];
    if (fresh) state.curves = [];
    if (state.run > 1) state.serverStatus = { state: "new", text: "a new run started" };
    layerButtons();
    render();
  }

  function history(data) {
    if (data.run !== state.run) return;
    data.steps.forEach((step, i) => remember(step, data.norms[i], data.kind[i]));
    draw();
  }

  function receive(data) {
    if (data.run !== state.run || !state.synth) return;
    const now = performance.now() / 1000;
    if (state.lastArrival !== null) {
      const gap = now - state.lastArrival;
      state.burstInterval = state.burstInterval ? 0.8 * state.burstInterval + 0.2 * gap : gap;
    }
    state.lastArrival = now;
    if (state.firstArrival === null) state.firstArrival = now;
    data.steps.forEach((step, i) => {
      const row = { step, frequency: data.frequency[i], gain: data.gain[i], kind: data.kind[i] };
      state.received += 1;
      state.receivedSteps.push(step);
      if (state.receivedSteps.length > 200000) state.receivedSteps.splice(0, 100000);
      if (row.kind.includes(ALARM)) state.alarmsReceived += 1;
      remember(step, data.norms[i], data.kind[i]);
      if (context.state === "running") state.queue.push(row);
    });
    if (state.serverStatus.state === "waiting" || state.serverStatus.state === "new") {
      state.serverStatus = { state: "running", text: "" };
    }
    schedule();
    drawSoon();
  }

  function setStatus(status) {
    if (status.state === "ended" && state.endedAt === null) {
      state.endedAt = context.currentTime;
      state.endedArrival = performance.now() / 1000;
    }
    state.serverStatus = status;
    render();
  }

  function remember(step, norms, kind) {
    state.curves.push({ step, norms, kind });
    if (state.curves.length > HISTORY) state.curves.splice(0, state.curves.length - HISTORY);
    state.lastStep = step;
  }

  // The whole run, condensed, once it has ended: an <audio> player of a WAV.
  function replay(wav, caption) {
    const url = URL.createObjectURL(new Blob([wav], { type: "audio/wav" }));
    ui.replay.innerHTML = "";
    const text = document.createElement("div");
    text.textContent = caption;
    const audio = document.createElement("audio");
    audio.controls = true;
    audio.src = url;
    ui.replay.append(text, audio);
  }

  // -- playing ------------------------------------------------------------------------------------

  function schedule() {
    if (!state.synth || context.state !== "running" || !state.queue.length) return;
    const stepDuration = state.synth.stepDuration;
    const now = context.currentTime;
    if (state.nextTime < now + LEAD) state.nextTime = now + LEAD;
    const ahead = state.nextTime - now;
    if (ahead > LEAD + 2 * stepDuration) return; // enough is queued: decide when it has played
    const waiting = state.queue.splice(0);
    // Sound already waiting to play (the lead aside) counts against the time until the next burst is due.
    const room = Math.max(state.burstInterval, 2 * stepDuration) - (ahead - LEAD);
    const keep = Math.min(waiting.length, Math.max(1, Math.floor(room / stepDuration)));
    const skipped = waiting.length - keep;
    const played = skipped ? [newestKeepingAlarms(waiting.slice(0, skipped + 1)), ...waiting.slice(skipped + 1)]
      : waiting;
    state.skipped += skipped;
    for (const row of played) play(row);
    render();
  }
  const timer = setInterval(schedule, 20);

  function play(row) {
    const { synth, instrument } = state;
    const gains = state.layers.map((_, v) =>
      (state.solo.size ? state.solo.has(v) : !state.muted.has(v)) ? 1 : 0);
    const channels = synth.step(row, gains);
    const buffer = context.createBuffer(instrument.channels, instrument.step_samples, instrument.sample_rate);
    channels.forEach((samples, c) => buffer.copyToChannel(samples, c));
    const source = context.createBufferSource();
    source.buffer = buffer;
    source.connect(master);
    // On the sample grid: a start between two samples is played interpolated, which alters every sample.
    const frame = Math.round(state.nextTime * context.sampleRate);
    source.start(frame / context.sampleRate);
    state.nextTime = (frame + buffer.length) / context.sampleRate;
    state.played += 1;
    state.heard.push(row.step);
    state.playedRows.push({ ...row, at: frame / context.sampleRate }); // at: its start, in context time
    if (state.playedRows.length > 20000) state.playedRows.splice(0, 10000);
    if (state.heard.length > 200000) state.heard.splice(0, 100000);
    if (row.kind.includes(ALARM)) state.alarmsPlayed += 1;
  }

  // -- what the player shows ----------------------------------------------------------------------

  function statusText() {
    const server = state.serverStatus;
    if (server.state === "failed" || server.state === "disconnected" || server.state === "connecting") {
      return server.text;
    }
    if (server.state === "waiting" && !state.received) return server.text;
    const parts = [];
    if (server.state === "ended") parts.push(server.text || "the run ended");
    else if (server.state === "new") parts.push("a new run started");
    if (context.state !== "running") parts.push("press Listen to hear it (sound is suspended)");
    else if (state.queue.length > 1) parts.push(`behind by ${state.queue.length} steps`);
    else if (server.state !== "ended") parts.push("listening");
    if (state.skipped) parts.push(`${state.skipped} skipped`);
    return parts.join("; ");
  }

  function render() {
    ui.status.textContent = statusText();
    ui.step.textContent = `step ${state.lastStep ?? "-"}`;
    ui.listen.textContent = context.state === "running" ? "Pause" : "Listen";
    ui.listen.classList.toggle("on", context.state === "running");
  }

  function layerButtons() {
    const box = ui.layers;
    box.innerHTML = "";
    state.layers.forEach((name, v) => {
      const item = document.createElement("span");
      item.className = "sonify-layer";
      item.innerHTML = `<span class="sonify-swatch"></span>${escapeHtml(name)}` +
        `<button type="button" data-act="solo" title="solo">S</button><button type="button" data-act="mute" title="mute">M</button>`;
      item.querySelector(".sonify-swatch").style.background = COLOURS[v % COLOURS.length]; // CSSOM: allowed by the page's CSP
      item.querySelectorAll("button").forEach((button) => button.addEventListener("click", () => {
        const set = button.dataset.act === "solo" ? state.solo : state.muted;
        if (set.has(v)) set.delete(v); else set.add(v);
        button.classList.toggle("active", set.has(v));
      }));
      box.appendChild(item);
    });
  }

  let drawing = false;
  function drawSoon() {
    if (drawing) return;
    drawing = true;
    setTimeout(() => { drawing = false; draw(); render(); }, 200);
  }

  function draw() {
    const canvas = ui.curves;
    const g = canvas.getContext("2d");
    const { width, height } = canvas;
    g.clearRect(0, 0, width, height);
    const rows = state.curves;
    if (!rows.length) return;
    let low = Infinity, high = -Infinity;
    for (const row of rows) for (const v of row.norms) if (v !== null && v > 0) { low = Math.min(low, v); high = Math.max(high, v); }
    if (!isFinite(low)) { low = 1e-4; high = 1; }
    const lo = Math.log10(low) - 0.2, hi = Math.log10(high) + 0.2;
    const left = 48, bottom = height - 22;
    const first = rows[0].step, last = rows[rows.length - 1].step;
    const x = (step) => left + ((step - first) / Math.max(1, last - first)) * (width - left - 8);
    const y = (v) => bottom - ((Math.log10(v) - lo) / Math.max(1e-9, hi - lo)) * (bottom - 8);
    g.fillStyle = "#666"; g.font = "11px sans-serif";
    for (let e = Math.ceil(lo); e <= Math.floor(hi); e += Math.max(1, Math.round((hi - lo) / 6))) {
      g.fillText(`1e${e}`, 4, y(10 ** e) + 4);
      g.strokeStyle = "#eee"; g.beginPath(); g.moveTo(left, y(10 ** e)); g.lineTo(width, y(10 ** e)); g.stroke();
    }
    g.fillText(`step ${first}`, left, height - 6);
    g.fillText(`${last}`, width - 40, height - 6);
    for (const row of rows) {
      if (row.kind.includes(ALARM)) { // NaN/Inf: a red line across
        g.strokeStyle = "rgba(220,0,0,0.35)"; g.beginPath(); g.moveTo(x(row.step), 8); g.lineTo(x(row.step), bottom); g.stroke();
      }
    }
    state.layers.forEach((_, v) => {
      const colour = COLOURS[v % COLOURS.length];
      g.strokeStyle = colour; g.beginPath();
      let pen = false;
      for (const row of rows) {
        const value = row.norms[v];
        if (value === null || !(value > 0)) { pen = false; continue; }
        if (pen) g.lineTo(x(row.step), y(value)); else g.moveTo(x(row.step), y(value));
        pen = true;
      }
      g.stroke();
      g.fillStyle = colour;
      for (const row of rows) {
        const kind = row.kind[v];
        if (kind === ACCENT) { g.beginPath(); const px = x(row.step), py = y(row.norms[v]); g.moveTo(px, py - 6); g.lineTo(px - 4, py + 2); g.lineTo(px + 4, py + 2); g.fill(); }
        if (kind === ZERO) g.fillRect(x(row.step) - 0.5, bottom - 4 - 4 * v, 1.5, 4); // zeros: ticks at the bottom
        if ((kind === ABOVE || kind === BELOW) && row.norms[v] !== null) g.fillRect(x(row.step) - 1.5, y(row.norms[v]) - 1.5, 3, 3);
      }
    });
  }

  // A player removed from the page (a notebook output cleared) stops its clock and its sound.
  function close() {
    if (state.closed) return;
    state.closed = true;
    clearInterval(timer);
    context.close();
  }

  render();
  return {
    state,
    context,
    renderOffline,
    startRun,
    history,
    receive,
    setStatus,
    replay,
    render,
    close,
    counts: () => ({ received: state.received, played: state.played, skipped: state.skipped, heard: state.heard.slice(),
      receivedSteps: state.receivedSteps.slice(), alarmsReceived: state.alarmsReceived, alarmsPlayed: state.alarmsPlayed,
      status: ui.status.textContent, contextState: context.state }),
  };
}

export function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}
