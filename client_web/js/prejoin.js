// The pre-join check on the call page (section#prejoin), next to the camera preview that room.js shows:
//   - camera and microphone choice (remembered for the next visit: device ids only) and a level meter;
//   - "open this in your browser" advice inside WhatsApp, Facebook, Messenger, Instagram and LinkedIn;
//   - a network check: can this network reach our relay over UDP, TCP and TLS? It never blocks "Join";
//   - the join form's fields as the room asks for them (name, phone, both or neither).
// Decisions live in precheck.js (pure); room.js owns the stream and the join, and calls in here.

import { t } from './i18n.js';
import { firstTrack, getDevice, saveDeviceChoice } from './media.js';
import {
  APP_NAMES,
  TRANSPORTS,
  askFields,
  connectivityVerdict,
  detectInAppBrowser,
  inAppStepsKey,
  phoneAcceptable,
  platformOf,
  serversByTransport,
} from './precheck.js';

/** How long the network check waits for a relay candidate per transport (all three run at once). */
export const CHECK_TIMEOUT_MS = 5000;
const METER_INTERVAL_MS = 60;
/** How long the pre-join screen is up before the network check starts. */
export const CHECK_DELAY_MS = 1200;
// Device problems a successful switch has solved: their message goes once both devices work.
const DEVICE_CODES = ['no-device', 'device-in-use', 'overconstrained'];

const $ = (id) => document.getElementById(id);

/** Set text that the language switch re-translates: data-i18n (and {name} from data-i18n-name). */
function setText(el, key, name = null) {
  el.dataset.i18n = key;
  if (name === null) delete el.dataset.i18nName;
  else el.dataset.i18nName = name;
  el.textContent = t(key, name === null ? {} : { name });
}

// ------------------------------------------------------------------------------ level meter

/** Microphone level from a Web Audio AnalyserNode, shown on a role="meter" element (0–100). */
class LevelMeter {
  constructor(meter) {
    this.meter = meter;
    this.bar = meter.querySelector('.level-bar');
    this.row = meter.closest('.level-row') ?? meter;
    this.context = null;
    this.timer = null;
    this.level = 0;
    this.shown = -1;
    this.resume = () => this.context?.resume().catch(() => {});
  }

  start(track) {
    this.stop();
    const Context = globalThis.AudioContext ?? globalThis.webkitAudioContext;
    this.row.hidden = !track;
    if (!track || track.readyState !== 'live' || !Context) return;
    try {
      this.context = new Context();
      const source = this.context.createMediaStreamSource(new MediaStream([track]));
      const analyser = this.context.createAnalyser();
      analyser.fftSize = 1024;
      source.connect(analyser); // analysed only: never played back
      const samples = new Float32Array(analyser.fftSize);
      this.timer = setInterval(() => {
        analyser.getFloatTimeDomainData(samples);
        this.show(levelOf(samples));
      }, METER_INTERVAL_MS);
    } catch {
      this.stop(); // no Web Audio for this stream: the meter just stays empty
      return;
    }
    // Browsers may start audio only after a tap; the meter then comes alive with the first one.
    if (this.context.state === 'suspended') {
      this.resume();
      document.addEventListener('pointerdown', this.resume, { once: true });
      document.addEventListener('keydown', this.resume, { once: true });
    }
  }

  show(level) {
    // Rise at once, fall slowly: speech stays readable instead of flickering.
    this.level = Math.max(level, this.level * 0.8);
    const value = Math.round(this.level);
    this.bar.style.transform = `scaleX(${value / 100})`;
    if (value !== this.shown) {
      this.shown = value;
      this.meter.setAttribute('aria-valuenow', String(value));
    }
  }

  stop() {
    clearInterval(this.timer);
    this.timer = null;
    document.removeEventListener('pointerdown', this.resume);
    document.removeEventListener('keydown', this.resume);
    if (this.context) this.context.close().catch(() => {});
    this.context = null;
    this.level = 0;
    this.show(0);
  }
}

/** 0–100 from the RMS of time-domain samples: -60 dBFS and below is 0, full scale is 100. */
export function levelOf(samples) {
  let sum = 0;
  for (const sample of samples) sum += sample * sample;
  const rms = Math.sqrt(sum / Math.max(1, samples.length));
  if (rms <= 0) return 0;
  const db = 20 * Math.log10(rms);
  return Math.max(0, Math.min(100, ((db + 60) / 60) * 100));
}

// ------------------------------------------------------------------------------ network check

/**
 * 'ok' when a relay candidate comes from `servers` (one transport's URLs) within `timeoutMs`, 'fail'
 * when gathering ends without one or time runs out; 'aborted' when `signal` fires first. The
 * connection is closed at once either way: the allocation on the relay then just times out.
 */
export function probeRelay(servers, timeoutMs = CHECK_TIMEOUT_MS, signal = null) {
  return new Promise((resolve) => {
    let pc;
    let timer = null;
    let done = false;
    const finish = (result) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      try {
        pc?.close();
      } catch {
        /* already closed */
      }
      resolve(result);
    };
    const onAbort = () => finish('aborted');
    if (signal?.aborted) {
      finish('aborted');
      return;
    }
    signal?.addEventListener('abort', onAbort);
    timer = setTimeout(() => finish('fail'), timeoutMs);
    try {
      pc = new RTCPeerConnection({ iceServers: servers, iceTransportPolicy: 'relay' });
    } catch {
      finish('fail');
      return;
    }
    pc.addEventListener('icecandidate', (event) => {
      const candidate = event.candidate;
      if (!candidate) finish('fail'); // gathering is over and no relay candidate came
      else if (candidate.type === 'relay' || / typ relay\b/.test(candidate.candidate)) finish('ok');
    });
    pc.createDataChannel('check'); // something to negotiate, so that candidates are gathered
    pc.createOffer()
      .then((offer) => pc.setLocalDescription(offer))
      .catch(() => finish('fail'));
  });
}

class NetworkCheck {
  constructor(roomId) {
    this.roomId = roomId;
    this.section = $('netcheck');
    this.verdict = $('netcheck-verdict');
    this.again = $('netcheck-again');
    this.items = Object.fromEntries(TRANSPORTS.map((tr) => [tr, this.section.querySelector(`[data-transport="${tr}"]`)]));
    this.controller = null;
    this.running = false;
    this.again.addEventListener('click', () => this.run());
  }

  async run() {
    if (this.running || typeof RTCPeerConnection !== 'function') return;
    this.running = true;
    const controller = new AbortController();
    this.controller = controller;
    this.section.hidden = false;
    this.again.hidden = true;
    this.setVerdict('checking');
    for (const transport of TRANSPORTS) this.setResult(transport, 'checking');
    let servers = {};
    // The request gets a time limit of its own: a server that doesn't answer means "not available".
    const request = new AbortController();
    const stopRequest = () => request.abort();
    controller.signal.addEventListener('abort', stopRequest);
    const timer = setTimeout(stopRequest, CHECK_TIMEOUT_MS);
    try {
      const response = await fetch(`/r/${encodeURIComponent(this.roomId)}/check`, {
        cache: 'no-store',
        credentials: 'same-origin',
        signal: request.signal,
      });
      if (response.ok) servers = serversByTransport((await response.json())?.iceServers);
    } catch {
      /* offline, too slow, aborted or refused: nothing to try */
    } finally {
      clearTimeout(timer);
      controller.signal.removeEventListener('abort', stopRequest);
    }
    const results = {};
    await Promise.all(
      TRANSPORTS.map(async (transport) => {
        if (!servers[transport]) {
          results[transport] = 'absent';
        } else {
          results[transport] = await probeRelay(servers[transport], CHECK_TIMEOUT_MS, controller.signal);
        }
        if (results[transport] !== 'aborted') this.setResult(transport, results[transport]);
      }),
    );
    this.running = false;
    this.controller = null;
    if (controller.signal.aborted) {
      this.section.hidden = true; // left the pre-join view half-way: no stale "Checking…"
      return;
    }
    this.setVerdict(connectivityVerdict(results));
    this.again.hidden = false;
  }

  abort() {
    this.controller?.abort();
  }

  setResult(transport, result) {
    const item = this.items[transport];
    if (!item) return;
    item.dataset.result = result;
    item.hidden = result === 'absent';
    const label = item.querySelector('.netcheck-result');
    if (result !== 'absent') setText(label, `netcheck.${result}`);
  }

  setVerdict(verdict) {
    this.verdict.dataset.verdict = verdict;
    setText(this.verdict, `netcheck.verdict-${verdict}`);
  }
}

// ------------------------------------------------------------------------------ the module

/**
 * Wire the pre-join check. `hooks`: getStream() → the current local MediaStream or null;
 * setStream(stream) → room.js shows and uses it (after a device switch); showMessage(code) and
 * clearMessage(codes) → the page's message bar. `status` is the promise of GET /r/<room>/status.
 * Returns what room.js calls: useStream, formValid, joinFields.
 */
export function initPrejoin({ roomId, status, getStream, setStream, showMessage, clearMessage }) {
  const section = $('prejoin');
  const devices = $('devices');
  const selects = { video: $('camera-select'), audio: $('mic-select') };
  const meter = new LevelMeter($('level'));
  const check = new NetworkCheck(roomId);
  const phoneField = $('phone-field');
  const phone = $('phone');
  const phoneError = $('phone-error');
  let switching = false;

  const inView = () => !section.hidden;
  // The meter and the network check run while the person is looking at the pre-join screen, not once
  // they have clicked "Join": then the CPU and the network are the call's.
  const lingering = () => inView() && document.body.dataset.state !== 'joining';
  const editable = () => inView() && ['prejoin', 'error', 'full'].includes(document.body.dataset.state);

  // ---- devices

  // Listed while the person can choose; after "Join" the list waits (devicesStale) until the pre-join
  // screen is back, so the call's set-up doesn't share the CPU with it.
  let devicesStale = false;
  // The network check's time came while a join was under way: it runs when the pre-join screen is back.
  let checkDue = false;

  async function fillDevices() {
    const mediaDevices = globalThis.navigator?.mediaDevices;
    if (!mediaDevices?.enumerateDevices) return;
    if (!lingering()) {
      devicesStale = true;
      return;
    }
    devicesStale = false;
    let list = [];
    try {
      list = await mediaDevices.enumerateDevices();
    } catch {
      return;
    }
    const stream = getStream();
    let any = false;
    for (const kind of ['video', 'audio']) {
      const select = selects[kind];
      // Before permission browsers list devices without ids; those can't be chosen.
      const found = list.filter((d) => d.kind === `${kind}input` && d.deviceId);
      const current = firstTrack(stream, kind)?.getSettings?.().deviceId ?? null;
      const options = found.map((device, index) => {
        const option = document.createElement('option');
        option.value = device.deviceId;
        if (device.label) option.textContent = device.label; // the device's own name, not translated
        else setText(option, kind === 'video' ? 'prejoin.camera-n' : 'prejoin.mic-n', String(index + 1));
        return option;
      });
      if (options.length === 0) {
        const none = document.createElement('option');
        none.value = '';
        setText(none, kind === 'video' ? 'prejoin.no-camera' : 'prejoin.no-mic');
        options.push(none);
      } else {
        any = true;
      }
      select.replaceChildren(...options);
      if (current && found.some((d) => d.deviceId === current)) select.value = current;
      select.disabled = found.length === 0 || !editable();
    }
    devices.hidden = !any;
  }

  function restoreSelection(kind) {
    const current = firstTrack(getStream(), kind)?.getSettings?.().deviceId;
    if (current) selects[kind].value = current;
  }

  async function switchDevice(kind, deviceId) {
    if (!deviceId || switching) return;
    const stream = getStream();
    const old = firstTrack(stream, kind);
    if (old && old.getSettings?.().deviceId === deviceId && old.readyState === 'live') return;
    // The lists stay enabled (disabling the one in focus would throw keyboard users out of it); a
    // change while a switch is under way is undone when it ends.
    switching = true;
    // Phones often can't open a second camera while the first is on: let go of the old one first.
    const oldId = old?.getSettings?.().deviceId ?? null;
    if (old && kind === 'video') old.stop();
    let { track, error } = await getDevice(kind, deviceId);
    if (!track && old && kind === 'video' && oldId) ({ track } = await getDevice(kind, oldId)); // back to before
    if (track) {
      let target = getStream();
      if (target) {
        for (const previous of kind === 'audio' ? target.getAudioTracks() : target.getVideoTracks()) {
          target.removeTrack(previous);
          if (previous !== track) previous.stop();
        }
        target.addTrack(track);
      } else {
        target = new MediaStream([track]);
      }
      if (!error) saveDeviceChoice(kind, deviceId);
      setStream(target);
      if (kind === 'audio' && lingering()) meter.start(track);
    } else if (old && kind === 'video') {
      const target = getStream();
      target?.removeTrack(old);
      setStream(target);
    }
    if (error) showMessage(error);
    else if (firstTrack(getStream(), 'audio') && firstTrack(getStream(), 'video')) clearMessage(DEVICE_CODES);
    switching = false;
    restoreSelection(kind);
    await fillDevices();
  }

  for (const kind of ['video', 'audio']) {
    selects[kind].addEventListener('change', () => switchDevice(kind, selects[kind].value));
  }
  globalThis.navigator?.mediaDevices?.addEventListener?.('devicechange', () => fillDevices());

  // ---- the view: meter and check run only while the pre-join view is up

  function viewChanged() {
    if (lingering()) {
      const track = firstTrack(getStream(), 'audio');
      if (track && !meter.context) meter.start(track);
      if (devicesStale) fillDevices();
      if (checkDue) {
        checkDue = false;
        check.run();
      }
    } else {
      meter.stop();
      check.abort();
    }
    for (const select of Object.values(selects)) {
      select.disabled = !editable() || select.options.length === 0 || select.options[0].value === '';
    }
  }
  new MutationObserver(viewChanged).observe(section, { attributes: true, attributeFilter: ['hidden'] });
  new MutationObserver(viewChanged).observe(document.body, { attributes: true, attributeFilter: ['data-state'] });

  // ---- in-app browsers (the user agent is looked at here only; it goes nowhere)

  const userAgent = globalThis.navigator?.userAgent ?? '';
  const app = detectInAppBrowser(userAgent);
  if (app) showInAppAdvice(app, platformOf(userAgent));

  // ---- the form: what the room asks for

  Promise.resolve(status).then((answer) => {
    if (!answer || answer.state !== 'open') return; // expired: another view explains; unknown: as before
    const fields = askFields(answer.ask);
    showField($('name-field'), $('name'), fields.name);
    showField(phoneField, phone, fields.phone);
  });
  phone.addEventListener('input', () => {
    if (phone.getAttribute('aria-invalid') === 'true' && phoneAcceptable(phone.value)) setPhoneError(false);
  });

  function setPhoneError(on) {
    phoneError.hidden = !on;
    // The mistake is read out with the field only while it is shown.
    phone.setAttribute('aria-describedby', on ? 'phone-hint phone-error' : 'phone-hint');
    if (on) phone.setAttribute('aria-invalid', 'true');
    else phone.removeAttribute('aria-invalid');
  }

  // ---- the network check: once the person has looked at the pre-join screen for a moment. Someone
  // who clicks "Join" at once never waits for it, and its three test connections don't compete with
  // the call's own set-up for the CPU.

  Promise.resolve(status).then((answer) => {
    if (answer?.state === 'expired') return;
    setTimeout(() => {
      if (lingering()) check.run();
      else checkDue = true; // joining (or in the call): when the pre-join screen is back, if ever
    }, CHECK_DELAY_MS);
  });

  return {
    /** A (new) stream from the device check: list the devices, start the meter. */
    useStream(stream) {
      if (lingering()) meter.start(firstTrack(stream, 'audio'));
      fillDevices();
    },
    /** False (and the mistake shown, the field focused) when the form can't be sent as it is. */
    formValid() {
      if (phoneField.hidden || phoneAcceptable(phone.value)) {
        setPhoneError(false);
        return true;
      }
      setPhoneError(true);
      phone.focus();
      return false;
    },
    /** Extra join payload fields (docs/signaling-protocol.md `join`): a typed phone number. */
    joinFields() {
      const typed = phone.value.trim();
      return !phoneField.hidden && typed ? { phone: typed } : {};
    },
  };
}

function showField(field, input, show) {
  field.hidden = !show;
  input.disabled = !show;
  if (!show) input.value = '';
}

function showInAppAdvice(app, platform) {
  const box = $('inapp');
  setText($('inapp-text'), 'inapp.text', APP_NAMES[app]);
  setText($('inapp-steps'), inAppStepsKey(app, platform));
  const link = $('inapp-link');
  link.value = globalThis.location.href;
  const copy = $('inapp-copy');
  const state = $('inapp-status');
  copy.addEventListener('click', async () => {
    let copied = false;
    try {
      await navigator.clipboard.writeText(link.value);
      copied = true;
    } catch {
      // In-app views often lack the async clipboard: select the link and try the old way.
      link.focus();
      link.select();
      try {
        copied = document.execCommand('copy');
      } catch {
        copied = false;
      }
    }
    setText(state, copied ? 'inapp.copied' : 'inapp.copy-failed');
    if (!copied) {
      link.focus();
      link.select();
    }
  });
  box.hidden = false;
}
