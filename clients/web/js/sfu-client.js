// VideoConf browser client for the SFU's signaling protocol (signaling/schema.json, version 1).
// Plain ES module, no build step: `import { SfuClient } from "/web/js/sfu-client.js"`.
//
// One WebSocket to the node's /signaling endpoint, one publisher RTCPeerConnection (the client
// offers, the SFU answers) and one subscriber RTCPeerConnection (the SFU offers, the client
// answers).  Camera video goes out as three RID simulcast encodings; the SFU forwards each
// subscriber the layer that fits the size it asks for with trackSettings().
//
// A lost signaling connection is repaired with reconnect(): the session is resumed while the node
// still holds it (media never stopped); when the node no longer knows it (it restarted, or the
// resume window passed) the client joins again with a fresh room token from the `tokenProvider`
// option, on new peer connections, and publishes the same local tracks again ("rejoined" event).

export const PROTOCOL_VERSION = 1;

// Lowest layer first, as the SFU numbers them.  Chromium sends all three only from a 720p capture.
export const SIMULCAST_ENCODINGS = [
  { rid: "q", scaleResolutionDownBy: 4, maxBitrate: 150_000 },
  { rid: "h", scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  { rid: "f", scaleResolutionDownBy: 1, maxBitrate: 1_500_000 },
];

export class SignalingError extends Error {
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.code = code;
  }
}

function gatheringComplete(pc, timeoutMs = 3000) {
  // The SFU takes full SDP (it accepts trickle too): on loopback and host-only candidates
  // gathering ends in milliseconds; a slow interface does not hold the offer for long.
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      pc.removeEventListener("icegatheringstatechange", check);
      clearTimeout(timer);
      resolve();
    };
    const check = () => pc.iceGatheringState === "complete" && done();
    const timer = setTimeout(done, timeoutMs);
    pc.addEventListener("icegatheringstatechange", check);
  });
}

export class SfuClient extends EventTarget {
  constructor(url, token, { iceServers = [], simulcast = SIMULCAST_ENCODINGS, tokenProvider = null } = {}) {
    super();
    this.url = url;
    this.token = token;
    this.tokenProvider = tokenProvider; // async () => a new room token, for joining again
    this.sessionLost = false;
    this.iceServers = iceServers;
    this.simulcast = simulcast;
    this.ws = null;
    this.publisher = null;
    this.subscriber = null;
    this.identity = null;
    this.sessionId = null;
    this.resumeToken = null;
    this.lastSeq = 0;
    this.participants = new Map(); // identity -> participant info
    this.grants = null; // as the server API last changed them ("grants-updated"); the token's until then
    this.tracks = new Map(); // track_id -> track info (remote and own)
    this.remote = new Map(); // track_id -> {track, stream, transceiver}
    this.published = new Map(); // track_id -> {sender, source, track}
    this.forwarding = new Map(); // track_id -> last track-forwarding message
    this.midTracks = new Map(); // subscriber mid -> track_id
    this.pending = new Map(); // track_id -> remote entry whose track-published has not come yet
    this.waiters = [];
    this.log = []; // the types of the last 200 server messages, for diagnostics
    this.requests = 0;
    this.queue = Promise.resolve(); // subscriber offers are answered one at a time
    this.closed = false;
  }

  // Connection ---------------------------------------------------------------------------------

  _open() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url);
      ws.onopen = () => resolve(ws);
      ws.onerror = () => reject(new Error(`cannot reach ${this.url}`));
      ws.onmessage = (event) => this._receive(event.data);
      ws.onclose = (event) => {
        if (this.ws === ws) this._emit("disconnected", { code: event.code, reason: event.reason });
      };
      this.ws = ws;
    });
  }

  async connect(timeoutMs = 15000) {
    await this._open();
    this.send({ type: "join", protocol: PROTOCOL_VERSION, token: this.token });
    const joined = await this.waitFor("joined", { timeoutMs, failOnError: true });
    this.identity = joined.participant.identity;
    this.sessionId = joined.session_id;
    this.resumeToken = joined.resume_token;
    for (const p of joined.participants) this.participants.set(p.identity, p);
    for (const t of joined.tracks) this.tracks.set(t.track_id, t);
    return joined;
  }

  async resume(timeoutMs = 15000) {
    await this._open();
    this.send({
      type: "resume", protocol: PROTOCOL_VERSION, session_id: this.sessionId,
      resume_token: this.resumeToken, last_seq: this.lastSeq,
    });
    return this.waitFor("resumed", { timeoutMs, failOnError: true });
  }

  // One attempt at repairing the signaling connection: "resumed", or "rejoined" when the node had
  // lost the session (a new session: new track ids, see the "rejoined" event).  Throws when the
  // node cannot be reached yet; call again later.
  async reconnect(timeoutMs = 5000) {
    if (!this.sessionLost) {
      try {
        await this.resume(timeoutMs);
        return "resumed";
      } catch (error) {
        if (!(error instanceof SignalingError && error.code === "resume_failed")) throw error;
        this.sessionLost = true;
      }
    }
    if (!this.tokenProvider) throw new SignalingError("resume_failed", "the session is gone and there is no token provider");
    await this.rejoin(await this.tokenProvider(), Math.max(timeoutMs, 10000));
    return "rejoined";
  }

  // Join again as a new session with `token`: the old session's peer connections and remote tracks
  // are dropped ("rejoining" event), the local tracks published again (muted ones stay muted).
  // Emits "rejoined" with {joined, ids: Map(old track id -> new track id)}.
  async rejoin(token, timeoutMs = 15000) {
    this.token = token;
    const ws = this.ws;
    this.ws = null; // no "disconnected" for a connection closed on purpose
    if (ws) ws.close();
    for (const pc of [this.publisher, this.subscriber]) if (pc) pc.close();
    this.publisher = this.subscriber = null;
    const republish = [...this.published.entries()];
    const me = this.participants.get(this.identity);
    for (const map of [this.published, this.remote, this.pending, this.midTracks, this.forwarding, this.tracks, this.participants]) map.clear();
    this.queue = Promise.resolve();
    this.sessionId = this.resumeToken = null;
    this.lastSeq = 0; // the new session numbers its messages from 1
    this._emit("rejoining", {}); // the old session's remote tracks are gone; new "track" events follow
    const joined = await this.connect(timeoutMs);
    this.sessionLost = false;
    if (me && !this.participants.has(this.identity)) this.participants.set(this.identity, me);
    const ids = new Map();
    const live = republish.filter(([, own]) => own.track.readyState === "live");
    if (live.length) {
      const fresh = await this.publish(live.map(([, own]) => ({ track: own.track, source: own.source, simulcast: own.simulcast })));
      live.forEach(([oldId], i) => ids.set(oldId, fresh[i]));
    }
    this._emit("rejoined", { joined, ids });
    return joined;
  }

  send(message) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) throw new Error("the signaling connection is closed");
    this.ws.send(JSON.stringify(message));
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _receive(data) {
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return; // the server sends only JSON; ignore anything else rather than crash the page
    }
    if (Number.isInteger(message.seq)) {
      if (message.seq <= this.lastSeq) return; // replayed twice after a resume
      this.lastSeq = message.seq;
    }
    this.log.push(message.type + (message.seq ? `#${message.seq}` : ""));
    if (this.log.length > 200) this.log.shift();
    this._handle(message);
    for (const waiter of [...this.waiters]) {
      if (waiter.match(message)) {
        this.waiters.splice(this.waiters.indexOf(waiter), 1);
        waiter.settle(message);
        break;
      }
    }
    this._emit("message", message);
    this._emit(message.type, message);
  }

  _handle(message) {
    switch (message.type) {
      case "reconnect": // the node is draining: join again, where the API now says
        this.sessionLost = true;
        if (this.ws) this.ws.close(); // "disconnected": the page repairs it as any lost connection
        break;
      case "participant-joined":
      case "participant-updated":
        this.participants.set(message.participant.identity, message.participant);
        break;
      case "participant-left":
        this.participants.delete(message.identity);
        break;
      case "grants-updated": // without can_publish the SFU has unpublished this client's tracks
        this.grants = message.grants;
        if (!message.grants.can_publish) this._dropPublished();
        break;
      case "track-published": {
        this.tracks.set(message.track.track_id, message.track);
        const waiting = this.pending.get(message.track.track_id);
        if (waiting) {
          this.pending.delete(message.track.track_id);
          waiting.info = message.track;
          this._emit("track", waiting);
        }
        break;
      }
      case "track-unpublished":
        this.tracks.delete(message.track_id);
        this.pending.delete(message.track_id);
        this.remote.delete(message.track_id);
        this.forwarding.delete(message.track_id);
        break;
      case "track-muted": {
        const info = this.tracks.get(message.track_id);
        if (info) info.muted = message.muted;
        break;
      }
      case "track-forwarding":
        this.forwarding.set(message.track_id, message);
        break;
      case "subscriber-offer":
        this.queue = this.queue.then(() => this._answer(message)).catch((error) => this._emit("failure", { error: String(error) }));
        break;
      case "set-layers":
        this._setLayers(message).catch((error) => this._emit("failure", { error: String(error) }));
        break;
    }
  }

  // The oldest server message of `type` still to come that satisfies `predicate`.  An error that
  // answers request `id` (or any error, with failOnError) rejects with a SignalingError.
  waitFor(type, { predicate = null, timeoutMs = 15000, id = null, failOnError = false } = {}) {
    return new Promise((resolve, reject) => {
      const waiter = {
        match: (m) =>
          (m.type === "error" && (failOnError || (id !== null && m.id === id))) ||
          (m.type === type && (!predicate || predicate(m))),
        settle: (m) => {
          clearTimeout(timer);
          if (m.type === "error" && type !== "error") reject(new SignalingError(m.code, m.message));
          else resolve(m);
        },
      };
      const timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(waiter), 1);
        reject(new Error(`timed out waiting for ${type}`));
      }, timeoutMs);
      this.waiters.push(waiter);
    });
  }

  _request(message, answerType, timeoutMs = 20000) {
    this.requests += 1;
    const id = `${message.type}-${this.requests}`;
    this.send({ ...message, id }); // throws when closed, before a waiter is left behind
    return this.waitFor(answerType, { id, timeoutMs }); // no answer can come before this runs
  }

  // Publishing ---------------------------------------------------------------------------------

  // tracks: [{track: MediaStreamTrack, source: "camera" | "microphone" | "screen" | "screen_audio",
  //           simulcast?: boolean}]; returns the SFU's track ids in the same order.
  async publish(tracks) {
    if (!this.publisher) this.publisher = new RTCPeerConnection({ iceServers: this.iceServers });
    const pc = this.publisher;
    const added = tracks.map(({ track, source, simulcast }) => {
      const init = { direction: "sendonly" };
      const layered = track.kind === "video" && (simulcast ?? source === "camera");
      if (layered) init.sendEncodings = this.simulcast.map((e) => ({ ...e }));
      const transceiver = pc.addTransceiver(track, init);
      return { transceiver, track, source, simulcast: layered };
    });
    await pc.setLocalDescription(await pc.createOffer());
    await gatheringComplete(pc);
    const meta = added.map(({ transceiver, track, source }) => ({
      mid: transceiver.mid, kind: track.kind, source, muted: !track.enabled,
    }));
    const answer = await this._request({ type: "publish", sdp: pc.localDescription.sdp, tracks: meta }, "publish-answer");
    await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    const byMid = new Map(answer.tracks.map((t) => [t.mid, t.track_id]));
    return added.map(({ transceiver, track, source, simulcast }) => {
      const trackId = byMid.get(transceiver.mid) ?? null;
      if (trackId) this.published.set(trackId, { sender: transceiver.sender, transceiver, track, source, simulcast });
      return trackId;
    });
  }

  async unpublish(trackId) {
    const own = this.published.get(trackId);
    this.send({ type: "unpublish", track_id: trackId });
    if (own) {
      this.published.delete(trackId);
      own.transceiver.direction = "inactive";
      await own.sender.replaceTrack(null);
    }
  }

  // The SFU unpublished everything this client sent (its grants no longer allow publishing): stop
  // sending, keep the local tracks (the page may publish them again once allowed).
  _dropPublished() {
    for (const own of this.published.values()) {
      own.transceiver.direction = "inactive";
      own.sender.replaceTrack(null).catch(() => {});
    }
    this.published.clear();
  }

  mute(trackId, muted) {
    const own = this.published.get(trackId);
    if (own) own.track.enabled = !muted;
    this.send({ type: "mute", track_id: trackId, muted });
  }

  // Dynacast: the SFU says which encodings anyone takes; stop encoding the others.
  async _setLayers(message) {
    const own = this.published.get(message.track_id);
    if (!own) return;
    const params = own.sender.getParameters();
    if (!params.encodings || params.encodings.length < 2) return;
    let changed = false;
    for (const layer of message.layers) {
      const encoding = params.encodings.find((e) => e.rid === layer.rid) ?? params.encodings[layer.index];
      if (encoding && encoding.active !== layer.active) {
        encoding.active = layer.active;
        changed = true;
      }
    }
    if (changed) await own.sender.setParameters(params);
  }

  // Subscribing --------------------------------------------------------------------------------

  async _answer(offer) {
    if (!this.subscriber) {
      this.subscriber = new RTCPeerConnection({ iceServers: this.iceServers });
      this.subscriber.addEventListener("track", (event) => this._onTrack(event));
    }
    const pc = this.subscriber;
    for (const [mid, trackId] of Object.entries(offer.tracks)) this.midTracks.set(mid, trackId);
    await pc.setRemoteDescription({ type: "offer", sdp: offer.sdp });
    await pc.setLocalDescription(await pc.createAnswer());
    await gatheringComplete(pc);
    this.send({ type: "subscriber-answer", sdp: pc.localDescription.sdp });
  }

  _onTrack(event) {
    const trackId = this.midTracks.get(event.transceiver.mid);
    if (!trackId) return;
    const stream = new MediaStream([event.track]);
    const entry = { trackId, track: event.track, stream, transceiver: event.transceiver, info: this.tracks.get(trackId) };
    this.remote.set(trackId, entry);
    // The SFU's offer can overtake the track-published message: announce the track with its
    // description (owner, source) once that has come.
    if (entry.info) this._emit("track", entry);
    else this.pending.set(trackId, entry);
  }

  // How this client shows a remote video track: the rendered size in pixels, or a quality.
  trackSettings(trackId, { width = null, height = null, quality = null } = {}) {
    const message = { type: "track-settings", track_id: trackId };
    if (width !== null) message.width = Math.round(width);
    if (height !== null) message.height = Math.round(height);
    if (quality !== null) message.quality = quality;
    this.send(message);
  }

  // Several tracks' settings in one message: [{track_id, width?, height?, quality?}, ...], sent in
  // messages of at most 128 (the server's limit), so that paging a large grid is one message.
  trackSettingsMany(settings) {
    for (let i = 0; i < settings.length; i += 128) {
      this.send({ type: "track-settings", tracks: settings.slice(i, i + 128) });
    }
  }

  pin(identities) {
    this.send({ type: "pin", identities });
  }

  // getStats() of one remote track's receiver, reduced to its inbound-rtp entry.
  async inboundStats(trackId) {
    const entry = this.remote.get(trackId);
    if (!entry) return null;
    const report = await entry.transceiver.receiver.getStats();
    for (const stat of report.values()) {
      if (stat.type === "inbound-rtp") return stat;
    }
    return null;
  }

  // Meeting features ---------------------------------------------------------------------------

  chat(text, to = null) {
    this.send({ type: "chat", text, to });
  }

  // One of the server's reactions (👍 👏 😂 ❤️ 🎉 😮): everyone sees it on the sender's tile.
  react(emoji) {
    this.send({ type: "reaction", emoji });
  }

  raiseHand(raised = true) {
    this.send({ type: "raise-hand", raised });
  }

  muteParticipant(identity, kind = "audio") {
    this.send({ type: "mute-participant", identity, kind });
  }

  removeParticipant(identity) {
    this.send({ type: "remove-participant", identity });
  }

  admit(identity) {
    this.send({ type: "admit", identity });
  }

  /** Host or co-host: record the meeting ("grid" or "speaker" layout; null: the server's). */
  startRecording(layout = null) {
    return this.send(layout ? { type: "start-recording", layout } : { type: "start-recording" });
  }

  stopRecording() {
    return this.send({ type: "stop-recording" });
  }

  endMeeting() {
    this.send({ type: "end-meeting" });
  }

  ping() {
    return this._request({ type: "ping" }, "pong", 10000);
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      try {
        this.send({ type: "leave" });
      } catch {
        // closing anyway
      }
    }
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close();
    for (const pc of [this.publisher, this.subscriber]) if (pc) pc.close();
    for (const waiter of this.waiters) waiter.settle({ type: "error", code: "closed", message: "client closed" });
    this.waiters = [];
  }
}
