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
/** Height, in lines, of the first video frames sent to a peer (see the top of this file). */
export const FIRST_FRAMES_MAX_HEIGHT = 180;
/** How long after a connection first comes up its video goes back to the camera's own size. */
export const FULL_SIZE_AFTER_MS = 2000;

/** We are polite toward a peer when our id sorts after theirs (both sides compute the same answer). */
export function isPolite(selfId, peerId) {
  return String(selfId) > String(peerId);
}

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
      restarted: false, // restartIce() is tried once per peer
      failed: false,
      closed: false,
      pendingCandidates: [], // candidates that arrived before any remote description
      queue: Promise.resolve(), // incoming signaling for this peer, handled strictly in order
      remoteStream: null,
      mediaAttached: false,
      waitTimer: null, // waiting for the newcomer's first offer
      restartTimer: null, // polite side's delayed ICE restart
      smallSenders: [], // video senders still scaled down for the first frames
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
    if (connectionState === 'failed' || iceConnectionState === 'failed') {
      const retrying = !peer.restarted;
      if (!peer.failed) {
        peer.failed = true;
        this.#emit('failed', { peerId: peer.id, retrying });
      }
      if (retrying && !peer.restartTimer) {
        // New ICE credentials may find a path the first round missed (a network change, a relay
        // allocation that timed out). Only once: endless restarts would just hide the problem.
        // Both sides usually see the failure; the impolite one restarts at once and the polite one
        // only if nothing has happened after a while, so the two restart offers don't collide.
        const restart = () => {
          peer.restartTimer = null;
          if (peer.closed || peer.restarted) return;
          peer.restarted = true;
          try {
            pc.restartIce();
          } catch {
            /* older browsers: nothing more to try */
          }
        };
        if (peer.polite) peer.restartTimer = setTimeout(restart, POLITE_RESTART_DELAY_MS);
        else restart();
      }
    } else if (peer.failed && (connectionState === 'connected' || iceConnectionState === 'connected')) {
      peer.failed = false;
      if (peer.restartTimer) {
        clearTimeout(peer.restartTimer);
        peer.restartTimer = null;
      }
      this.#emit('recovered', { peerId: peer.id });
    }
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
        peer.restarted = true;
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
