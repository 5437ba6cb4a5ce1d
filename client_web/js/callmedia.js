// Changing what we send while in the call: the camera really off (and back on), sharing the screen,
// another camera or microphone. No DOM code here: incall.js has the buttons.
//
// One rule keeps this simple: the page's local MediaStream always holds exactly the tracks we send
// (at most one audio and one video track). The self tile shows that stream, the mesh adds its tracks
// to peers that join later, and every change here swaps the track in the stream and on the mesh's
// senders (Mesh.replaceTrack) together. While sharing, the stream's video track is the screen.
//
// The camera off is off: the track is stopped (the camera light goes out) and the senders send
// nothing. Switching it on opens the camera again with the constraints it was first opened with.
// While sharing the screen the camera is released too; it comes back when sharing stops, unless it
// was switched off meanwhile.

import { mediaErrorCode } from './media.js';

export class CallMedia {
  #getStream;
  #mediaDevices;
  #onChange;
  #onError;
  #isMicMuted;
  #mesh = null;
  #cameraOff = false; // what the person chose; the camera may still be on its way or gone
  #camera = null; // {constraints, deviceId} the camera was opened with: null if we never had one
  #screen = null; // the shared screen's video track, while sharing
  #queue = Promise.resolve(); // changes run one after the other, in the order they were asked for

  /**
   * @param {object} options
   * @param {() => MediaStream|null} options.getStream the page's local stream
   * @param {() => void} options.onChange after every change of tracks or state
   * @param {(code: string) => void} options.onError a message code for the person (see i18n `msg.*`)
   * @param {() => boolean} options.isMicMuted a new microphone starts muted when this says so
   */
  constructor({ getStream, onChange, onError, isMicMuted = () => false, mediaDevices = globalThis.navigator?.mediaDevices }) {
    this.#getStream = getStream;
    this.#onChange = onChange;
    this.#onError = onError;
    this.#isMicMuted = isMicMuted;
    this.#mediaDevices = mediaDevices;
  }

  get cameraOff() {
    return this.#cameraOff;
  }

  /** 'on' | 'off' | 'none' (no camera to switch: none found, or not allowed). */
  get cameraState() {
    if (this.#cameraTrack()) return 'on';
    if (!this.#camera) return 'none';
    return this.#cameraOff ? 'off' : 'on';
  }

  get sharing() {
    return Boolean(this.#screen);
  }

  get canShare() {
    return typeof this.#mediaDevices?.getDisplayMedia === 'function';
  }

  /** The device id of the camera we use (or will use when it comes back on), or null. */
  get cameraDeviceId() {
    return this.#cameraTrack()?.getSettings?.().deviceId ?? this.#camera?.deviceId ?? null;
  }

  get microphoneDeviceId() {
    return this.#stream()?.getAudioTracks()[0]?.getSettings?.().deviceId ?? null;
  }

  /**
   * Before a mesh is built on `stream` (null: we send nothing yet): apply the camera choice to it, so a
   * camera switched off before a rejoin stays off. Returns the stream the mesh must use.
   */
  prepare(stream) {
    const camera = this.#cameraTrack(stream);
    if (camera) this.#remember(camera);
    if (camera && this.#cameraOff) {
      stream.removeTrack(camera);
      camera.stop();
    }
    return stream ?? new MediaStream();
  }

  /** The mesh that sends our tracks (null when we are not in a call). */
  setMesh(mesh) {
    this.#mesh = mesh;
  }

  setCameraOff(off) {
    this.#cameraOff = Boolean(off);
    const stream = this.#stream();
    const camera = this.#cameraTrack();
    // Off is immediate: the light goes out now, not after whatever is queued.
    if (this.#cameraOff && camera) {
      this.#remember(camera);
      stream.removeTrack(camera);
      camera.stop();
      this.#onChange();
    }
    return this.#enqueue(() => this.#applyVideo());
  }

  /**
   * Ask the browser for a screen to share, then send it instead of the camera. Called straight from the
   * click: browsers only show their picker during a user gesture.
   */
  async startSharing() {
    if (this.#screen || !this.canShare) return;
    let stream;
    try {
      stream = await this.#mediaDevices.getDisplayMedia({ video: true, audio: false });
    } catch (err) {
      // NotAllowedError is also "the person closed the picker": that needs no message.
      if (err?.name !== 'NotAllowedError' && err?.name !== 'AbortError') this.#onError('share-failed');
      return;
    }
    const track = stream.getVideoTracks()[0];
    if (!track) return;
    if (this.#screen || !this.#stream()) {
      track.stop(); // a second click raced us, or the call ended while the picker was open
      return;
    }
    // Text stays sharp: the encoder lowers the frame rate rather than the resolution.
    if ('contentHint' in track) track.contentHint = 'detail';
    // The browser's own "Stop sharing" bar, or the shared window closing, ends the track.
    track.addEventListener('ended', () => {
      if (this.#screen === track) this.stopSharing();
    });
    this.#screen = track;
    await this.#enqueue(() => this.#applyVideo());
  }

  stopSharing() {
    const screen = this.#screen;
    if (!screen) return Promise.resolve();
    this.#screen = null;
    this.#stream()?.removeTrack(screen);
    screen.stop();
    return this.#enqueue(() => this.#applyVideo());
  }

  /** Use another camera ('videoinput') or microphone ('audioinput'). */
  switchDevice(kind, deviceId) {
    if (!deviceId) return Promise.resolve();
    if (kind === 'videoinput') {
      return this.#enqueue(async () => {
        this.#camera = { constraints: this.#camera?.constraints ?? {}, deviceId, exact: true };
        const camera = this.#cameraTrack();
        if (camera?.getSettings?.().deviceId === deviceId) return this.#onChange();
        if (camera) {
          // Phones can't open a second camera while one is open: release first.
          this.#stream().removeTrack(camera);
          camera.stop();
        }
        // Opens the chosen camera, unless it is switched off or the screen is shared (then it is
        // the one that comes back).
        await this.#applyVideo();
      });
    }
    if (kind === 'audioinput') return this.#enqueue(() => this.#switchMicrophone(deviceId));
    return Promise.resolve();
  }

  /** The call is over for this page: stop sharing without bringing the camera back. */
  end() {
    const screen = this.#screen;
    this.#screen = null;
    const stream = this.#stream();
    if (screen) {
      stream?.removeTrack(screen);
      screen.stop();
    }
    this.#mesh = null;
  }

  // ------------------------------------------------------------------------------------------

  #stream() {
    return this.#getStream() ?? null;
  }

  #cameraTrack(stream = this.#stream()) {
    // An ended track (a camera unplugged) is no camera: switching on opens it again.
    return stream?.getVideoTracks().find((track) => track !== this.#screen && track.readyState !== 'ended') ?? null;
  }

  #remember(camera) {
    const constraints = { ...(camera.getConstraints?.() ?? {}) };
    delete constraints.deviceId;
    this.#camera = { constraints, deviceId: camera.getSettings?.().deviceId ?? null, exact: false };
  }

  #enqueue(task) {
    const run = this.#queue.then(task).catch(() => {});
    this.#queue = run;
    return run;
  }

  // Bring the stream's video track (and the senders) in line with what is wanted: the screen while
  // sharing, else the camera unless it is switched off.
  async #applyVideo() {
    const stream = this.#stream();
    if (!stream) return this.#onChange();
    let want = this.#screen;
    const camera = this.#cameraTrack();
    if (want || this.#cameraOff) {
      if (camera) {
        this.#remember(camera);
        stream.removeTrack(camera);
        camera.stop();
      }
    } else if (camera) {
      want = camera;
    } else if (this.#camera) {
      want = await this.#openCamera();
      // The choice may have changed while the camera was opening.
      if (want && (this.#screen || this.#cameraOff || !this.#stream())) {
        want.stop();
        return this.#applyVideo();
      }
    }
    await this.#setTrack(stream, 'video', want);
  }

  async #openCamera() {
    const { constraints, deviceId, exact } = this.#camera;
    const video = { ...constraints };
    if (deviceId) video.deviceId = exact ? { exact: deviceId } : { ideal: deviceId };
    try {
      const stream = await this.#mediaDevices.getUserMedia({ video });
      return stream.getVideoTracks()[0] ?? null;
    } catch (err) {
      this.#cameraOff = true; // say it as it is: the camera is off
      this.#onError(mediaErrorCode(err));
      return null;
    }
  }

  async #switchMicrophone(deviceId) {
    const stream = this.#stream();
    if (!stream) return;
    const old = stream.getAudioTracks()[0] ?? null;
    if (old?.getSettings?.().deviceId === deviceId) return;
    const audio = { ...(old?.getConstraints?.() ?? {}), deviceId: { exact: deviceId } };
    let track;
    try {
      track = (await this.#mediaDevices.getUserMedia({ audio })).getAudioTracks()[0];
    } catch (err) {
      // Some devices open one microphone at a time: release the old one and try once more.
      if (!old || mediaErrorCode(err) !== 'device-in-use') return this.#onError(mediaErrorCode(err));
      old.stop();
      try {
        track = (await this.#mediaDevices.getUserMedia({ audio })).getAudioTracks()[0];
      } catch (again) {
        this.#onError(mediaErrorCode(again));
        return;
      }
    }
    if (!track) return;
    // Muted stays muted: the new track is silenced before anything is sent from it.
    track.enabled = old ? old.enabled : !this.#isMicMuted();
    await this.#setTrack(stream, 'audio', track);
    old?.stop();
  }

  async #setTrack(stream, kind, track) {
    const current = kind === 'audio' ? stream.getAudioTracks() : stream.getVideoTracks();
    for (const old of current) if (old !== track) stream.removeTrack(old);
    if (track && !current.includes(track)) stream.addTrack(track);
    this.#onChange();
    await this.#mesh?.replaceTrack(kind, track);
  }
}
