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
    case 'OverconstrainedError':
    case 'ConstraintNotSatisfiedError':
      return 'no-device';
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

/**
 * Ask for camera and microphone. Never throws.
 *
 * Resolves to `{stream, error}`: `stream` is a MediaStream with whatever works (both, only the
 * microphone, only the camera) or null when nothing does (the person can still join to watch and
 * listen); `error` is the message code of the first failure, or null when everything worked.
 */
export async function getLocalMedia(mediaDevices = globalThis.navigator?.mediaDevices) {
  // mediaDevices is missing outside secure contexts (plain http on a non-localhost address).
  if (!mediaDevices || typeof mediaDevices.getUserMedia !== 'function') {
    return { stream: null, error: 'insecure-context' };
  }
  let firstError;
  try {
    return { stream: await mediaDevices.getUserMedia({ audio: AUDIO, video: VIDEO }), error: null };
  } catch (err) {
    firstError = err;
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
