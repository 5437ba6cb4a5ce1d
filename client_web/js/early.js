// Started the moment the call page's HTML arrives: room.html loads this module with `async`, so it runs
// as soon as it and media.js are here, without waiting for the page's other modules or the end of the
// document. Camera and microphone start at once (they take a while), and the Socket.IO connection
// opens as soon as the library is here, so that "Join" finds it ready. room.js imports this same
// module instance (same URL) and picks both up. Nothing is sent until the person joins. The only DOM
// it reads is the room's status in the page's <meta name="kijkmee-room">.

import { getLocalMedia, loadDeviceChoice } from './media.js';

const ROOM_ID_RE = /^[A-Za-z0-9_-]{22,64}$/;

/** The room id of a call page path `/r/<id>`, or null when the link is broken. */
export function parseRoomId(pathname) {
  const match = /^\/r\/([^/]+)\/?$/.exec(pathname);
  if (!match) return null;
  let id;
  try {
    id = decodeURIComponent(match[1]);
  } catch {
    return null;
  }
  return ROOM_ID_RE.test(id) ? id : null;
}

/** This page's room id, or null on a broken link. */
export const roomId = parseRoomId(globalThis.location?.pathname ?? '');

/**
 * The room's status as the server wrote it into the page (`<meta name="kijkmee-room">`, the answer
 * GET /r/<room>/status would give), or undefined when it isn't there (the server's lookup failed) or
 * can't be read. The meta element comes before this script in the page, so it is always parsed by now.
 */
function statusInPage() {
  const text = globalThis.document?.querySelector('meta[name="kijkmee-room"]')?.getAttribute('content');
  if (!text) return undefined;
  try {
    const status = JSON.parse(text);
    return status && typeof status === 'object' ? status : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The room's status ({state, ask, …} or null when it can't be had): from the page itself, else from
 * GET /r/<room>/status. The join form shows the fields the room asks for before the person types.
 */
export const roomStatus = roomId
  ? (() => {
      const inPage = statusInPage();
      if (inPage !== undefined) return Promise.resolve(inPage);
      return fetch(`/r/${encodeURIComponent(roomId)}/status`, { cache: 'no-store', credentials: 'same-origin' })
        .then((response) => (response.ok ? response.json() : null))
        .catch(() => null);
    })()
  : null;

/**
 * The page's first getUserMedia ({stream, error}, see media.js), already under way, with the camera
 * and microphone chosen on an earlier visit; null on a broken link, where we don't even ask for the
 * camera. It starts once the status says the link still works (at once when the page carries it): on an
 * expired link the camera is never asked for and this resolves to {stream: null, error: null}. A
 * status that can't be had doesn't hold the camera back.
 */
export const firstMedia = roomId
  ? roomStatus.then((status) =>
      status?.state === 'expired' ? { stream: null, error: null } : getLocalMedia(undefined, loadDeviceChoice()),
    )
  : null;

/** Options of every Socket.IO connection the call page opens: WebSocket first saves a round trip. */
export const SOCKET_OPTIONS = { transports: ['websocket', 'polling'] };

let earlySocket = null;
let earlySocketFailed = false;
let socketTaken = false;

if (roomId) {
  import('/vendor/socket.io.esm.min.js')
    .then(({ io }) => {
      if (socketTaken) return; // room.js ran first and opened its own
      earlySocket = io({ ...SOCKET_OPTIONS });
      earlySocket.on('connect_error', () => {
        earlySocketFailed = true;
      });
    })
    .catch(() => {
      /* room.js imports the library too and opens the connection itself */
    });
}

/**
 * Hand the early connection over (once): `{socket, failed}` where `failed` tells that it has failed
 * to connect at least once, or null when it isn't open yet (then it never will be: the caller opens
 * its own).
 */
export function takeFirstSocket() {
  socketTaken = true;
  const socket = earlySocket;
  earlySocket = null;
  return socket ? { socket, failed: earlySocketFailed } : null;
}
