// The browser's synthesizer: a step of a score in, its samples out.
//
// It computes the formulas of sonify's Python synthesizer (sonify/synthesize.py), one per kind of cell,
// from the score the server sends (frequency, gain, kind per voice) and the run's instrument (timing,
// fades, the accent's attack, the glide, the voices' mix, and the alarm's and the zero's fixed waves).
// Nothing about mapping, loudness or spikes is decided here: the score already says it.

// ToneKind, as in sonify/score.py.
export const TONE = 0, REST = 1, ALARM = 2, ACCENT = 3, ABOVE = 4, BELOW = 5, ZERO = 6;

const TWO_PI = 2 * Math.PI;

export class Synth {
  constructor(instrument) {
    this.i = instrument;
    this.phase = new Float64Array(instrument.voices); // where each voice's next tone starts (radians)
    const fade = instrument.fade;
    const n = instrument.tone_samples;
    this.envelope = new Float64Array(n).fill(1);
    for (let k = 0; k < fade.length; k++) {
      this.envelope[k] = fade[k];
      this.envelope[n - 1 - k] = fade[k];
    }
  }

  get stepSamples() {
    return this.i.step_samples;
  }

  get stepDuration() {
    return this.i.step_samples / this.i.sample_rate;
  }

  // The samples of one step: an array of channels (Float32Array each), and the phases move on.
  // `row`: {frequency: [...], gain: [...], kind: [...]} of one step; `voiceGain`: per voice, 1 or 0 (solo/mute).
  step(row, voiceGain) {
    const { tone_samples: n, step_samples: size, channels, mode, mix } = this.i;
    const out = [];
    for (let c = 0; c < channels; c++) out.push(new Float32Array(size));
    const tone = new Float64Array(n);
    for (let v = 0; v < this.i.voices; v++) {
      const kind = row.kind[v];
      this.cell(kind, row.frequency[v], row.gain[v], v, tone);
      const gain = voiceGain ? voiceGain[v] : 1;
      const offset = mode === "chord" ? 0 : v * n;
      for (let c = 0; c < channels; c++) {
        const weight = gain * (mix ? mix[v][c] : 1);
        if (weight === 0) continue;
        const channel = out[c];
        for (let k = 0; k < n; k++) channel[offset + k] += weight * tone[k];
      }
    }
    return out;
  }

  // One cell's samples into `tone` (length tone_samples); the voice's phase moves on.
  cell(kind, freq, gain, voice, tone) {
    const { tone_samples: n, sample_rate: rate, amplitude } = this.i;
    tone.fill(0);
    if (kind === REST) return;
    if (kind === ALARM || kind === ZERO) {
      const wave = kind === ALARM ? this.i.alarm : this.i.zero;
      for (let k = 0; k < n; k++) tone[k] = wave[k];
      return;
    }
    const omega = (TWO_PI * freq) / rate;
    const start = this.phase[voice];
    if (kind === ABOVE || kind === BELOW) {
      const ratio = this.glideRatio(freq, kind);
      const held = this.i.glide_start;
      const moving = n - held;
      const logRatio = Math.log(ratio);
      for (let k = 0; k < n; k++) {
        const into = Math.max(k - held, 0) / moving;
        const glided = logRatio === 0 ? moving * into : (moving * Math.expm1(logRatio * into)) / logRatio;
        tone[k] = amplitude * gain * this.envelope[k] * Math.sin(start + omega * (Math.min(k, held) + glided));
      }
      const advance = logRatio === 0 ? omega * n : omega * (held + (moving * (ratio - 1)) / logRatio);
      this.phase[voice] = (start + advance) % TWO_PI;
      return;
    }
    if (kind === ACCENT) {
      const envelope = this.i.accent_envelope;
      for (const [harmonic, weight] of this.i.accent_partials) {
        if (harmonic * freq >= this.i.max_freq) continue;
        for (let k = 0; k < n; k++) tone[k] += weight * Math.sin(harmonic * (start + omega * k));
      }
      for (let k = 0; k < n; k++) tone[k] *= amplitude * gain * envelope[k];
    } else {
      for (let k = 0; k < n; k++) tone[k] = amplitude * gain * this.envelope[k] * Math.sin(start + omega * k);
    }
    this.phase[voice] = (start + omega * n) % TWO_PI;
  }

  // End over start frequency of a glide off the scale, kept inside the playable band.
  glideRatio(freq, kind) {
    const interval = Math.pow(2, this.glide / 12);
    return kind === ABOVE
      ? Math.min(interval, this.i.max_freq / freq)
      : Math.max(1 / interval, this.i.min_freq / freq);
  }

  get glide() {
    return this.i.glide ?? 12;
  }
}

// The score of the steps skipped to keep up, folded into the newest: every alarm and spike is kept.
export function newestKeepingAlarms(rows) {
  const newest = rows[rows.length - 1];
  const kind = newest.kind.slice();
  for (let v = 0; v < kind.length; v++) {
    if (rows.some((row) => row.kind[v] === ALARM)) kind[v] = ALARM;
    else if (kind[v] === TONE && rows.some((row) => row.kind[v] === ACCENT)) kind[v] = ACCENT;
  }
  return { ...newest, kind };
}

// A whole score rendered offline (the page's parity check against sonify.render): one channel array each.
export async function renderOffline(instrument, rows) {
  const synth = new Synth(instrument);
  const size = rows.length * instrument.step_samples;
  const context = new OfflineAudioContext(instrument.channels, Math.max(size, 1), instrument.sample_rate);
  const buffer = context.createBuffer(instrument.channels, Math.max(size, 1), instrument.sample_rate);
  rows.forEach((row, index) => {
    const step = synth.step(row);
    step.forEach((samples, channel) => buffer.copyToChannel(samples, channel, index * instrument.step_samples));
  });
  const source = context.createBufferSource();
  source.buffer = buffer;
  source.connect(context.destination);
  source.start(0);
  const rendered = await context.startRendering();
  const channels = [];
  for (let c = 0; c < rendered.numberOfChannels; c++) channels.push(Array.from(rendered.getChannelData(c)));
  return channels;
}
