// What the call shows about each connection, worked out from RTCPeerConnection.getStats(): the route
// (direct or through the relay), the connection quality, who is speaking, whether video is arriving, and
// the verification code that lets two people check that nobody sits between them. No DOM code here:
// incall.js puts the results on the tiles.
//
// Privacy: stats hold IP addresses (candidates) and certificate fingerprints. Nothing here logs them or
// hands them on: callers get only route types, numbers, booleans and the derived verification code.

/** How often the monitor reads every connection's stats: fast enough for a speaking ring to feel live. */
export const STATS_INTERVAL_MS = 250;
/** The quality is judged over windows of about this length (loss needs a window to mean anything). */
export const QUALITY_WINDOW_MS = 2000;
/** A remote tile counts as "no picture" when no new video frame was decoded for this long. */
export const VIDEO_STALL_MS = 1500;
/**
 * Audio level (0..1, 1 = full scale, as in getStats `audioLevel`) from which someone counts as
 * speaking. Speech sits around 0.05-0.3; a quiet room with noise suppression well below 0.01.
 */
export const SPEAKING_LEVEL = 0.025;
/** The speaking ring stays this long after the last loud moment, so it doesn't flicker between words. */
export const SPEAKING_HOLD_MS = 800;
/**
 * Our own speaking ring starts listening this long after the call starts: starting an AudioContext
 * (an audio device stream) while the call's connections come up slows them down on a busy device.
 */
export const LOCAL_SPEAKING_START_MS = 1000;

/**
 * Thresholds of classifyQuality(). Round-trip time of the selected candidate pair (ms), the fraction
 * of packets lost, and the receive jitter (ms). Worse than `fair` on any of them is fair; worse than
 * `poor` on any is poor. Loosely after ITU-T G.114 (one-way delay up to 150 ms is fine for talking,
 * beyond 400 ms it breaks conversation) and what video codecs hide (a percent or two of loss).
 */
export const QUALITY_LIMITS = Object.freeze({
  fair: Object.freeze({ rttMs: 300, lossFraction: 0.02, jitterMs: 30 }),
  poor: Object.freeze({ rttMs: 600, lossFraction: 0.08, jitterMs: 80 }),
});

const finite = (x) => typeof x === 'number' && Number.isFinite(x);

/**
 * 'good' | 'fair' | 'poor' for one sample {rttMs, lossFraction, jitterMs}; any of them may be
 * missing (null/undefined) and is then left out. Null when nothing is known yet. Pure.
 */
export function classifyQuality({ rttMs = null, lossFraction = null, jitterMs = null } = {}) {
  const values = { rttMs, lossFraction, jitterMs };
  const known = Object.entries(values).filter(([, v]) => finite(v));
  if (known.length === 0) return null;
  if (known.some(([k, v]) => v > QUALITY_LIMITS.poor[k])) return 'poor';
  if (known.some(([k, v]) => v > QUALITY_LIMITS.fair[k])) return 'fair';
  return 'good';
}

/** A getStats() report as a Map id → stats object (works for RTCStatsReport and plain arrays in tests). */
function indexed(report) {
  if (report instanceof Map) return report;
  const byId = new Map();
  report.forEach((r) => byId.set(r.id, r));
  return byId;
}

/** The transport that carries the call: the one with a selected pair (there is one with max-bundle). */
function activeTransport(stats) {
  let found = null;
  stats.forEach((r) => {
    if (r.type === 'transport' && (!found || (!found.selectedCandidatePairId && r.selectedCandidatePairId))) found = r;
  });
  return found;
}

/** The selected candidate pair, or null while ICE has none. */
function selectedPair(stats) {
  const transport = activeTransport(stats);
  const pair = transport?.selectedCandidatePairId ? stats.get(transport.selectedCandidatePairId) : null;
  if (pair) return pair;
  // Some browsers mark the pair instead of naming it on the transport.
  let marked = null;
  stats.forEach((r) => {
    if (r.type === 'candidate-pair' && r.selected) marked = r;
  });
  return marked;
}

/** 'direct' or 'relay' from the selected pair's candidate types in a stats Map; null when not known. */
export function routeFromStats(stats) {
  const pair = selectedPair(stats);
  if (!pair) return null;
  const types = [stats.get(pair.localCandidateId)?.candidateType, stats.get(pair.remoteCandidateId)?.candidateType];
  if (types.includes(undefined)) return null;
  return types.includes('relay') ? 'relay' : 'direct';
}

/** 'direct' or 'relay' for a connection right now, or null while there is no selected pair yet. */
export async function selectedRoute(pc) {
  try {
    return routeFromStats(indexed(await pc.getStats()));
  } catch {
    return null;
  }
}

/** Running totals the quality is computed from (differences of two of these give a window). */
export function qualityCounters(stats, now) {
  const pair = selectedPair(stats);
  const rtt = pair?.currentRoundTripTime;
  const counters = { at: now, rttMs: finite(rtt) ? rtt * 1000 : null, lost: 0, received: 0, jitterMs: null, remoteLoss: null };
  // Jitter of the audio: that is what makes speech choppy. Video's RTP jitter runs high on any healthy
  // link (a frame leaves as a burst of packets that share one timestamp), so it counts only without audio.
  const jitter = { audio: null, video: null };
  stats.forEach((r) => {
    if (r.type === 'inbound-rtp') {
      counters.lost += Math.max(0, r.packetsLost || 0);
      counters.received += r.packetsReceived || 0;
      if (finite(r.jitter) && r.kind in jitter) jitter[r.kind] = Math.max(jitter[r.kind] ?? 0, r.jitter * 1000);
    } else if (r.type === 'remote-inbound-rtp' && finite(r.fractionLost)) {
      // What the other side reports about our packets: loss on the way there counts as much.
      counters.remoteLoss = Math.max(counters.remoteLoss ?? 0, r.fractionLost);
    }
  });
  counters.jitterMs = jitter.audio ?? jitter.video;
  return counters;
}

/** {rttMs, lossFraction, jitterMs} between two qualityCounters() results. Pure. */
export function qualitySample(before, after) {
  let lossFraction = null;
  if (before) {
    const lost = Math.max(0, after.lost - before.lost);
    const received = Math.max(0, after.received - before.received);
    if (lost + received > 0) lossFraction = lost / (lost + received);
  }
  if (finite(after.remoteLoss)) lossFraction = Math.max(lossFraction ?? 0, after.remoteLoss);
  return { rttMs: after.rttMs, lossFraction, jitterMs: after.jitterMs };
}

/** Running audio totals of the received audio: energy and duration (see levelBetween). */
export function audioCounters(stats) {
  let energy = 0;
  let duration = 0;
  let level = null;
  stats.forEach((r) => {
    if (r.type === 'inbound-rtp' && r.kind === 'audio') {
      energy += r.totalAudioEnergy || 0;
      duration += r.totalSamplesDuration || 0;
      if (finite(r.audioLevel)) level = Math.max(level ?? 0, r.audioLevel);
    }
  });
  return { energy, duration, level };
}

/** Longest stretch of audio (s) whose mean energy still says something about "now" (see levelBetween). */
export const LEVEL_WINDOW_MAX_S = 1.0;

/**
 * The audio level (0..1) over the time between two audioCounters() results: the root of the mean
 * energy, so a short loud sound between two readings still counts. A reading that comes late (a busy
 * page, a background tab) would otherwise carry sound from long ago, from before a mute for instance:
 * then only the browser's current level counts. Pure.
 */
export function levelBetween(before, after) {
  const duration = after.duration - (before?.duration ?? 0);
  const energy = after.energy - (before?.energy ?? 0);
  const fresh = before && duration > 0 && duration <= LEVEL_WINDOW_MAX_S;
  const average = fresh && energy > 0 ? Math.sqrt(energy / duration) : 0;
  return Math.max(average, after.level ?? 0);
}

/** Video frames decoded so far from this connection. */
export function framesDecoded(stats) {
  let frames = 0;
  stats.forEach((r) => {
    if (r.type === 'inbound-rtp' && r.kind === 'video') frames += r.framesDecoded || 0;
  });
  return frames;
}

// -------------------------------------------------------------------------- verification code

/**
 * The two DTLS certificate fingerprints of the connection as the browser saw them in the handshake:
 * {local: {algorithm, fingerprint}, remote: {…}}, or null before DTLS is up.
 */
export function certificateFingerprints(stats) {
  const transport = activeTransport(stats);
  if (!transport?.localCertificateId || !transport.remoteCertificateId) return null;
  const local = stats.get(transport.localCertificateId);
  const remote = stats.get(transport.remoteCertificateId);
  if (!local?.fingerprint || !remote?.fingerprint) return null;
  const pick = (c) => ({ algorithm: c.fingerprintAlgorithm || 'sha-256', fingerprint: c.fingerprint });
  return { local: pick(local), remote: pick(remote) };
}

/** Digits of the code; 16 digits carry 53 bits (see verificationCode for why that many). */
export const CODE_DIGITS = 16;

/**
 * The verification code of a connection between two certificates, the same on both ends: SHA-256 over
 * the two fingerprints as "<algorithm> <FINGERPRINT>" lines, sorted so the order doesn't matter; the
 * first 8 bytes, as a big-endian number modulo 10^16, written as four groups of four digits.
 *
 * Someone who swaps the fingerprints in signaling (a man in the middle) holds one DTLS connection to
 * each side, with certificates of their own: each side then sees a code over a different pair, and the
 * codes match only if the attacker finds certificates whose codes collide. With 53 bits that takes
 * around 2^26 certificates for each side (a birthday search over both), generated while the call is
 * being set up: far out of reach, while 16 digits can still be read aloud.
 */
export async function verificationCode(a, b, subtle = globalThis.crypto?.subtle) {
  const line = ({ algorithm, fingerprint }) => `${String(algorithm).toLowerCase()} ${String(fingerprint).toUpperCase()}`;
  const text = [line(a), line(b)].sort().join('\n');
  const digest = new Uint8Array(await subtle.digest('SHA-256', new TextEncoder().encode(text)));
  let value = 0n;
  for (const byte of digest.subarray(0, 8)) value = (value << 8n) | BigInt(byte);
  const digits = (value % 10n ** BigInt(CODE_DIGITS)).toString().padStart(CODE_DIGITS, '0');
  return digits.match(/\d{4}/g).join(' ');
}

const DIGESTS = { 'sha-1': 'SHA-1', 'sha-256': 'SHA-256', 'sha-384': 'SHA-384', 'sha-512': 'SHA-512' };

/** "AB:CD:…" of a DER certificate, the way certificate stats and SDP write fingerprints. */
async function fingerprintOf(der, algorithm, subtle = globalThis.crypto.subtle) {
  const digest = new Uint8Array(await subtle.digest(DIGESTS[algorithm], der));
  return [...digest].map((b) => b.toString(16).padStart(2, '0')).join(':').toUpperCase();
}

// Chromium (seen in 156) fills its certificate stats once per negotiation and keeps them: a getStats()
// that ran before the DTLS handshake finished (anyone's: the monitor's, a test's) leaves the remote
// certificate out until the next negotiation. Then the DTLS transport itself hands us the certificate
// the other side really used, and our local one is in the stats (or, failing that, in our own offer or
// answer). Algorithm: SHA-256, what every browser's DTLS certificate announces.
async function fingerprintsFromTransport(pc, stats) {
  const transport = activeTransport(stats);
  const dtls = [...pc.getSenders(), ...pc.getReceivers()].map((x) => x.transport).find(Boolean);
  if (dtls?.state !== 'connected' || typeof dtls.getRemoteCertificates !== 'function') return null;
  const [der] = dtls.getRemoteCertificates();
  if (!der) return null;
  let local = transport?.localCertificateId ? stats.get(transport.localCertificateId) : null;
  local = local?.fingerprint ? { algorithm: local.fingerprintAlgorithm || 'sha-256', fingerprint: local.fingerprint } : null;
  if (!local) {
    const match = /^a=fingerprint:(\S+) (\S+)/m.exec(pc.localDescription?.sdp ?? '');
    if (!match) return null;
    local = { algorithm: match[1], fingerprint: match[2] };
  }
  return { local, remote: { algorithm: 'sha-256', fingerprint: await fingerprintOf(der, 'sha-256') } };
}

/** The verification code of a live connection, or null while DTLS is not up (or nothing can tell). */
export async function peerVerificationCode(pc) {
  try {
    const stats = indexed(await pc.getStats());
    const fingerprints = certificateFingerprints(stats) ?? (await fingerprintsFromTransport(pc, stats));
    if (!fingerprints) return null;
    return await verificationCode(fingerprints.local, fingerprints.remote);
  } catch {
    return null;
  }
}

// ----------------------------------------------------------------------------------- monitor

/**
 * Reads every connection's stats every STATS_INTERVAL_MS and reports per peer
 * {route, quality, speaking, videoFlowing} to `onUpdate(peerId, info)`. `pcs` is the page's live
 * Map peer id → RTCPeerConnection (mesh.js keeps it current).
 */
export class CallMonitor {
  #pcs;
  #onUpdate;
  #timer = null;
  #busy = false;
  #peers = new Map(); // peer id → {pc, audio, lastLoudAt, frames, lastFrameAt, window, quality}
  #now;

  constructor({ pcs, onUpdate, now = () => performance.now() }) {
    this.#pcs = pcs;
    this.#onUpdate = onUpdate;
    this.#now = now;
  }

  start() {
    if (this.#timer) return;
    this.#timer = setInterval(() => this.#tick(), STATS_INTERVAL_MS);
    this.#tick();
  }

  stop() {
    clearInterval(this.#timer);
    this.#timer = null;
    this.#peers.clear();
  }

  async #tick() {
    if (this.#busy) return; // getStats slower than the interval (a busy phone): skip a beat
    this.#busy = true;
    try {
      for (const id of [...this.#peers.keys()]) if (!this.#pcs.has(id)) this.#peers.delete(id);
      await Promise.all([...this.#pcs].map(([id, pc]) => this.#read(id, pc)));
    } finally {
      this.#busy = false;
    }
  }

  async #read(peerId, pc) {
    // Not before the connection is up: see fingerprintsFromTransport for what an early getStats() costs.
    if (pc.connectionState === 'new' || pc.connectionState === 'connecting') return;
    let stats;
    try {
      stats = indexed(await pc.getStats());
    } catch {
      return; // closed meanwhile
    }
    if (!this.#timer || this.#pcs.get(peerId) !== pc) return;
    const now = this.#now();
    let peer = this.#peers.get(peerId);
    if (!peer || peer.pc !== pc) {
      peer = { pc, audio: null, lastLoudAt: -Infinity, frames: 0, lastFrameAt: now, window: null, quality: null };
      this.#peers.set(peerId, peer);
    }

    const audio = audioCounters(stats);
    if (levelBetween(peer.audio, audio) >= SPEAKING_LEVEL) peer.lastLoudAt = now;
    peer.audio = audio;

    const frames = framesDecoded(stats);
    if (frames > peer.frames) peer.lastFrameAt = now;
    peer.frames = frames;

    const counters = qualityCounters(stats, now);
    if (!peer.window) peer.window = counters;
    if (now - peer.window.at >= QUALITY_WINDOW_MS || peer.quality === null) {
      const quality = classifyQuality(qualitySample(peer.window, counters));
      if (quality) peer.quality = quality;
      if (now - peer.window.at >= QUALITY_WINDOW_MS) peer.window = counters;
    }

    const connected = pc.connectionState === 'connected';
    this.#onUpdate(peerId, {
      route: routeFromStats(stats),
      quality: connected ? peer.quality : null,
      speaking: connected && now - peer.lastLoudAt < SPEAKING_HOLD_MS,
      videoFlowing: now - peer.lastFrameAt < VIDEO_STALL_MS,
    });
  }
}

/**
 * Our own speaking level, from the microphone track through a WebAudio analyser (works before anyone
 * else is in the call, and never leaves the page). `onChange(speaking)` is told when it flips. A
 * disabled (muted) or missing track never counts as speaking.
 */
export class LocalSpeaking {
  #context = null;
  #source = null;
  #analyser = null;
  #buffer = null;
  #track = null;
  #timer = null;
  #startTimer = null;
  #ready = false; // LOCAL_SPEAKING_START_MS have passed since the first track
  #lastLoudAt = -Infinity;
  #speaking = false;
  #onChange;

  constructor(onChange) {
    this.#onChange = onChange;
  }

  /** Listen to `track` (an audio MediaStreamTrack, or null for none). */
  setTrack(track) {
    if (track === this.#track) return;
    this.#disconnect();
    this.#track = track;
    if (!track) return this.#set(false);
    if (!this.#ready) {
      // The first time: a moment later, so the AudioContext's start doesn't compete with the call's.
      this.#startTimer ??= setTimeout(() => {
        this.#startTimer = null;
        this.#ready = true;
        this.#listen();
      }, LOCAL_SPEAKING_START_MS);
      return;
    }
    this.#listen();
  }

  #listen() {
    const track = this.#track;
    if (!track) return;
    const AudioContextImpl = globalThis.AudioContext || globalThis.webkitAudioContext;
    if (!AudioContextImpl) return;
    try {
      this.#context ??= new AudioContextImpl();
      this.#context.resume?.().catch(() => {});
      this.#source = this.#context.createMediaStreamSource(new MediaStream([track]));
      this.#analyser = this.#context.createAnalyser();
      // About 90 ms at 44.1-48 kHz: each reading covers the whole time since the last one.
      this.#analyser.fftSize = 4096;
      this.#buffer = new Float32Array(this.#analyser.fftSize);
      this.#source.connect(this.#analyser);
    } catch {
      this.#disconnect();
      return;
    }
    this.#timer ??= setInterval(() => this.#measure(), 80);
  }

  #measure() {
    const track = this.#track;
    if (!track || !this.#analyser) return;
    const now = performance.now();
    if (track.enabled && track.readyState === 'live') {
      this.#analyser.getFloatTimeDomainData(this.#buffer);
      let sum = 0;
      for (const v of this.#buffer) sum += v * v;
      if (Math.sqrt(sum / this.#buffer.length) >= SPEAKING_LEVEL) this.#lastLoudAt = now;
    } else {
      this.#lastLoudAt = -Infinity; // muted: off at once, and nothing from before the mute lingers
    }
    this.#set(now - this.#lastLoudAt < SPEAKING_HOLD_MS);
  }

  /** Browsers start audio only after a click on the page: call this from one if we started without. */
  resume() {
    if (this.#context?.state === 'suspended') this.#context.resume().catch(() => {});
  }

  #set(speaking) {
    if (speaking === this.#speaking) return;
    this.#speaking = speaking;
    this.#onChange(speaking);
  }

  #disconnect() {
    try {
      this.#source?.disconnect();
    } catch {
      /* already disconnected */
    }
    this.#source = this.#analyser = this.#buffer = null;
  }

  stop() {
    this.#disconnect();
    this.#track = null;
    clearInterval(this.#timer);
    this.#timer = null;
    clearTimeout(this.#startTimer);
    this.#startTimer = null;
    this.#ready = false;
    this.#lastLoudAt = -Infinity;
    this.#set(false);
    this.#context?.close().catch(() => {});
    this.#context = null;
  }
}
