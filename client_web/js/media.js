// Camera and microphone: getUserMedia with graceful fallbacks, and mapping of its errors to the
// message codes the page explains in plain language. No DOM code here.

// Modest video: in a full mesh every participant uploads one copy per peer, so 540p keeps a three-way
// call usable on ordinary home uplinks and phones.
const VIDEO = { width: { ideal: 960 }, height: { ideal: 540 }, frameRate: { ideal: 24, max: 30 } };
const AUDIO = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };

/**
 * Message code for a getUserMedia failure. Older browsers used other names for the same cases, so
 * those are mapped too.
 */
export function mediaErrorCode(err) {
  switch (err?.name) {
    case 'NotAllowedError':
    case 'PermissionDeniedError':
    case 'SecurityError':
      return 'permission-denied';
    case 'NotFoundError':
    case 'DevicesNotFoundError':
      return 'no-device';
    case 'OverconstrainedError':
    case 'ConstraintNotSatisfiedError':
      return 'overconstrained';
    case 'NotReadableError':
    case 'TrackStartError':
    case 'AbortError':
      return 'device-in-use';
    default:
      return 'generic';
  }
}

// After a refusal we only retry a single device whose permission is already granted: asking again for
// something the person just refused would be rude (and Firefox would show the prompt again).
async function grantedKinds() {
  const granted = new Set();
  const permissions = globalThis.navigator?.permissions;
  if (!permissions?.query) return granted;
  for (const [kind, name] of [['audio', 'microphone'], ['video', 'camera']]) {
    try {
      const status = await permissions.query({ name });
      if (status.state === 'granted') granted.add(kind);
    } catch {
      /* this browser can't tell; treat as not granted */
    }
  }
  return granted;
}

function isOverconstrained(err) {
  return mediaErrorCode(err) === 'overconstrained';
}

/** Our constraints for one kind ('audio' | 'video'), on exactly `deviceId` when one is given. */
function constraintsFor(kind, deviceId = null) {
  const base = kind === 'audio' ? AUDIO : VIDEO;
  return deviceId ? { ...base, deviceId: { exact: deviceId } } : base;
}

/**
 * Ask for camera and microphone. Never throws.
 *
 * `choice` is {audio?, video?}: device ids chosen earlier (see loadDeviceChoice). When a chosen
 * device is gone, or a camera can't give the size we ask for (OverconstrainedError), we ask once more
 * without device ids and sizes before falling back to single devices.
 *
 * Resolves to `{stream, error}`: `stream` is a MediaStream with whatever works (both, only the
 * microphone, only the camera) or null when nothing does (the person can still join to watch and
 * listen); `error` is the message code of the first failure, or null when everything worked.
 */
export async function getLocalMedia(mediaDevices = globalThis.navigator?.mediaDevices, choice = {}) {
  // mediaDevices is missing outside secure contexts (plain http on a non-localhost address).
  if (!mediaDevices || typeof mediaDevices.getUserMedia !== 'function') {
    return { stream: null, error: 'insecure-context' };
  }
  let firstError;
  try {
    const constraints = { audio: constraintsFor('audio', choice?.audio), video: constraintsFor('video', choice?.video) };
    return { stream: await mediaDevices.getUserMedia(constraints), error: null };
  } catch (err) {
    firstError = err;
  }
  if (isOverconstrained(firstError)) {
    try {
      // AUDIO holds only preferences (it can't overconstrain); the camera without size or frame rate.
      return { stream: await mediaDevices.getUserMedia({ audio: AUDIO, video: true }), error: null };
    } catch (err) {
      firstError = err;
    }
  }
  const code = mediaErrorCode(firstError);
  let fallbacks = [{ audio: AUDIO }, { video: VIDEO }];
  if (code === 'permission-denied') {
    const granted = await grantedKinds();
    fallbacks = fallbacks.filter((c) => granted.has(Object.keys(c)[0]));
  }
  for (const constraints of fallbacks) {
    try {
      return { stream: await mediaDevices.getUserMedia(constraints), error: code };
    } catch {
      /* try the next device on its own */
    }
  }
  return { stream: null, error: code };
}

/**
 * One device of `kind` ('audio' | 'video'), exactly `deviceId`: for switching camera or microphone.
 * Never throws. On OverconstrainedError it asks once more for the same device without our size
 * preferences (the person chose that device, so we never quietly hand them another one).
 * Resolves to `{track, error}`: a live MediaStreamTrack, or null and the message code.
 */
export async function getDevice(kind, deviceId, mediaDevices = globalThis.navigator?.mediaDevices) {
  if (!mediaDevices || typeof mediaDevices.getUserMedia !== 'function') {
    return { track: null, error: 'insecure-context' };
  }
  const attempts = [constraintsFor(kind, deviceId)];
  if (deviceId) attempts.push({ deviceId: { exact: deviceId } });
  let error = null;
  for (const constraints of attempts) {
    try {
      const stream = await mediaDevices.getUserMedia({ [kind]: constraints });
      const track = firstTrack(stream, kind);
      if (track) return { track, error: null };
      stopStream(stream);
      return { track: null, error: 'generic' };
    } catch (err) {
      error = err;
      if (!isOverconstrained(err)) break;
    }
  }
  return { track: null, error: mediaErrorCode(error) };
}

// The camera and microphone someone chose on the pre-join screen, kept for their next visit. Only
// the browser's device ids: random per site, they say nothing about the person.
export const DEVICE_CHOICE_KEY = 'kijkmee.devices';
const DEVICE_ID_MAX = 512;

// Merely reading `localStorage` throws where storage is blocked, e.g. in an iframe on another site
// (embedding) when the browser blocks third-party storage: so not in a default parameter, outside the try.
function defaultStorage() {
  try {
    return globalThis.localStorage ?? null;
  } catch {
    return null;
  }
}

/** The remembered choice, {audio?, video?} device ids; empty when none or storage is blocked. */
export function loadDeviceChoice(storage = defaultStorage()) {
  try {
    const parsed = JSON.parse(storage?.getItem(DEVICE_CHOICE_KEY) ?? 'null');
    const choice = {};
    for (const kind of ['audio', 'video']) {
      const id = parsed?.[kind];
      if (typeof id === 'string' && id.length > 0 && id.length <= DEVICE_ID_MAX) choice[kind] = id;
    }
    return choice;
  } catch {
    return {};
  }
}

/** Remember `deviceId` for `kind` ('audio' | 'video'); a failure only means it isn't remembered. */
export function saveDeviceChoice(kind, deviceId, storage = defaultStorage()) {
  if (kind !== 'audio' && kind !== 'video') return;
  try {
    const choice = loadDeviceChoice(storage);
    if (deviceId) choice[kind] = String(deviceId).slice(0, DEVICE_ID_MAX);
    else delete choice[kind];
    storage?.setItem(DEVICE_CHOICE_KEY, JSON.stringify(choice));
  } catch {
    /* storage blocked (private mode, sandboxed embed): chosen for this visit only */
  }
}

/** Stop every track so the camera light goes off and the devices are released. */
export function stopStream(stream) {
  if (!stream) return;
  for (const track of stream.getTracks()) track.stop();
}

/** The first track of a kind ('audio' | 'video'), or null. */
export function firstTrack(stream, kind) {
  if (!stream) return null;
  return (kind === 'audio' ? stream.getAudioTracks() : stream.getVideoTracks())[0] ?? null;
}
