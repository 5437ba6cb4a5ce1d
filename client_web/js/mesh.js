// Full-mesh WebRTC: one RTCPeerConnection per other participant, negotiated with the W3C/MDN
// "perfect negotiation" pattern. No DOM and no socket code: signaling goes out through the `send`
// function given to the constructor, and comes in through handleOffer/handleAnswer/handleCandidate.
//
// Who offers first: the newcomer. When someone joins, the people already in the call create their
// connection to the newcomer at once but attach their tracks only when the newcomer's offer arrives
// (or after NEWCOMER_OFFER_WAIT_MS if it never does). Perfect negotiation alone would cope with both
// sides offering at once, but in Chromium (seen with 156) the polite side's implicit rollback, when it
// lands while its own offer has only just started gathering ICE candidates, leaves that connection
// gathering forever without producing a candidate: the link never comes up. Letting one side offer
// first avoids that glare on every join; perfect negotiation still covers all later renegotiation.
//
// First frames are small. While WebRTC's bandwidth estimate is still at its start value, its encoder
// drops a camera-sized frame, asks for a smaller picture and drops again, a frame interval each time,
// before the first picture leaves (seen: 150-300 ms at 960x540 in Chromium 156). So every video sender
// starts scaled down to FIRST_FRAMES_MAX_HEIGHT lines, which the encoder takes at once, and returns to
// the camera's own size FULL_SIZE_AFTER_MS after the connection is up; from then on WebRTC's own
// bandwidth adaptation picks the size, as it would have anyway.
//
// Privacy: SDP and candidates hold IP addresses, so nothing here logs them or puts them in events;
// events carry peer ids, states and error names only.

/** How long someone already in the call waits for the newcomer's offer before offering itself. */
export const NEWCOMER_OFFER_WAIT_MS = 4000;
/** How long the polite side waits for the impolite side's ICE restart before restarting itself. */
export const POLITE_RESTART_DELAY_MS = 2500;
/** How long a connection may stay 'disconnected' before we restart ICE. */
export const DISCONNECTED_RESTART_MS = 2000;
/** At most one ICE restart toward a peer in this time (a dead network is not flooded with offers). */
export const RESTART_INTERVAL_MS = 8000;
/** Height, in lines, of the first video frames sent to a peer (see the top of this file). */
export const FIRST_FRAMES_MAX_HEIGHT = 180;
/** How long after a connection first comes up its video goes back to the camera's own size. */
export const FULL_SIZE_AFTER_MS = 2000;

/** We are polite toward a peer when our id sorts after theirs (both sides compute the same answer). */
export function isPolite(selfId, peerId) {
  return String(selfId) > String(peerId);
}

const isBroken = (pc) => pc.connectionState === 'failed' || pc.iceConnectionState === 'failed';
const isShaky = (pc) => pc.connectionState === 'disconnected' || pc.iceConnectionState === 'disconnected';

export class Mesh {
  #selfId;
  #config;
  #localStream;
  #send;
  #PeerConnection;
  #MediaStream;
  #peers = new Map(); // peer id → per-peer negotiation state (see #createPeer)
  #listeners = new Map();
  #closed = false;

  /**
   * @param {object} options
   * @param {string} options.selfId our peer id from the join ack
   * @param {RTCIceServer[]} [options.iceServers] only what the server handed out: never public STUN
   * @param {'all'|'relay'} [options.iceTransportPolicy]
   * @param {MediaStream|null} [options.localStream] tracks to send (null: receive only)
   * @param {(event: string, payload: object) => unknown} options.send emits a signaling event
   * @param {Map<string, RTCPeerConnection>} [options.pcs] kept equal to the live connections
   */
  constructor({
    selfId,
    iceServers = [],
    iceTransportPolicy = 'all',
    localStream = null,
    send,
    pcs = new Map(),
    PeerConnection = globalThis.RTCPeerConnection,
    MediaStreamImpl = globalThis.MediaStream,
  }) {
    this.#selfId = selfId;
    this.#config = {
      iceServers,
      iceTransportPolicy: iceTransportPolicy === 'relay' ? 'relay' : 'all',
      // One ICE/DTLS transport for audio and video from the start, instead of one each until the answer
      // says BUNDLE: half the candidates to signal and half the relay allocations while a call starts.
      bundlePolicy: 'max-bundle',
    };
    this.#localStream = localStream;
    this.#send = send;
    this.pcs = pcs;
    this.#PeerConnection = PeerConnection;
    this.#MediaStream = MediaStreamImpl;
  }

  /**
   * Listen to `peer-added` {peerId}, `peer-removed` {peerId}, `track` {peerId, stream, track},
   * `state` {peerId, connectionState, iceConnectionState}, `failed` {peerId, retrying},
   * `recovered` {peerId}, `error` {peerId, stage, name}.
   */
  on(type, fn) {
    if (!this.#listeners.has(type)) this.#listeners.set(type, new Set());
    this.#listeners.get(type).add(fn);
    return () => this.#listeners.get(type)?.delete(fn);
  }

  #emit(type, detail) {
    for (const fn of this.#listeners.get(type) ?? []) {
      try {
        fn(detail);
      } catch {
        /* a broken listener must not break negotiation */
      }
    }
  }

  #signal(event, payload) {
    try {
      Promise.resolve(this.#send(event, payload)).catch(() => {});
    } catch {
      /* signaling down: the socket layer reports that on its own */
    }
  }

  has(peerId) {
    return this.#peers.has(peerId);
  }

  get peerIds() {
    return [...this.#peers.keys()];
  }

  /**
   * Start a connection to a peer we just learned about. Adding a known peer does nothing.
   *
   * `initiate: true` when we are the newcomer (the peer came in the join ack): our tracks go on at
   * once and we send the first offer. `initiate: false` when the peer is the newcomer (`peer-joined`,
   * or an offer from someone we hadn't heard of): we wait for their offer.
   */
  addPeer(peerId, { initiate = false } = {}) {
    if (this.#closed || typeof peerId !== 'string' || !peerId || peerId === this.#selfId) return;
    if (this.#peers.has(peerId)) return;
    const peer = this.#createPeer(peerId);
    if (initiate) {
      this.#attachLocalMedia(peer, { offerEverything: true });
    } else {
      peer.waitTimer = setTimeout(() => {
        peer.waitTimer = null;
        if (!peer.closed) this.#attachLocalMedia(peer, { offerEverything: true });
      }, NEWCOMER_OFFER_WAIT_MS);
    }
  }

  // Put our tracks on the connection (once). As the offerer we also ask to *receive* audio and video
  // we don't send ourselves, so someone without a camera or microphone still gets the others' media
  // and the first offer always exists. As the answerer (inside an offer) the offer's transceivers are
  // reused by addTrack, so no second round of negotiation is needed.
  #attachLocalMedia(peer, { offerEverything }) {
    if (peer.mediaAttached) return;
    peer.mediaAttached = true;
    if (peer.waitTimer) {
      clearTimeout(peer.waitTimer);
      peer.waitTimer = null;
    }
    const tracks = this.#localStream ? this.#localStream.getTracks() : [];
    for (const track of tracks) {
      const sender = peer.pc.addTrack(track, this.#localStream);
      peer.senders.set(track.kind, sender);
      if (track.kind === 'video') this.#startSmall(peer, sender, track);
    }
    if (offerEverything) {
      for (const kind of ['audio', 'video']) {
        if (!tracks.some((track) => track.kind === kind)) peer.pc.addTransceiver(kind, { direction: 'recvonly' });
      }
    }
  }

  // Scale the sender down to FIRST_FRAMES_MAX_HEIGHT lines until #fullSize. Best effort: a browser
  // that can't scale senders just starts at full size.
  #startSmall(peer, sender, track) {
    const height = track.getSettings?.().height ?? 0;
    if (height <= FIRST_FRAMES_MAX_HEIGHT || typeof sender.getParameters !== 'function') return;
    this.#setScale(sender, height / FIRST_FRAMES_MAX_HEIGHT);
    peer.smallSenders.push(sender);
  }

  #fullSize(peer) {
    peer.fullSizeTimer = null;
    if (peer.closed) return;
    for (const sender of peer.smallSenders.splice(0)) this.#setScale(sender, 1);
  }

  #setScale(sender, scaleResolutionDownBy) {
    try {
      const params = sender.getParameters();
      if (!params.encodings || params.encodings.length === 0) return;
      for (const encoding of params.encodings) encoding.scaleResolutionDownBy = scaleResolutionDownBy;
      sender.setParameters(params).catch(() => {});
    } catch {
      /* no scaling: full size from the start */
    }
  }

  #createPeer(peerId) {
    const pc = new this.#PeerConnection(this.#config);
    const peer = {
      id: peerId,
      pc,
      polite: isPolite(this.#selfId, peerId),
      makingOffer: false,
      ignoreOffer: false,
      isSettingRemoteAnswerPending: false,
      lastRestartAt: -Infinity, // Date.now() of our last ICE restart toward this peer
      disconnectTimer: null, // 'disconnected' for a while → restart
      failed: false,
      closed: false,
      pendingCandidates: [], // candidates that arrived before any remote description
      queue: Promise.resolve(), // incoming signaling for this peer, handled strictly in order
      remoteStream: null,
      mediaAttached: false,
      waitTimer: null, // waiting for the newcomer's first offer
      restartTimer: null, // polite side's delayed ICE restart
      smallSenders: [], // video senders still scaled down for the first frames
      senders: new Map(), // 'audio' | 'video' → the sender that carries that media of ours to this peer
      fullSizeTimer: null, // brings smallSenders back to full size
    };
    this.#peers.set(peerId, peer);
    this.pcs.set(peerId, pc);

    pc.onnegotiationneeded = () => this.#negotiate(peer);
    pc.onicecandidate = ({ candidate }) => {
      // A null candidate only means "gathering done"; the protocol allows it but nobody needs it.
      if (peer.closed || !candidate) return;
      const json = typeof candidate.toJSON === 'function' ? candidate.toJSON() : candidate;
      this.#signal('candidate', {
        to: peerId,
        candidate: {
          candidate: json.candidate,
          sdpMid: json.sdpMid ?? null,
          sdpMLineIndex: json.sdpMLineIndex ?? null,
          usernameFragment: json.usernameFragment ?? null,
        },
      });
    };
    pc.ontrack = ({ track, streams }) => {
      if (peer.closed) return;
      // Senders that use addTrack(track, stream) give us their stream; keep one stream per peer anyway
      // so audio and video always end up in the same element.
      let stream = streams && streams[0];
      if (!stream) {
        peer.remoteStream ??= new this.#MediaStream();
        if (!peer.remoteStream.getTracks().includes(track)) peer.remoteStream.addTrack(track);
        stream = peer.remoteStream;
      }
      this.#emit('track', { peerId, stream, track });
    };
    const onState = () => this.#onStateChange(peer);
    pc.oniceconnectionstatechange = onState;
    pc.onconnectionstatechange = onState;

    this.#emit('peer-added', { peerId });
    return peer;
  }

  async #negotiate(peer) {
    if (peer.closed) return;
    try {
      peer.makingOffer = true;
      await peer.pc.setLocalDescription();
      if (peer.closed) return;
      const { type, sdp } = peer.pc.localDescription;
      if (type === 'offer' || type === 'answer') this.#signal(type, { to: peer.id, sdp });
    } catch (err) {
      if (!peer.closed) this.#emit('error', { peerId: peer.id, stage: 'offer', name: err?.name ?? 'Error' });
    } finally {
      peer.makingOffer = false;
    }
  }

  #onStateChange(peer) {
    if (peer.closed) return;
    const { pc } = peer;
    const connectionState = pc.connectionState;
    const iceConnectionState = pc.iceConnectionState;
    this.#emit('state', { peerId: peer.id, connectionState, iceConnectionState });
    if (connectionState === 'connected' && peer.smallSenders.length > 0 && !peer.fullSizeTimer) {
      peer.fullSizeTimer = setTimeout(() => this.#fullSize(peer), FULL_SIZE_AFTER_MS);
    }
    if (isBroken(pc)) {
      if (!peer.failed) {
        peer.failed = true;
        this.#emit('failed', { peerId: peer.id, retrying: true });
      }
      this.#scheduleRestart(peer);
    } else if (isShaky(pc)) {
      // 'disconnected' often heals by itself within a second or two (a lost burst of packets); when it
      // doesn't, the path is gone (a network switch, a dead relay allocation) and only new candidates help.
      if (!peer.disconnectTimer) {
        peer.disconnectTimer = setTimeout(() => {
          peer.disconnectTimer = null;
          if (!peer.closed && (isShaky(peer.pc) || isBroken(peer.pc))) this.#scheduleRestart(peer);
        }, DISCONNECTED_RESTART_MS);
      }
    } else if (connectionState === 'connected' || iceConnectionState === 'connected' || iceConnectionState === 'completed') {
      this.#clearRestart(peer);
      if (peer.failed) {
        peer.failed = false;
        this.#emit('recovered', { peerId: peer.id });
      }
    }
  }

  // ICE restart: new ICE credentials, so both sides gather afresh and find whatever path exists now.
  // Both sides usually notice together; the impolite one restarts at once and the polite one only if
  // nothing has happened after a while, so the two restart offers don't collide. A restart that doesn't
  // help is tried again, at most once per RESTART_INTERVAL_MS, for as long as the peer is in the call.
  #scheduleRestart(peer) {
    if (peer.restartTimer || peer.closed) return;
    const sinceLast = Date.now() - peer.lastRestartAt;
    const wait = Math.max(0, RESTART_INTERVAL_MS - sinceLast) + (peer.polite ? POLITE_RESTART_DELAY_MS : 0);
    peer.restartTimer = setTimeout(() => this.#restart(peer), wait);
  }

  async #restart(peer) {
    peer.restartTimer = null;
    const { pc } = peer;
    if (peer.closed || !(isShaky(pc) || isBroken(pc))) return;
    peer.lastRestartAt = Date.now();
    try {
      // An offer of ours that was never answered (the other side was away) would hold the restart
      // back until it is; take it back first.
      if (pc.signalingState === 'have-local-offer') await pc.setLocalDescription({ type: 'rollback' });
      if (peer.closed) return;
      pc.restartIce(); // negotiationneeded → a new offer through perfect negotiation
    } catch {
      /* older browsers: nothing more to try */
    }
    // If this round doesn't bring the connection back, no state change may come to start the next one.
    this.#scheduleRestart(peer);
  }

  #clearRestart(peer) {
    clearTimeout(peer.restartTimer);
    clearTimeout(peer.disconnectTimer);
    clearTimeout(peer.disconnectTimer);
    peer.restartTimer = null;
    peer.disconnectTimer = null;
  }

  // Run `task` after earlier signaling from the same peer, so a candidate is never applied before the
  // description it belongs to.
  #enqueue(peerId, stage, task) {
    const peer = this.#peers.get(peerId);
    if (!peer) return Promise.resolve();
    peer.queue = peer.queue
      .then(() => (peer.closed ? undefined : task(peer)))
      .catch((err) => {
        if (!peer.closed) this.#emit('error', { peerId, stage, name: err?.name ?? 'Error' });
      });
    return peer.queue;
  }

  async #onDescription(peer, description) {
    const { pc } = peer;
    const readyForOffer =
      !peer.makingOffer && (pc.signalingState === 'stable' || peer.isSettingRemoteAnswerPending);
    const offerCollision = description.type === 'offer' && !readyForOffer;
    peer.ignoreOffer = !peer.polite && offerCollision;
    if (peer.ignoreOffer) return; // impolite: our own offer wins, theirs is dropped

    if (description.type === 'answer' && pc.signalingState !== 'have-local-offer') {
      return; // an answer to an offer we already rolled back: nothing to apply
    }
    peer.isSettingRemoteAnswerPending = description.type === 'answer';
    try {
      // For the polite side in a collision this rolls back our own offer implicitly.
      await pc.setRemoteDescription(description);
    } finally {
      peer.isSettingRemoteAnswerPending = false;
    }
    if (peer.closed) return;
    await this.#flushCandidates(peer);
    if (description.type === 'offer') {
      // An offer that restarts ICE means the other side is already on it.
      if (peer.restartTimer) {
        clearTimeout(peer.restartTimer);
        peer.restartTimer = null;
        peer.lastRestartAt = Date.now();
      }
      this.#attachLocalMedia(peer, { offerEverything: false });
      await pc.setLocalDescription();
      if (peer.closed) return;
      this.#signal('answer', { to: peer.id, sdp: pc.localDescription.sdp });
    }
  }

  // Candidates buffered before the first remote description may belong to an offer we ignored; those
  // fail by design, and one failure must not keep the rest from being applied.
  async #flushCandidates(peer) {
    const waiting = peer.pendingCandidates.splice(0);
    for (const candidate of waiting) {
      try {
        await peer.pc.addIceCandidate(candidate);
      } catch {
        /* stale candidate of an ignored offer */
      }
    }
  }

  async #addCandidate(peer, candidate) {
    try {
      await peer.pc.addIceCandidate(candidate);
    } catch (err) {
      // Candidates of an offer we ignored are expected to fail; anything else is worth reporting.
      if (!peer.ignoreOffer) throw err;
    }
  }

  /** An `offer` from the server: {from, sdp}. An offer from a peer we haven't heard of starts one. */
  handleOffer({ from, sdp } = {}) {
    if (this.#closed || typeof from !== 'string' || typeof sdp !== 'string') return Promise.resolve();
    this.addPeer(from, { initiate: false });
    return this.#enqueue(from, 'offer', (peer) => this.#onDescription(peer, { type: 'offer', sdp }));
  }

  /** An `answer` from the server: {from, sdp}. */
  handleAnswer({ from, sdp } = {}) {
    if (this.#closed || typeof sdp !== 'string') return Promise.resolve();
    return this.#enqueue(from, 'answer', (peer) => this.#onDescription(peer, { type: 'answer', sdp }));
  }

  /** A `candidate` from the server: {from, candidate}. A null candidate (end of candidates) is skipped. */
  handleCandidate({ from, candidate } = {}) {
    if (this.#closed || !candidate || typeof candidate.candidate !== 'string') return Promise.resolve();
    const init = {
      candidate: candidate.candidate,
      sdpMid: candidate.sdpMid ?? null,
      sdpMLineIndex: candidate.sdpMLineIndex ?? null,
    };
    if (candidate.usernameFragment) init.usernameFragment = candidate.usernameFragment;
    return this.#enqueue(from, 'candidate', async (peer) => {
      if (!peer.pc.remoteDescription) {
        peer.pendingCandidates.push(init);
        return;
      }
      await this.#addCandidate(peer, init);
    });
  }

  /**
   * Send `track` (null: nothing) as our `kind` media to every peer from now on: a camera that was
   * switched off or on, another microphone, a shared screen. Where we already send that kind the
   * sender's track is swapped (RTCRtpSender.replaceTrack: no renegotiation, the others keep the same
   * remote track and simply get other frames). Toward a peer we send nothing of that kind yet (we
   * joined without a camera) the transceiver that only receives starts sending too, which perfect
   * negotiation then renegotiates. Peers whose media isn't attached yet take the stream's tracks when
   * it is, so the caller keeps the stream given to the constructor in step (mesh.localStream).
   */
  async replaceTrack(kind, track) {
    const jobs = [];
    for (const peer of this.#peers.values()) {
      if (!peer.closed && peer.mediaAttached) jobs.push(this.#replaceTrackFor(peer, kind, track));
    }
    await Promise.all(jobs);
  }

  /** The stream our tracks are sent in (created on demand when the mesh was made without one). */
  get localStream() {
    this.#localStream ??= new this.#MediaStream();
    return this.#localStream;
  }

  async #replaceTrackFor(peer, kind, track) {
    let sender = peer.senders.get(kind);
    try {
      if (!sender) {
        if (!track) return;
        const idle = peer.pc
          .getTransceivers()
          .find((t) => t.currentDirection !== 'stopped' && t.receiver.track?.kind === kind && !t.sender.track &&
            (t.direction === 'recvonly' || t.direction === 'inactive'));
        if (!idle) {
          peer.senders.set(kind, peer.pc.addTrack(track, this.localStream)); // negotiationneeded follows
          return;
        }
        sender = idle.sender;
        peer.senders.set(kind, sender);
        // Same stream as our other media, so the other side shows it in the same tile.
        sender.setStreams?.(this.localStream);
        idle.direction = idle.direction === 'inactive' ? 'sendonly' : 'sendrecv'; // negotiationneeded follows
      }
      if (sender.track !== track) await sender.replaceTrack(track);
    } catch (err) {
      if (!peer.closed) this.#emit('error', { peerId: peer.id, stage: 'replace-track', name: err?.name ?? 'Error' });
    }
  }

  /** The peer left: close its connection. */
  removePeer(peerId) {
    const peer = this.#peers.get(peerId);
    if (!peer) return;
    peer.closed = true;
    clearTimeout(peer.waitTimer);
    clearTimeout(peer.restartTimer);
    clearTimeout(peer.fullSizeTimer);
    this.#peers.delete(peerId);
    if (this.pcs.get(peerId) === peer.pc) this.pcs.delete(peerId);
    const { pc } = peer;
    pc.onnegotiationneeded = pc.onicecandidate = pc.ontrack = null;
    pc.oniceconnectionstatechange = pc.onconnectionstatechange = null;
    try {
      pc.close();
    } catch {
      /* already closed */
    }
    this.#emit('peer-removed', { peerId });
  }

  /** Close every connection; the mesh can't be used afterwards. */
  close() {
    for (const peerId of [...this.#peers.keys()]) this.removePeer(peerId);
    this.#closed = true;
  }
}
