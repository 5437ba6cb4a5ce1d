// In-call controls and what the call shows about each person: screen sharing, the device menu, and on
// every tile a speaking ring, and on the others' tiles the connection quality, the route (direct or
// through the relay) and an on-demand verification code. room.js builds the tiles and the call; this
// module decorates the tiles as they appear (a MutationObserver on #tiles) and owns these controls.
//
// Test contract (see client_web/README.md): tiles carry data-speaking="true|false"; remote tiles
// data-video="flowing|stalled", .tile-route[data-route="direct|relay"], .tile-quality[data-quality=
// "good|fair|poor"], button.tile-verify[aria-expanded] and .verify-code[data-code]. The self tile has
// class `sharing` while the screen is shared. Controls: button#share-screen[aria-pressed],
// button#call-devices[aria-expanded] with #call-device-menu, select#call-camera-select and
// select#call-mic-select.

import { CallMedia } from './callmedia.js';
import { CallMonitor, LocalSpeaking, peerVerificationCode } from './callstats.js';
import { onLangChange, t } from './i18n.js';

const $ = (id) => document.getElementById(id);

let panelSeq = 0;

function el(tag, className, attrs = {}) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  return node;
}

/** Set a translated text (and keep data-i18n so a language switch re-translates it). */
function setText(node, key, vars = null) {
  node.dataset.i18n = key;
  if (vars && 'name' in vars) node.dataset.i18nName = String(vars.name);
  else delete node.dataset.i18nName;
  node.textContent = t(key, vars ?? {});
}

export class InCall {
  #pcs;
  #media;
  #monitor;
  #speaking;
  #onMessage;
  #els;
  #inCall = false;

  /**
   * @param {object} options
   * @param {Map<string, RTCPeerConnection>} options.pcs the page's live peer id → connection map
   * @param {() => MediaStream|null} options.getStream the page's local stream
   * @param {() => boolean} options.isMicMuted
   * @param {() => void} options.onChange our media changed (buttons, self tile need a refresh)
   * @param {(code: string) => void} options.onMessage show the message with this code
   */
  constructor({ pcs, getStream, isMicMuted, onChange, onMessage }) {
    this.#pcs = pcs;
    this.#onMessage = onMessage;
    this.#els = {
      tiles: $('tiles'),
      share: $('share-screen'),
      devices: $('call-devices'),
      menu: $('call-device-menu'),
      cameraSelect: $('call-camera-select'),
      micSelect: $('call-mic-select'),
    };
    this.#media = new CallMedia({
      getStream,
      isMicMuted,
      onError: (code) => onMessage(code),
      onChange: () => {
        this.#refreshSelf();
        onChange();
      },
    });
    this.#monitor = new CallMonitor({ pcs, onUpdate: (peerId, info) => this.#showPeer(peerId, info) });
    this.#speaking = new LocalSpeaking((speaking) => {
      const tile = this.#selfTile();
      if (tile) tile.dataset.speaking = String(speaking);
    });
    this.#wire();
  }

  /** 'on' | 'off' | 'none': for the camera button. */
  get cameraState() {
    return this.#media.cameraState;
  }

  get cameraOff() {
    return this.#media.cameraOff;
  }

  setCameraOff(off) {
    return this.#media.setCameraOff(off);
  }

  /** Before the mesh is built: returns the stream it must send (see CallMedia.prepare). */
  prepare(stream) {
    return this.#media.prepare(stream);
  }

  /** The call is up on `mesh`: start watching the connections and our microphone. */
  start(mesh) {
    this.#inCall = true;
    this.#media.setMesh(mesh);
    this.#monitor.start();
    this.#refreshSelf();
  }

  /** The mesh is gone (left, or the server connection dropped: a new mesh may follow). */
  stop() {
    this.#inCall = false;
    this.#media.setMesh(null);
    this.#monitor.stop();
    this.#speaking.stop();
    this.#closeMenu();
  }

  /** Leaving: stop sharing for good. */
  end() {
    this.stop();
    this.#media.end();
    this.#refreshControls();
  }

  // ---------------------------------------------------------------------------------- controls

  #wire() {
    const { share, devices, menu, cameraSelect, micSelect, tiles } = this.#els;
    share.hidden = !this.#media.canShare;
    share.addEventListener('click', () => {
      if (this.#media.sharing) this.#media.stopSharing();
      else this.#media.startSharing();
    });
    devices.addEventListener('click', () => (menu.hidden ? this.#openMenu() : this.#closeMenu()));
    menu.addEventListener('keydown', (event) => {
      if (event.key !== 'Escape') return;
      this.#closeMenu();
      devices.focus();
    });
    cameraSelect.addEventListener('change', () => this.#media.switchDevice('videoinput', cameraSelect.value));
    micSelect.addEventListener('change', () => this.#media.switchDevice('audioinput', micSelect.value));
    globalThis.navigator?.mediaDevices?.addEventListener?.('devicechange', () => {
      if (!menu.hidden) this.#fillMenu();
    });
    onLangChange(() => {
      if (!menu.hidden) this.#fillMenu();
    });
    // The call can start without a click (an automatic rejoin); the speaking meter then waits for one.
    document.addEventListener('click', () => this.#speaking.resume(), { capture: true });

    new MutationObserver((records) => {
      for (const record of records) {
        for (const node of record.addedNodes) {
          if (node.nodeType !== 1 || !node.classList.contains('tile')) continue;
          if (node.dataset.peerId) this.#decorateRemote(node);
          else if (node.classList.contains('self')) this.#decorateSelf(node);
        }
      }
    }).observe(tiles, { childList: true });
    for (const tile of tiles.querySelectorAll('.tile')) {
      if (tile.dataset.peerId) this.#decorateRemote(tile);
      else if (tile.classList.contains('self')) this.#decorateSelf(tile);
    }
  }

  #refreshControls() {
    const { share } = this.#els;
    share.setAttribute('aria-pressed', String(this.#media.sharing));
  }

  async #openMenu() {
    const { devices, menu } = this.#els;
    menu.hidden = false;
    devices.setAttribute('aria-expanded', 'true');
    await this.#fillMenu();
    this.#els.micSelect.disabled ? this.#els.cameraSelect.focus() : this.#els.micSelect.focus();
  }

  #closeMenu() {
    this.#els.menu.hidden = true;
    this.#els.devices.setAttribute('aria-expanded', 'false');
  }

  async #fillMenu() {
    let list = [];
    try {
      list = await globalThis.navigator.mediaDevices.enumerateDevices();
    } catch {
      /* no list: the selects say so */
    }
    this.#fillSelect(this.#els.cameraSelect, list, 'videoinput', this.#media.cameraDeviceId, 'devices.unnamed-camera');
    this.#fillSelect(this.#els.micSelect, list, 'audioinput', this.#media.microphoneDeviceId, 'devices.unnamed-microphone');
  }

  // Without permission browsers list devices without ids or names: nothing to choose from then.
  #fillSelect(select, list, kind, currentId, unnamedKey) {
    const devices = list.filter((d) => d.kind === kind && d.deviceId);
    select.replaceChildren();
    if (devices.length === 0) {
      const option = el('option');
      setText(option, 'devices.none');
      option.value = '';
      select.append(option);
      select.disabled = true;
      return;
    }
    devices.forEach((device, index) => {
      const option = el('option');
      option.value = device.deviceId;
      if (device.label) option.textContent = device.label; // the device's own name, not translated
      else setText(option, unnamedKey, { name: index + 1 });
      select.append(option);
    });
    select.disabled = false;
    if (currentId && devices.some((d) => d.deviceId === currentId)) select.value = currentId;
  }

  // ------------------------------------------------------------------------------------ tiles

  #selfTile() {
    return this.#els.tiles.querySelector('.tile.self');
  }

  #decorateSelf(tile) {
    if (tile.querySelector('.tile-sharing')) return;
    tile.dataset.speaking = 'false';
    const badge = el('p', 'tile-badge tile-sharing');
    setText(badge, 'tile.sharing');
    tile.append(badge);
    this.#refreshSelf();
  }

  // After our tracks changed: the self tile shows the stream again (a video element doesn't always
  // pick up a track added to the stream it plays), says whether we share, and the speaking ring
  // listens to the microphone we send now.
  #refreshSelf() {
    this.#refreshControls();
    const tile = this.#selfTile();
    if (!tile) return;
    tile.classList.toggle('sharing', this.#media.sharing);
    const video = tile.querySelector('video');
    const stream = video?.srcObject;
    if (stream) {
      video.srcObject = null;
      video.srcObject = stream;
      video.play().catch(() => {});
    }
    if (this.#inCall) this.#speaking.setTrack(stream?.getAudioTracks?.()[0] ?? null);
  }

  #decorateRemote(tile) {
    if (tile.querySelector('.tile-info')) return;
    tile.dataset.speaking = 'false';
    const info = el('div', 'tile-info');
    const quality = el('span', 'tile-quality', { role: 'img' });
    quality.hidden = true;
    const bars = el('span', 'tile-quality-bars', { 'aria-hidden': 'true' });
    bars.append(el('span'), el('span'), el('span'));
    quality.append(bars);
    const route = el('span', 'tile-route');
    route.hidden = true;
    info.append(quality, route);

    const id = `verify-${++panelSeq}`;
    const button = el('button', 'tile-verify', { type: 'button', 'aria-expanded': 'false', 'aria-controls': id });
    setText(button, 'verify.button');
    const panel = el('div', 'tile-verify-panel', { id, role: 'group', 'aria-labelledby': `${id}-title` });
    panel.hidden = true;
    const title = el('p', 'verify-title', { id: `${id}-title` });
    setText(title, 'verify.title');
    const code = el('p', 'verify-code');
    setText(code, 'verify.pending');
    const explain = el('p', 'verify-text');
    setText(explain, 'verify.explain');
    panel.append(title, code, explain);
    button.addEventListener('click', () => this.#toggleVerify(tile));
    // Escape closes it, from the button or from inside; the panel follows the button in reading order.
    tile.addEventListener('keydown', (event) => {
      if (event.key !== 'Escape' || panel.hidden) return;
      this.#toggleVerify(tile, false);
      button.focus();
    });
    tile.append(info, button, panel);
  }

  #toggleVerify(tile, open = null) {
    const button = tile.querySelector('.tile-verify');
    const panel = tile.querySelector('.tile-verify-panel');
    const show = open ?? panel.hidden;
    panel.hidden = !show;
    button.setAttribute('aria-expanded', String(show));
    if (show) this.#showCode(tile);
  }

  // Asked afresh each time the panel opens (and while it waits for the connection): the code belongs
  // to the connection as it is now.
  async #showCode(tile) {
    if (tile.dataset.codeBusy === 'true') return;
    const peerId = tile.dataset.peerId;
    const pc = this.#pcs.get(peerId);
    tile.dataset.codeBusy = 'true';
    const value = pc ? await peerVerificationCode(pc) : null;
    delete tile.dataset.codeBusy;
    const code = tile.querySelector('.verify-code');
    if (!code || this.#pcs.get(peerId) !== pc) return;
    if (value) {
      delete code.dataset.i18n;
      code.dataset.code = value;
      code.textContent = value; // digits: the same in every language
    } else {
      code.dataset.code = '';
      setText(code, 'verify.pending');
    }
  }

  #showPeer(peerId, { route, quality, speaking, videoFlowing }) {
    const tile = [...this.#els.tiles.querySelectorAll('.tile[data-peer-id]')].find((x) => x.dataset.peerId === peerId);
    if (!tile) return;
    if (!tile.querySelector('.tile-info')) this.#decorateRemote(tile);
    const speakingText = String(Boolean(speaking));
    if (tile.dataset.speaking !== speakingText) tile.dataset.speaking = speakingText;
    const video = videoFlowing ? 'flowing' : 'stalled';
    if (tile.dataset.video !== video) tile.dataset.video = video;

    const routeEl = tile.querySelector('.tile-route');
    if (route && routeEl.dataset.route !== route) {
      routeEl.dataset.route = route;
      setText(routeEl, `route.${route}`);
      routeEl.dataset.i18nTitle = `route.${route}-title`;
      routeEl.title = t(`route.${route}-title`);
      routeEl.hidden = false;
    } else if (!route && routeEl.dataset.route) {
      // Between two routes (an ICE restart): say nothing rather than something stale.
      routeEl.dataset.route = '';
      routeEl.hidden = true;
    }

    const qualityEl = tile.querySelector('.tile-quality');
    if ((quality ?? '') !== (qualityEl.dataset.quality ?? '')) {
      qualityEl.dataset.quality = quality ?? '';
      qualityEl.hidden = !quality;
      if (quality) {
        qualityEl.dataset.i18nAriaLabel = `quality.${quality}`;
        qualityEl.dataset.i18nTitle = `quality.${quality}`;
        qualityEl.setAttribute('aria-label', t(`quality.${quality}`));
        qualityEl.title = t(`quality.${quality}`);
      }
    }

    const panel = tile.querySelector('.tile-verify-panel');
    if (!panel.hidden && !tile.querySelector('.verify-code').dataset.code) this.#showCode(tile);
  }
}
