// The call page's side of embedding (docs/embedding.md): when a controller's own site shows this page in
// an iframe (made by /embed.js), tell that site what happens in the call and take its commands, by
// postMessage, with that site only. room.js announces events and runs commands; this module decides
// whom to trust. No DOM code beyond one body attribute.
//
// Whom we talk to. The embedding page names its own origin in our URL's fragment (#embed=<origin>; a
// fragment never reaches any server). We believe the claim only when
//   1. we really are framed (window.parent is another window),
//   2. the browser's own record of our parent (location.ancestorOrigins, Chromium and Safari) does not
//      contradict it, and
//   3. the controller listed that origin for this room (GET /r/<room>/status → embedOrigins). The
//      server's CSP frame-ancestors already keeps every other site from framing the page at all.
// Every message goes out with exactly that targetOrigin (never '*'): the browser drops it unless our
// parent really is that origin. Commands count only when they come from window.parent with that origin.
//
// What goes out: event names, random peer ids, counts, our own microphone/camera state and message
// codes. Never a name someone typed, never an address.
//
// An expired link has no list to check against (its status says nothing about the room). Its page
// still tells the claimed origin `ready` and `expired`, which carry nothing, and takes no commands.

/** Messages of this protocol carry `kijkmee: PROTOCOL_VERSION`. */
export const PROTOCOL_VERSION = 1;

/** What the embedding page may ask for. */
export const COMMANDS = Object.freeze(['mute', 'unmute', 'camera-off', 'camera-on', 'leave']);

/** The https origin the embedding page claims in our fragment (`#embed=<origin>`), or null. */
export function claimedHostOrigin(hash) {
  let value;
  try {
    value = new URLSearchParams(String(hash ?? '').replace(/^#/, '')).get('embed');
  } catch {
    return null;
  }
  if (!value) return null;
  let url;
  try {
    url = new URL(value);
  } catch {
    return null;
  }
  // Exactly an origin, as browsers write it: no path, no user, no trailing slash.
  return url.protocol === 'https:' && url.origin === value ? value : null;
}

/** False when the browser's record of our parent's origin contradicts `origin`; true where it keeps none
 *  (Firefox) or hides it ('null', e.g. under a no-referrer policy). */
export function parentMayBe(origin, ancestorOrigins = globalThis.location?.ancestorOrigins) {
  if (!ancestorOrigins || ancestorOrigins.length === 0) return true;
  const parent = ancestorOrigins[0];
  return parent === 'null' || parent === origin;
}

/** Whether the room's status lets `origin` drive the call: an open link that lists it. */
export function allowedByStatus(status, origin) {
  return status?.state === 'open' && Array.isArray(status.embedOrigins) && status.embedOrigins.includes(origin);
}

/**
 * Start the bridge when this page is framed; a no-op otherwise.
 *
 *   roomStatus  promise of GET /r/<room>/status (or null)
 *   subscribe   fn(listener) → unsubscribe; listener(event, data) for every room event
 *   command     fn(name) runs one of COMMANDS
 *   state       fn() → the page's state (window.kijkmee.state)
 *
 * Returns true when the page is framed by a page that made a claim we may check, false otherwise.
 */
export function startEmbedBridge({ roomStatus, subscribe, command, state }) {
  const parent = window.parent;
  if (!parent || parent === window) return false;
  // Framed by whoever: our home page can't open inside someone else's frame (its CSP forbids it), so
  // the page hides links to it (app.css).
  document.body.dataset.embedded = 'true';
  const host = claimedHostOrigin(window.location.hash);
  if (!host || !parentMayBe(host)) return false;

  const post = (event, data) => parent.postMessage({ kijkmee: PROTOCOL_VERSION, event, data: { ...data } }, host);
  const queued = [];
  let active = false;
  const unsubscribe = subscribe((event, data) => {
    if (active) post(event, data);
    else if (queued.length < 50) queued.push([event, data]);
  });

  Promise.resolve(roomStatus).then((status) => {
    const drives = allowedByStatus(status, host);
    if (!drives && status?.state !== 'expired') {
      unsubscribe(); // not listed, or we can't tell: say nothing
      queued.length = 0;
      return;
    }
    active = true;
    if (drives) {
      window.addEventListener('message', (event) => {
        if (event.source !== parent || event.origin !== host) return;
        const message = event.data;
        if (!message || typeof message !== 'object' || message.kijkmee !== PROTOCOL_VERSION) return;
        if (COMMANDS.includes(message.command)) command(message.command);
      });
    }
    post('ready', { state: state() });
    for (const [event, data] of queued.splice(0)) post(event, data);
  });
  return true;
}
