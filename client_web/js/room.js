// The call page (/r/<room id>): pre-join check, joining over Socket.IO, tiles and controls, leaving.
// Negotiation lives in mesh.js, devices in media.js, texts in i18n.js; this module wires them to the DOM.
//
// For tests the page exposes window.kijkmee = {state, selfId, pcs} and mirrors the state in
// document.body.dataset.state. States: prejoin | joining | in-call | full | left | error, and
// expired (the link no longer works) | ended (the controller ended the call).

import { io } from '/vendor/socket.io.esm.min.js';
import { SOCKET_OPTIONS, firstMedia, roomId as pageRoomId, roomStatus, takeFirstSocket } from './early.js';
import { initI18n, t } from './i18n.js';
import { firstTrack, getLocalMedia, loadDeviceChoice, stopStream } from './media.js';
import { Mesh } from './mesh.js';
import { selectedRoute } from './callstats.js';
import { InCall } from './incall.js';
import { initPrejoin } from './prejoin.js';

const NAME_MAX = 64;
const JOIN_TIMEOUT_MS = 10000;
const LEAVE_TIMEOUT_MS = 1000;
// Failed attempts at a *first* connection before we stop Socket.IO's automatic retries and hand the
// choice back to the person ("Try again"). Once someone was in the call we keep retrying instead
// (Socket.IO backs off to one attempt per 5 s): a phone moving from Wi-Fi to mobile data should
// land back in the call by itself.
const MAX_CONNECT_ERRORS = 3;
const SERVER_RECONNECT_MIN_MS = 1000;
const SERVER_RECONNECT_JITTER_MS = 2000;

// Messages about the network or the room; media messages (camera, microphone) are kept separately
// so that a successful join doesn't hide why the others can't see you.
const NETWORK_CODES = ['server-unreachable', 'rate-limited', 'generic', 'room-full', 'connection-failed', 'bad-room'];

const $ = (id) => document.getElementById(id);
const els = {
  message: $('message'),
  messageClose: $('message-close'),
  prejoin: $('prejoin'),
  preview: $('preview'),
  previewStatus: $('preview-status'),
  form: $('join-form'),
  name: $('name'),
  join: $('join'),
  call: $('call'),
  callTitle: $('call-title'),
  tiles: $('tiles'),
  waiting: $('waiting'),
  sound: $('sound'),
  mute: $('mute'),
  camera: $('camera'),
  leave: $('leave'),
  left: $('left'),
  leftTitle: $('left-title'),
  rejoin: $('rejoin'),
};

const pcs = new Map(); // the same Map object for the page's whole life; the mesh keeps it current
const api = { state: 'prejoin', selfId: null, pcs };
window.kijkmee = api;

let roomId = null;
let localStream = null;
let prejoin = null; // the pre-join check (prejoin.js); null on a broken link
let mediaReady = Promise.resolve(null);
let socket = null;
// The connection opens when the page loads, so that "Join" costs one round trip; nothing is sent and
// nothing is stored until the person asks to join (`wantJoin`).
let wantJoin = false;
let mesh = null;
let joinPending = false; // between emitting `join` and its ack
let pending = []; // room events that arrived before the join ack, replayed once the mesh exists
let joinStartedAt = 0; // performance.now() when join was sent: set-up time for the telemetry report
let reported = false; // one telemetry report per join
let connectErrors = 0;
let connectFailed = false; // the current socket has failed to connect at least once
let rejoining = false; // lost the server during a call: keep retrying, the call view stays up
let micMuted = false;
let cameraOff = false;
let tileSeq = 0;
const peerNames = new Map(); // peer id → typed name or null
const failingPeers = new Set();
// Camera really off, screen sharing, the in-call device menu and what the tiles show (incall.js).
const inCall = new InCall({
  pcs,
  getStream: () => localStream,
  isMicMuted: () => micMuted,
  onChange: () => {
    cameraOff = inCall.cameraOff; // false again when the camera could not be opened
    updateControls();
  },
  onMessage: (code) => showMessage(code),
});

// ---------------------------------------------------------------------------------------- state

function setState(state) {
  api.state = state;
  document.body.dataset.state = state;
}

function showView(view) {
  els.prejoin.hidden = view !== 'prejoin';
  els.call.hidden = view !== 'call';
  els.left.hidden = view !== 'left';
  for (const [name, section] of Object.entries(endViews)) section.hidden = view !== name;
}

// ------------------------------------------------------------------------------------- messages

function showMessage(code) {
  els.message.dataset.code = code;
  els.message.dataset.i18n = `msg.${code}`;
  els.message.textContent = t(`msg.${code}`);
  els.message.hidden = false;
  els.messageClose.hidden = false;
}

/** Hide the message; with `codes`, only when the current one is among them. */
function clearMessage(codes = null) {
  const current = els.message.dataset.code;
  if (!current || (codes && !codes.includes(current))) return;
  els.message.dataset.code = '';
  delete els.message.dataset.i18n;
  els.message.textContent = '';
  els.message.hidden = true;
  els.messageClose.hidden = true;
}

function setJoinButton(key, disabled) {
  els.join.dataset.i18n = key;
  els.join.textContent = t(key);
  els.join.disabled = disabled;
}

// ---------------------------------------------------------------------------------------- media

/** Show the device check and wait for it; `started` is a getLocalMedia() already under way. */
async function acquireMedia(started = null) {
  els.previewStatus.dataset.i18n = 'prejoin.checking';
  els.previewStatus.textContent = t('prejoin.checking');
  els.previewStatus.hidden = false;
  const { stream, error } = await (started ?? getLocalMedia(undefined, loadDeviceChoice())); // the chosen devices
  localStream = stream;
  applyTrackSwitches();
  showPreview();
  updateControls();
  if (error) {
    showMessage(error);
    announce('error', { code: error });
  }
  prejoin?.useStream(stream); // device lists and the microphone level
  return stream;
}

/** The pre-join check switched camera or microphone (prejoin.js): show and use what the stream holds now. */
function useStream(stream) {
  localStream = stream;
  els.preview.srcObject = null; // the same stream object with a new track: make the preview pick it up
  applyTrackSwitches();
  showPreview();
  updateControls();
}

function releaseMedia() {
  inCall.end(); // stop sharing without bringing the camera back
  stopStream(localStream);
  localStream = null;
  els.preview.srcObject = null;
  updateControls();
}

function showPreview() {
  const hasVideo = Boolean(firstTrack(localStream, 'video'));
  els.preview.srcObject = hasVideo ? localStream : null;
  els.preview.hidden = !hasVideo;
  if (hasVideo) {
    els.preview.play().catch(() => {});
    els.previewStatus.hidden = true;
  } else {
    els.previewStatus.dataset.i18n = 'prejoin.no-preview';
    els.previewStatus.textContent = t('prejoin.no-preview');
    els.previewStatus.hidden = false;
  }
}

// Muting disables the track rather than removing it: the connection stays as negotiated and the
// others get silence straight away. The camera off is stopped instead (callmedia.js).
function applyTrackSwitches() {
  const audio = firstTrack(localStream, 'audio');
  if (audio) audio.enabled = !micMuted;
}

function updateControls() {
  const audio = firstTrack(localStream, 'audio');
  const video = firstTrack(localStream, 'video');
  els.mute.disabled = !audio;
  const camera = inCall.cameraState; // 'on' | 'off' | 'none'
  els.camera.disabled = camera === 'none';
  // Without a device the microphone/camera is effectively off, so the button reads as pressed.
  els.mute.setAttribute('aria-pressed', String(!audio || micMuted));
  els.camera.setAttribute('aria-pressed', String(camera !== 'on'));
  // The stream holds what we send: no video track means no picture (camera off, not sharing).
  const selfTile = els.tiles.querySelector('.tile.self');
  if (selfTile) selfTile.classList.toggle('no-video', !video);
}

function toggleMute() {
  setMicMuted(!micMuted);
}

function toggleCamera() {
  setCameraOff(!cameraOff);
}

// The buttons and the embedding page's commands (embed-bridge.js) both come here.
function setMicMuted(muted) {
  micMuted = muted;
  applyTrackSwitches();
  updateControls();
  announce('media-changed', { muted: micMuted, cameraOff });
}

function setCameraOff(off) {
  cameraOff = off;
  inCall.setCameraOff(off); // stops the camera (light off), or opens it again
  applyTrackSwitches();
  updateControls();
  announce('media-changed', { muted: micMuted, cameraOff });
}

// ---------------------------------------------------------------------------------------- tiles

function cleanName(name) {
  if (typeof name !== 'string') return null;
  const trimmed = name.trim().slice(0, NAME_MAX);
  return trimmed || null;
}

function buildTile() {
  const tile = document.createElement('div');
  tile.className = 'tile no-video';
  tile.setAttribute('role', 'listitem');
  const video = document.createElement('video');
  video.autoplay = true;
  video.playsInline = true;
  video.setAttribute('playsinline', '');
  const placeholder = document.createElement('p');
  placeholder.className = 'tile-placeholder';
  const label = document.createElement('p');
  label.className = 'tile-name';
  label.id = `tile-name-${++tileSeq}`;
  tile.append(video, placeholder, label);
  return tile;
}

function setSelfLabel(tile) {
  const label = tile.querySelector('.tile-name');
  const name = cleanName(els.name.value);
  if (name) {
    label.dataset.i18n = 'call.you-named';
    label.dataset.i18nName = name;
    label.textContent = t('call.you-named', { name });
  } else {
    label.dataset.i18n = 'call.you';
    delete label.dataset.i18nName;
    label.textContent = t('call.you');
  }
}

function renderSelfTile() {
  let tile = els.tiles.querySelector('.tile.self');
  if (!tile) {
    tile = buildTile();
    tile.classList.add('self');
    const video = tile.querySelector('video');
    video.muted = true; // never play our own microphone back
    const placeholder = tile.querySelector('.tile-placeholder');
    placeholder.dataset.i18n = 'tile.camera-off';
    placeholder.textContent = t('tile.camera-off');
    els.tiles.prepend(tile);
  }
  setSelfLabel(tile);
  const video = tile.querySelector('video');
  video.srcObject = localStream;
  if (localStream) video.play().catch(() => {});
  updateControls();
  updateTileCount();
}

function remoteTile(peerId) {
  for (const tile of els.tiles.querySelectorAll('.tile[data-peer-id]')) {
    if (tile.dataset.peerId === peerId) return tile;
  }
  return null;
}

function setRemoteLabel(tile, peerId) {
  const label = tile.querySelector('.tile-name');
  const name = peerNames.get(peerId) ?? null;
  if (name) {
    delete label.dataset.i18n;
    label.textContent = name; // textContent: names are typed by people, never HTML
  } else {
    label.dataset.i18n = 'guest';
    label.textContent = t('guest');
  }
}

function setTileStatus(tile, connectionState) {
  tile.dataset.connection = connectionState;
  const placeholder = tile.querySelector('.tile-placeholder');
  const key = {
    failed: 'tile.failed',
    connected: 'tile.no-video',
    away: 'tile.away',
    disconnected: 'tile.away',
  }[connectionState] ?? 'tile.connecting';
  placeholder.dataset.i18n = key;
  placeholder.textContent = t(key);
}

function ensureRemoteTile(peerId) {
  let tile = remoteTile(peerId);
  if (!tile) {
    tile = buildTile();
    tile.dataset.peerId = peerId;
    tile.setAttribute('aria-labelledby', tile.querySelector('.tile-name').id);
    setTileStatus(tile, 'new');
    els.tiles.append(tile);
    updateTileCount();
  }
  setRemoteLabel(tile, peerId);
  return tile;
}

function removeRemoteTile(peerId) {
  const tile = remoteTile(peerId);
  if (!tile) return;
  const video = tile.querySelector('video');
  video.srcObject = null;
  tile.remove();
  updateTileCount();
}

function removeAllRemoteTiles() {
  for (const tile of els.tiles.querySelectorAll('.tile[data-peer-id]')) removeRemoteTile(tile.dataset.peerId);
}

function updateTileCount() {
  const count = els.tiles.querySelectorAll('.tile').length;
  els.tiles.dataset.count = String(count);
  els.waiting.hidden = !(api.state === 'in-call' && count <= 1);
}

function attachRemoteStream(peerId, stream) {
  const tile = ensureRemoteTile(peerId);
  const video = tile.querySelector('video');
  if (video.srcObject !== stream) {
    video.srcObject = stream;
    const refresh = () => tile.classList.toggle('no-video', stream.getVideoTracks().length === 0);
    stream.addEventListener('addtrack', refresh);
    stream.addEventListener('removetrack', refresh);
  }
  tile.classList.toggle('no-video', stream.getVideoTracks().length === 0);
  playRemote(video);
}

// Joining by a click lets browsers play the others with sound. Without one (the page rejoined by itself
// after a reload; iOS Safari's stricter rules) playback with sound is refused: show the picture muted
// and offer one tap that turns the sound on for everyone.
function playRemote(video) {
  video.play().catch((err) => {
    if (err?.name !== 'NotAllowedError') return;
    video.muted = true;
    video.play().catch(() => {});
    els.sound.hidden = false;
  });
}

function turnSoundOn() {
  els.sound.hidden = true;
  for (const video of els.tiles.querySelectorAll('.tile[data-peer-id] video')) {
    video.muted = false;
    video.play().catch(() => {});
  }
}

// ----------------------------------------------------------------------------------------- mesh

function createMesh(ack) {
  localStream = inCall.prepare(localStream); // a stream to send in even without devices (screen sharing)
  const m = new Mesh({
    selfId: ack.self,
    iceServers: Array.isArray(ack.iceServers) ? ack.iceServers : [],
    iceTransportPolicy: ack.iceTransportPolicy || 'all',
    localStream,
    send: signal,
    pcs,
  });
  m.on('peer-added', ({ peerId }) => ensureRemoteTile(peerId));
  m.on('peer-removed', ({ peerId }) => {
    removeRemoteTile(peerId);
    peerFixed(peerId);
  });
  m.on('track', ({ peerId, stream }) => attachRemoteStream(peerId, stream));
  m.on('state', ({ peerId, connectionState }) => {
    const tile = remoteTile(peerId);
    if (tile) setTileStatus(tile, connectionState);
    if (connectionState === 'connected' && !reported) {
      reported = true;
      reportSetup(peerId);
    }
  });
  m.on('failed', ({ peerId }) => {
    failingPeers.add(peerId);
    const tile = remoteTile(peerId);
    if (tile) setTileStatus(tile, 'failed');
    showMessage('connection-failed');
  });
  m.on('recovered', ({ peerId }) => peerFixed(peerId));
  inCall.start(m);
  return m;
}

/**
 * Telemetry without personal data (docs/signaling-protocol.md, `report`): whether the first connected
 * peer is reached directly or through the relay, and how long it took from join. No addresses leave
 * the page: only the candidate types of the selected pair are looked at.
 */
async function reportSetup(peerId) {
  const pc = pcs.get(peerId);
  const s = socket;
  if (!pc || !s) return;
  const setupMs = Math.min(600000, Math.max(0, Math.round(performance.now() - joinStartedAt)));
  // 'connected' can come before getStats names the selected pair: ask again for a few seconds rather
  // than guess. A connection that may only use the relay is relayed whatever the stats say.
  let route = pc.getConfiguration().iceTransportPolicy === 'relay' ? 'relay' : null;
  for (let attempt = 0; route === null && attempt < 25; attempt += 1) {
    route = await selectedRoute(pc);
    if (route === null) await new Promise((resolve) => setTimeout(resolve, 200));
  }
  if (route !== null && s === socket && s.connected) s.emit('report', { route, setupMs });
}

function peerFixed(peerId) {
  failingPeers.delete(peerId);
  if (failingPeers.size === 0) clearMessage(['connection-failed']);
}

function teardownMesh() {
  inCall.stop();
  if (mesh) {
    mesh.close();
    mesh = null;
  }
  pcs.clear();
  pending = [];
  joinPending = false;
  peerNames.clear();
  failingPeers.clear();
  removeAllRemoteTiles();
  clearMessage(['connection-failed']);
}

// ------------------------------------------------------------------------------------ signaling

// Emit one signaling message for the mesh, without asking for an ack: a refusal also arrives as a
// `signal-error` event (handled in connect()), and an ack per offer, answer and ICE candidate would cost
// the server a message each. Most refusals are harmless races (the peer just left), so only the ones a
// person can act on become messages.
function signal(event, payload) {
  const s = socket;
  if (!s || !s.connected) return;
  s.emit(event, payload);
}

function onSignalRefused(code) {
  if (code === 'rate-limited') showMessage('rate-limited');
  else if (code === 'not-joined') showMessage('generic');
  // unknown-peer, bad-request, unknown-event, already-joined: races or bugs the person can't fix.
}

/** Run `fn` now when the mesh exists, after the join ack when it is still on its way, else never. */
function whenReady(fn) {
  if (mesh) fn();
  else if (joinPending) pending.push(fn);
}

function isPeerPayload(p) {
  return p && typeof p.id === 'string' && p.id.length > 0;
}

/** Open a connection and listen on it; `early` is {socket, failed} from early.js to adopt instead. */
function connect(early = null) {
  connectErrors = 0;
  connectFailed = Boolean(early?.failed);
  const s = early?.socket ?? io({ ...SOCKET_OPTIONS });
  socket = s;

  s.on('connect', async () => {
    if (s !== socket || !wantJoin) return;
    await mediaReady; // join with the devices that work, never before the check ends
    joinIfReady(s);
  });

  s.on('connect_error', (err) => {
    if (s === socket) connectFailed = true;
    if (s !== socket || !wantJoin) return; // before "Join": stay quiet; the click starts over if needed
    connectErrors += 1;
    const code = err?.data?.error === 'rate-limited' || err?.message === 'rate-limited' ? 'rate-limited' : 'server-unreachable';
    // s.active is false when the server refused us outright; then Socket.IO won't retry either.
    if (s.active && rejoining) {
      showMessage(code);
      return;
    }
    if (!s.active || connectErrors >= MAX_CONNECT_ERRORS) {
      giveUp(code, 'error');
      return;
    }
    showMessage(code);
    setState('error');
    // Socket.IO keeps retrying in the background; meanwhile the person may retry by hand.
    if (!els.prejoin.hidden) setJoinButton('prejoin.retry', false);
  });

  s.on('disconnect', (reason) => {
    if (s !== socket || !wantJoin) return;
    const wasInCall = Boolean(mesh) || rejoining;
    teardownMesh();
    if (reason === 'io client disconnect') return;
    if (reason === 'io server disconnect') {
      // The server closed our session: it does that when it restarts or drains. Socket.IO won't
      // reconnect by itself after this, so during a call we do, after a random pause so that a
      // restarted server isn't hit by everyone at once. A server that really means to refuse us
      // says so on the next attempt (connect_error or a join refusal), which ends this.
      if (!wasInCall) {
        giveUp('server-unreachable', 'error');
        return;
      }
      setTimeout(() => {
        if (s === socket && !s.connected) s.connect();
      }, SERVER_RECONNECT_MIN_MS + Math.random() * SERVER_RECONNECT_JITTER_MS);
    }
    // Network trouble: Socket.IO reconnects on its own and `connect` joins again with a fresh id.
    rejoining = true;
    showMessage('server-unreachable');
    setState('joining');
    updateTileCount();
  });

  s.on('peer-joined', (p) => {
    if (s !== socket || !isPeerPayload(p)) return;
    whenReady(() => {
      peerNames.set(p.id, cleanName(p.name));
      mesh.addPeer(p.id, { initiate: false }); // the newcomer sends the first offer
      const tile = remoteTile(p.id);
      if (tile) setRemoteLabel(tile, p.id);
      announce('participant-joined', { peerId: p.id, participants: peerNames.size + 1 });
    });
  });
  // The peer's connection dropped (reload, network switch): its seat is held; show it as reconnecting.
  s.on('peer-away', (p) => {
    if (s !== socket || !isPeerPayload(p)) return;
    whenReady(() => {
      const tile = remoteTile(p.id);
      if (tile) setTileStatus(tile, 'away');
    });
  });
  // Back in its seat with a fresh page or connection: its old peer connection is gone, start anew.
  // It offers (it got us in its join ack), we wait for that offer.
  s.on('peer-back', (p) => {
    if (s !== socket || !isPeerPayload(p)) return;
    whenReady(() => {
      peerNames.set(p.id, cleanName(p.name));
      mesh.removePeer(p.id);
      mesh.addPeer(p.id, { initiate: false });
    });
  });
  s.on('peer-left', (p) => {
    if (s !== socket || !isPeerPayload(p)) return;
    whenReady(() => {
      mesh.removePeer(p.id);
      peerNames.delete(p.id);
      announce('participant-left', { peerId: p.id, participants: peerNames.size + 1 });
    });
  });
  // The controller ended the call (DELETE /api/v1/rooms/<id>); the server has freed our seat already.
  s.on('room-ended', () => s === socket && showCallEnded());
  s.on('offer', (m) => s === socket && whenReady(() => mesh.handleOffer(m ?? {})));
  s.on('answer', (m) => s === socket && whenReady(() => mesh.handleAnswer(m ?? {})));
  s.on('candidate', (m) => s === socket && whenReady(() => mesh.handleCandidate(m ?? {})));
  s.on('signal-error', (e) => s === socket && onSignalRefused(e?.error));
}

// The rejoin token (docs/signaling-protocol.md): a random string the server handed out on join, kept in
// this tab's sessionStorage so that a reload or a new connection takes the same seat back within the
// grace period. It holds nothing about the person and dies with the tab.
function rejoinKey() {
  return `kijkmee.rejoin.${roomId}`;
}

function readRejoinToken() {
  try {
    return sessionStorage.getItem(rejoinKey());
  } catch {
    return null; // storage blocked: an ordinary join
  }
}

function saveRejoinToken(token) {
  try {
    if (token) sessionStorage.setItem(rejoinKey(), token);
    else sessionStorage.removeItem(rejoinKey());
  } catch {
    /* storage blocked: a reload joins afresh */
  }
}

// A duplicated tab starts with a copy of the original's sessionStorage, rejoin token included: used, it
// would take the original's seat away (the server hands a seat to whoever shows its token). So before a
// page takes a seat back by itself, it asks the call's other tabs of this browser (BroadcastChannel:
// same origin only) whether one of them is in the call with that token; if so, the token is not ours.
const TAB_ANSWER_MS = 150;
let tokenInDoubt = false; // while asking: a "Join" click meanwhile joins without the token
const tabs = typeof BroadcastChannel === 'function' && pageRoomId ? new BroadcastChannel(`kijkmee.tabs.${pageRoomId}`) : null;
tabs?.addEventListener('message', ({ data }) => {
  const inCall = api.state === 'in-call' || api.state === 'joining';
  if (data?.ask === 'seat' && inCall && typeof data.token === 'string' && data.token === readRejoinToken()) {
    tabs.postMessage({ held: data.token });
  }
});

/** Whether another tab of this browser is in the call with `token` (it answers within TAB_ANSWER_MS). */
function heldByAnotherTab(token) {
  if (!tabs) return Promise.resolve(false);
  return new Promise((resolve) => {
    const heard = ({ data }) => {
      if (data?.held !== token) return;
      tabs.removeEventListener('message', heard);
      clearTimeout(timer);
      resolve(true);
    };
    const timer = setTimeout(() => {
      tabs.removeEventListener('message', heard);
      resolve(false);
    }, TAB_ANSWER_MS);
    tabs.addEventListener('message', heard);
    tabs.postMessage({ ask: 'seat', token });
  });
}

function sendJoin(s) {
  setState('joining');
  joinPending = true;
  joinStartedAt = performance.now();
  reported = false;
  pending = [];
  const payload = { room: roomId };
  const token = tokenInDoubt ? null : readRejoinToken();
  if (token) payload.rejoin = token;
  const name = cleanName(els.name.value);
  if (name) payload.name = name;
  Object.assign(payload, prejoin?.joinFields() ?? {}); // a typed phone number, when the room asks for one
  s.timeout(JOIN_TIMEOUT_MS).emit('join', payload, (err, ack) => {
    if (s !== socket) return;
    if (err) {
      giveUp('server-unreachable', 'error');
    } else if (!ack || ack.ok !== true || typeof ack.self !== 'string') {
      const code = ack?.error;
      if (code === 'room-full') showRoomFull();
      else if (code === 'room-expired') showLinkExpired(); // ended or expired since the page loaded
      else if (code === 'rate-limited') giveUp('rate-limited', 'error');
      // bad-request on join can only mean the room id (the name is cleaned and capped here already):
      // "this link doesn't work".
      else if (code === 'bad-request' || code === 'bad-room') giveUp('bad-room', 'error');
      else giveUp('generic', 'error');
    } else {
      onJoined(ack);
    }
  });
}

function onJoined(ack) {
  saveRejoinToken(typeof ack.rejoinToken === 'string' ? ack.rejoinToken : null);
  connectErrors = 0;
  rejoining = false;
  joinPending = false;
  api.selfId = ack.self;
  mesh = createMesh(ack);
  const wasHidden = els.call.hidden;
  showView('call');
  renderSelfTile();
  for (const p of Array.isArray(ack.peers) ? ack.peers : []) {
    if (!isPeerPayload(p)) continue;
    peerNames.set(p.id, cleanName(p.name));
    mesh.addPeer(p.id, { initiate: true }); // we are the newcomer: we offer
  }
  for (const fn of pending.splice(0)) fn();
  clearMessage(['server-unreachable', 'rate-limited', 'generic', 'room-full', 'bad-room']);
  setState('in-call');
  updateTileCount();
  if (wasHidden) els.callTitle.focus();
  announce('joined', { peerId: ack.self, participants: peerNames.size + 1 });
}

/**
 * Stop trying: close the socket (so the server frees any seat it may still hold for us), show the
 * message and hand control back to the person on the pre-join screen.
 */
function giveUp(code, state) {
  if (code !== 'server-unreachable') saveRejoinToken(null); // refused: the seat is not ours any more
  const s = socket;
  socket = null;
  rejoining = false;
  if (s) s.disconnect();
  teardownMesh();
  api.selfId = null;
  showMessage(code);
  setState(state);
  if (els.left.hidden) {
    showView('prejoin');
    setJoinButton('prejoin.retry', false);
  }
  announce('error', { code });
}

// ----------------------------------------------------------------------------- join and leave

async function startJoin() {
  if (!roomId || api.state === 'joining') return;
  wantJoin = true;
  if (socket && !socket.connected && (connectFailed || !socket.active)) {
    // "Try again" while Socket.IO is still retrying in the background: start over cleanly. A socket
    // that is still on its first attempt (the click came right after the page loaded) is kept:
    // starting over would throw away the handshake that is almost done.
    const old = socket;
    socket = null;
    old.disconnect();
  }
  clearMessage(NETWORK_CODES);
  setState('joining');
  setJoinButton('prejoin.joining', true);
  await mediaReady; // a click during the device check waits for it, then joins with what works
  if (api.state !== 'joining') return;
  if (!socket) connect();
  else joinIfReady(socket); // the early connection is usually ready by now
}

/** Send `join` once: the click and the connection can each be the last to arrive. */
function joinIfReady(s) {
  if (s === socket && s.connected && wantJoin && !joinPending && !mesh) sendJoin(s);
}

function leave() {
  closeCall({goodbye: true});
  showView('left');
  setState('left');
  els.leftTitle.focus();
  announce('left');
}

function rejoin() {
  clearMessage();
  showView('prejoin');
  mediaReady = acquireMedia();
  setState('prejoin');
  startJoin();
}

// ------------------------------------------------------- full, expired, ended; embedding

// Views for a call one can't be in (any more), each with a plain next step.
const endViews = {
  full: $('full'),
  expired: $('expired'),
  ended: $('ended'),
};

// What happens in the call, for listeners outside this module (embed-bridge.js tells an embedding
// page). Event names, random peer ids, counts and codes only: never a typed name, never an address.
const roomListeners = new Set();
// In a frame, embed-bridge.js loads after this module (a page that is not framed never loads it):
// what happens before it listens is kept for it (a rejoin after a reload can be that quick).
const framed = window.parent !== window;
let unheard = framed ? [] : null;

function announce(event, data = {}) {
  if (unheard && roomListeners.size === 0) {
    if (unheard.length < 50) unheard.push([event, data]);
    return;
  }
  for (const listener of roomListeners) listener(event, data);
}

// What an embedding page may ask for: the same code as the buttons.
const COMMANDS = new Map([
  ['mute', () => setMicMuted(true)],
  ['unmute', () => setMicMuted(false)],
  ['camera-off', () => setCameraOff(true)],
  ['camera-on', () => setCameraOff(false)],
  ['leave', () => (api.state === 'in-call' || api.state === 'joining') && leave()],
]);

/**
 * Stop the call here, devices off, with nothing to take back afterwards (no rejoin token). With
 * `goodbye` (the person leaves) the server hears it first, so the seat is free at once; without (the
 * server refused us or ended the call) the seat is not ours any more and we just disconnect.
 */
function closeCall({goodbye = false} = {}) {
  saveRejoinToken(null);
  const s = socket;
  socket = null;
  wantJoin = false;
  rejoining = false;
  teardownMesh();
  if (s) {
    if (goodbye && s.connected) s.timeout(LEAVE_TIMEOUT_MS).emit('leave', {}, () => s.disconnect());
    else s.disconnect();
  }
  releaseMedia();
  const selfTile = els.tiles.querySelector('.tile.self');
  if (selfTile) selfTile.remove();
  updateTileCount();
  api.selfId = null;
  clearMessage();
}

function showEndView(view, state, event) {
  closeCall();
  showView(view);
  setState(state);
  $(`${view}-title`).focus();
  announce(event);
}

/** Everyone the call has room for is in it. "Try again" starts over from the device check. */
function showRoomFull() {
  showEndView('full', 'full', 'room-full');
}

/** The link no longer works: on load (GET /r/<room>/status) the camera is never even asked for. */
function showLinkExpired() {
  showEndView('expired', 'expired', 'expired');
}

/** The controller ended the call while we were in it. */
function showCallEnded() {
  showEndView('ended', 'ended', 'ended');
}

// ----------------------------------------------------------------------------------------- main

function main() {
  setState('prejoin');
  // Text built in code carries data-i18n (and data-i18n-name) too, so a language switch re-translates
  // everything on the page without help from this module.
  initI18n();

  els.messageClose.addEventListener('click', () => clearMessage());
  els.form.addEventListener('submit', (event) => {
    event.preventDefault();
    if (prejoin && !prejoin.formValid()) return; // e.g. a phone number with letters in it: said at the field
    startJoin();
  });
  els.mute.addEventListener('click', toggleMute);
  els.camera.addEventListener('click', toggleCamera);
  els.leave.addEventListener('click', leave);
  els.sound.addEventListener('click', turnSoundOn);
  els.rejoin.addEventListener('click', rejoin);
  $('full-retry').addEventListener('click', rejoin);
  // Shown in an iframe on a controller's site: tell that site what happens (embed-bridge.js).
  if (framed) {
    import('./embed-bridge.js')
      .then(({ startEmbedBridge }) =>
        startEmbedBridge({
          roomStatus,
          subscribe: (listener) => {
            roomListeners.add(listener);
            for (const [event, data] of unheard?.splice(0) ?? []) listener(event, data);
            unheard = null;
            return () => roomListeners.delete(listener);
          },
          command: (name) => COMMANDS.get(name)?.(),
          state: () => api.state,
        }),
      )
      .catch(() => {
        unheard = null; // the call works; the embedding page just hears nothing
      });
  }
  // Closing the tab: tell the server now rather than after its timeout, and free the devices.
  window.addEventListener('pagehide', () => {
    const s = socket;
    socket = null;
    if (s) s.disconnect();
    stopStream(localStream);
  });

  roomId = pageRoomId;
  if (!roomId) {
    // A broken link: don't even ask for the camera.
    els.previewStatus.hidden = true;
    els.preview.hidden = true;
    els.join.disabled = true;
    els.name.disabled = true;
    showMessage('bad-room');
    setState('error');
    return;
  }
  // The button stays disabled in the HTML until the handlers above exist, so an early click can
  // never fall through to a native form submission (which would put the typed name in the URL).
  els.join.disabled = false;
  // Devices, level meter, in-app browser advice, the room's form fields and the network check.
  prejoin = initPrejoin({ roomId, status: roomStatus, getStream: () => localStream, setStream: useStream, showMessage, clearMessage });
  // Both started by early.js while this module was still loading.
  mediaReady = acquireMedia(firstMedia);
  connect(takeFirstSocket());
  // An expired (or ended, or unknown) link: say so before anyone types; early.js never asked for the
  // camera (firstMedia comes back empty).
  roomStatus.then((status) => status?.state === 'expired' && api.state !== 'expired' && showLinkExpired());
  // This tab was in the call a moment ago (a reload, a crash of the tab's page): go straight back in,
  // unless the token is a duplicated tab's copy of one another tab still uses (heldByAnotherTab).
  const token = readRejoinToken();
  if (token) {
    tokenInDoubt = true;
    heldByAnotherTab(token).then((held) => {
      tokenInDoubt = false;
      if (held) {
        if (readRejoinToken() === token) saveRejoinToken(null);
      } else if (api.state === 'prejoin') {
        startJoin();
      }
    });
  }
}

main();
