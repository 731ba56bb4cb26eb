// The meeting room screen.  Its parts, each in its own section below:
//   - the room's state, declared once (roomState);
//   - one named handler per server event it shows (the `handlers` table), and per event of the
//     SfuClient itself (`clientEvents`: remote tracks and the connection's life);
//   - reconnection: resume, or join again with a new room token after a node restart;
//   - the controls (microphone, camera, screen share, hand, panels, recording);
//   - render functions that draw the state: tiles, participant list, chat log, toolbar, badges.
// Participants, tracks and forwarding reports are the SfuClient's (client.participants,
// client.tracks, client.forwarding): it applies each server message to them before the handler
// here runs.  app.js opens the room with enterRoom().

import { api, session } from "./api.js";
import { SfuClient } from "./sfu-client.js";
import { announce, errorText, h, initials, mediaUnavailable, show } from "./ui.js";

// State --------------------------------------------------------------------------------------------

function roomState() {
  return {
    tiles: new Map(), // key (identity, or identity:screen) -> tile element
    own: { audio: null, video: null, screen: null }, // the track ids of what we publish
    micMuted: false,
    camMuted: false,
    handRaised: false,
    speaking: new Set(), // identities of the active speakers
    dominant: null, // identity of the dominant speaker
    panel: null, // "chat", "people" or null
    speakerView: false,
    recording: null, // the recording-started message while the meeting is recorded
    rtt: 0, // the last signaling round trip (ms), for the connection-quality badge
    reconnecting: false,
    ended: false,
  };
}

// A room: the meeting, its client, the state and the elements that draw it.  `hooks.entered(leave)`
// is called once the room is joined (`leave` tears it down), `hooks.finished()` after an end state
// has replaced the room.
function createRoom(meeting, joined, stream, joinBody, hooks) {
  const room = { meeting, joined, stream, hooks, admin: joined.grants.room_admin, state: roomState(), pinger: null };
  room.client = new SfuClient(signalingUrl(joined), joined.token, {
    iceServers: joined.ice_servers, tokenProvider: () => newRoomToken(room, joinBody),
  });
  room.view = {
    tileList: h("ul", { class: "tiles", "aria-label": "Participants' video" }),
    chatLog: h("ul", { class: "chat-log", role: "log", "aria-label": "Chat messages" }),
    chatForm: chatForm(room),
    peopleList: h("ul", { class: "plain people", "aria-label": "Participants" }),
    quality: h("span", { class: "badge good", role: "status", text: "Connection: good" }),
    recording: h("span", { class: "badge rec", hidden: true, text: "● Recording" }),
    panel: h("aside", { class: "panel", hidden: true }),
    roomBox: h("div", { class: "room" }),
    buttons: toolbarButtons(room),
  };
  return room;
}

// Joining ------------------------------------------------------------------------------------------

export async function enterRoom(meeting, joined, stream, { micOff, camOff, joinBody = {} }, hooks) {
  const room = createRoom(meeting, joined, stream, joinBody, hooks);
  for (const [type, handler] of Object.entries({ ...handlers, ...clientEvents })) {
    room.client.addEventListener(type, ({ detail }) => handler(room, detail));
  }
  room.pinger = setInterval(() => ping(room), 5000);
  try {
    const welcome = await room.client.connect();
    setRecording(room, welcome.recording ?? null);
  } catch (e) {
    teardown(room);
    throw e;
  }
  hooks.entered(() => teardown(room));
  window.videoconfRoom = room.client; // for diagnostics from the console
  addSelf(room);
  const earlier = await api("GET", `/api/meetings/${meeting.id}/messages?limit=50`).catch(() => ({ items: [] }));
  for (const message of earlier.items.reverse()) renderChatMessage(room, message);
  renderRoom(room);
  if (stream) await publishOwn(room, stream, { micOff, camOff });
  renderAll(room);
  announce(`You joined ${meeting.title}.`);
}

// The participant list has us too, also when the server's list does not.
function addSelf({ client, joined }) {
  if (client.identity && !client.participants.has(client.identity)) {
    client.participants.set(client.identity, { identity: client.identity, name: session().user.display_name, role: joined.grants.room_admin ? "host" : "participant", hand_raised: false });
  }
}

async function publishOwn(room, stream, { micOff, camOff }) {
  const tracks = [];
  const audio = stream.getAudioTracks()[0];
  const video = stream.getVideoTracks()[0];
  if (audio) tracks.push({ track: audio, source: "microphone" });
  if (video) tracks.push({ track: video, source: "camera" });
  if (micOff && audio) audio.enabled = false;
  if (camOff && video) video.enabled = false;
  try {
    const ids = await room.client.publish(tracks);
    tracks.forEach((t, i) => { room.state.own[t.track.kind] = ids[i]; });
    if (video) attachVideo(room, tileFor(room, room.client.identity), new MediaStream([video]), null, true);
    if (micOff || room.joined.mute_on_join) setMic(room, true);
    if (camOff) setCam(room, true);
  } catch (e) {
    announce(`Your camera and microphone could not be sent: ${errorText(e)}`);
  }
}

// Leaving and end states ---------------------------------------------------------------------------

function teardown(room) {
  clearInterval(room.pinger);
  for (const key of [...room.state.tiles.keys()]) dropTile(room, key);
  room.client.close();
  if (room.stream) room.stream.getTracks().forEach((t) => t.stop());
  for (const own of room.client.published.values()) own.track.stop();
}

function finish(room, title, text) {
  if (room.state.ended) return;
  room.state.ended = true;
  teardown(room);
  show(title, h("h1", { text: title }), h("p", { role: "alert", text }), h("a", { class: "button primary", href: "#/dashboard", text: "Back to the dashboard" }));
  room.hooks.finished();
}

// Server events ------------------------------------------------------------------------------------
// Each handler gets the room and the server's message (signaling/schema.json).

function onParticipantJoined(room, { participant }) {
  tileFor(room, participant.identity);
  renderAll(room);
  announce(`${participant.name} joined.`);
}

function onParticipantLeft(room, { identity }) {
  dropTile(room, identity);
  dropTile(room, `${identity}:screen`);
  renderPeople(room);
  announce("Someone left the meeting.");
}

function onParticipantUpdated(room, { participant }) {
  renderTile(room, participant.identity);
  renderPeople(room);
  if (participant.hand_raised) announce(`${participant.name} raised a hand.`);
}

function onTrackMuted(room, { participant }) {
  renderTile(room, participant);
}

function onTrackPublished(room, { track }) {
  renderTile(room, track.participant);
}

// A screen share's tile goes with its track; a camera's or microphone's tile stays.
function onTrackUnpublished(room, { track_id: trackId, participant }) {
  const shown = [...room.state.tiles.entries()].find(([, tile]) => tile.querySelector(`video[data-track="${trackId}"]`));
  if (shown && shown[0].endsWith(":screen")) dropTile(room, shown[0]);
  else renderTile(room, participant);
}

function onScreenShareStarted(room, { participant }) {
  announce(`${nameOf(room, participant)} is sharing a screen.`);
}

function onChat(room, { message }) {
  renderChatMessage(room, message);
  if (room.state.panel !== "chat") announce(`New message from ${senderName(message.sender, "someone")}.`);
}

function onMutedByHost(room, { kind }) {
  if (kind === "audio") setMic(room, true);
  else setCam(room, true);
  announce("The host muted you.");
}

function onRemoved(room, { message }) {
  finish(room, "You were removed", message || "The host removed you from the meeting.");
}

function onMeetingEnded(room) {
  finish(room, "Meeting ended", "The host ended the meeting for everyone.");
}

function onActiveSpeakers(room, { speakers, dominant }) {
  room.state.speaking = new Set(speakers);
  room.state.dominant = dominant;
  renderAll(room);
}

function onTrackForwarding(room) {
  renderQuality(room, qualityLevel(room));
}

function onRecordingStarted(room, message) {
  setRecording(room, message);
  announce("This meeting is being recorded.");
}

function onRecordingStopped(room, { reason }) {
  setRecording(room, null);
  announce(reason === "recorder_failed" ? "Recording stopped: the recorder failed." : "Recording stopped.");
}

function onError(room, { code, message }) {
  if (/recording/.test(code ?? "")) announce(message);
}

const handlers = {
  "participant-joined": onParticipantJoined,
  "participant-left": onParticipantLeft,
  "participant-updated": onParticipantUpdated,
  "track-muted": onTrackMuted,
  "track-published": onTrackPublished,
  "track-unpublished": onTrackUnpublished,
  "screen-share-started": onScreenShareStarted,
  "chat": onChat,
  "muted-by-host": onMutedByHost,
  "removed": onRemoved,
  "meeting-ended": onMeetingEnded,
  "active-speakers": onActiveSpeakers,
  "track-forwarding": onTrackForwarding,
  "recording-started": onRecordingStarted,
  "recording-stopped": onRecordingStopped,
  "error": onError,
};

// Client events: a remote track to play, and reconnection ----------------------------------------

function onTrack(room, { trackId, track, stream }) {
  const info = room.client.tracks.get(trackId);
  if (!info) return;
  if (track.kind === "audio") {
    const audio = h("audio", { autoplay: true, "data-track": trackId });
    audio.srcObject = stream;
    tileFor(room, info.participant).append(audio);
  } else {
    attachVideo(room, tileFor(room, info.participant, info.source === "screen"), stream, trackId);
  }
  renderTile(room, info.participant);
}

// A dropped signaling connection: resume, or join again if the node restarted meanwhile; about
// 30 s of tries in all, then the room ends.
async function onDisconnected(room) {
  const { state, client } = room;
  if (state.ended || client.closed || state.reconnecting) return; // failed attempts disconnect too
  state.reconnecting = true;
  renderQuality(room, "poor", "Connection: lost, reconnecting");
  announce("Connection lost. Reconnecting.");
  let back = false;
  try {
    back = await reconnect(room);
  } finally {
    state.reconnecting = false;
  }
  if (!back) finish(room, "Connection lost", "The connection to the meeting was lost. Rejoin from the dashboard.");
}

// True once the connection is back; false when the tries ran out or the room ended meanwhile.
async function reconnect(room) {
  for (let attempt = 0; attempt < 8 && !room.state.ended; attempt++) {
    await new Promise((r) => setTimeout(r, Math.min(1000 * (attempt + 1), 5000)));
    // A node still out of reach after three tries may be gone: join anew where the API says.
    if (attempt >= 3) room.client.sessionLost = true;
    try {
      await room.client.reconnect();
      renderQuality(room, "good");
      announce("Reconnected.");
      return true;
    } catch {
      // try again
    }
  }
  return false;
}

// Where to signal: in a cluster, the node the join answer names (it hosts the meeting); else
// the node that served this page (the configured base URL may name another address for it).
function signalingUrl(joined) {
  return joined.node ? joined.signaling_url : `${location.origin.replace(/^http/, "ws")}/signaling`;
}

// After the node lost the session (it restarted, stopped, or asked everyone to move), the client
// joins again with a new room token, asked for as the first one was, at the node it names.
async function newRoomToken(room, joinBody) {
  const again = await api("POST", `/api/meetings/${room.meeting.id}/join`, joinBody);
  room.client.iceServers = again.ice_servers;
  room.client.url = signalingUrl(again);
  return again.token;
}

// A new session after the node lost the old one: other people's tiles come back with their
// tracks, ours keep their local preview under new track ids.
function onRejoining(room) {
  const mine = [room.client.identity, `${room.client.identity}:screen`];
  for (const key of [...room.state.tiles.keys()]) if (!mine.includes(key)) dropTile(room, key);
}

function onRejoined(room, { joined, ids }) {
  const { own } = room.state;
  for (const kind of Object.keys(own)) if (own[kind]) own[kind] = ids.get(own[kind]) ?? null;
  setRecording(room, joined.recording ?? null);
  for (const p of room.client.participants.values()) tileFor(room, p.identity);
  renderAll(room);
}

const clientEvents = {
  "track": onTrack,
  "disconnected": onDisconnected,
  "rejoining": onRejoining,
  "rejoined": onRejoined,
};

// The round trip of a ping every 5 s, for the connection-quality badge.
async function ping(room) {
  const { client } = room;
  if (!client.ws || client.ws.readyState !== WebSocket.OPEN) return;
  const started = performance.now();
  try {
    await client.ping();
    room.state.rtt = performance.now() - started;
    renderQuality(room, qualityLevel(room));
  } catch {
    // reported by the disconnect handler
  }
}

// "good", "fair" or "poor", from the round trip and whether the SFU limits any track for bandwidth.
function qualityLevel({ state, client }) {
  const limited = [...client.forwarding.values()].some((f) => f.reason === "bandwidth");
  const rtt = state.rtt;
  return rtt > 400 || (limited && rtt > 200) ? "poor" : limited || rtt > 150 ? "fair" : "good";
}

// Controls -----------------------------------------------------------------------------------------

function toolbarButtons(room) {
  const { state } = room;
  const toggle = (text, onclick) => h("button", { "aria-pressed": "false", text, onclick });
  return { // in toolbar order
    mic: toggle("Mute microphone", () => setMic(room, !state.micMuted)),
    cam: toggle("Turn camera off", () => setCam(room, !state.camMuted)),
    share: toggle("Share screen", () => (state.own.screen ? stopShare(room) : startShare(room))),
    hand: toggle("Raise hand", () => toggleHand(room)),
    chat: toggle("Chat", () => togglePanel(room, "chat")),
    people: toggle("Participants", () => togglePanel(room, "people")),
    view: toggle("Speaker view", () => toggleSpeakerView(room)),
    record: room.admin ? toggle("Record", () => (state.recording ? room.client.stopRecording() : room.client.startRecording())) : null,
    end: room.admin ? h("button", { class: "danger", text: "End meeting for all", onclick: () => { if (confirm("End the meeting for everyone?")) room.client.endMeeting(); } }) : null,
    leave: h("button", { class: "danger", text: "Leave", onclick: () => { location.hash = "#/dashboard"; } }),
  };
}

function setMic(room, muted) {
  room.state.micMuted = muted;
  if (room.state.own.audio) room.client.mute(room.state.own.audio, muted);
  renderToggle(room, "mic");
  renderTile(room, room.client.identity);
}

function setCam(room, muted) {
  room.state.camMuted = muted;
  if (room.state.own.video) room.client.mute(room.state.own.video, muted);
  renderToggle(room, "cam");
  renderTile(room, room.client.identity);
}

function toggleHand(room) {
  room.state.handRaised = !room.state.handRaised;
  room.client.raiseHand(room.state.handRaised);
  renderToggle(room, "hand");
}

function toggleSpeakerView(room) {
  room.state.speakerView = !room.state.speakerView;
  room.view.tileList.classList.toggle("speaker-view", room.state.speakerView);
  renderToggle(room, "view");
}

function togglePanel(room, which) {
  room.state.panel = room.state.panel === which ? null : which;
  renderPanel(room);
}

function setRecording(room, status) {
  room.state.recording = status;
  room.view.recording.hidden = !status;
  renderToggle(room, "record");
}

async function startShare(room) {
  const { client } = room;
  try {
    if (!navigator.mediaDevices?.getDisplayMedia) throw new Error(mediaUnavailable() ?? "This browser cannot share a screen.");
    const display = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
    const track = display.getVideoTracks()[0];
    const [trackId] = await client.publish([{ track, source: "screen", simulcast: false }]);
    room.state.own.screen = trackId;
    attachVideo(room, tileFor(room, client.identity, true), display);
    track.addEventListener("ended", () => stopShare(room));
    renderToggle(room, "share", true);
    announce("You are sharing your screen.");
  } catch (e) {
    announce(`Screen sharing failed: ${errorText(e)}`);
  }
}

async function stopShare(room) {
  const { client, state } = room;
  if (!state.own.screen) return;
  const trackId = state.own.screen;
  state.own.screen = null;
  const own = client.published.get(trackId);
  own?.track.stop();
  await client.unpublish(trackId);
  dropTile(room, `${client.identity}:screen`);
  renderToggle(room, "share", false);
}

function chatForm(room) {
  const form = h("form", { "aria-label": "Send a chat message", class: "row" },
    h("label", { class: "visually-hidden", for: "chat-input", text: "Message" }),
    h("input", { id: "chat-input", name: "text", placeholder: "Message everyone", maxlength: 4000, autocomplete: "off", class: "grow" }),
    h("button", { type: "submit", class: "primary", text: "Send" }));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = form.text.value.trim();
    if (!text) return;
    room.client.chat(text);
    form.reset();
  });
  return form;
}

// Rendering ----------------------------------------------------------------------------------------

function renderRoom(room) {
  const { meeting, view, client } = room;
  show(meeting.title,
    h("div", { class: "room-head" }, h("h1", { text: meeting.title }), h("div", { class: "badges" }, view.recording, view.quality, h("span", { class: "badge", text: `Code ${meeting.code}` }))),
    view.roomBox);
  view.roomBox.replaceChildren(h("div", { class: "room-main" }, view.tileList,
    h("div", { class: "toolbar", role: "toolbar", "aria-label": "Meeting controls" }, Object.values(view.buttons))), view.panel);
  tileFor(room, client.identity);
  for (const p of client.participants.values()) tileFor(room, p.identity);
  renderAll(room);
}

// The toolbar's toggle buttons: whether each is pressed in the state, and its text when pressed
// and when not (none: the text stays).
const TOGGLES = {
  mic: { pressed: (s) => s.micMuted, on: "Unmute microphone", off: "Mute microphone" },
  cam: { pressed: (s) => s.camMuted, on: "Turn camera on", off: "Turn camera off" },
  share: { on: "Stop sharing", off: "Share screen" }, // pressed while our share is being sent
  hand: { pressed: (s) => s.handRaised, on: "Lower hand", off: "Raise hand" },
  chat: { pressed: (s) => s.panel === "chat" },
  people: { pressed: (s) => s.panel === "people" },
  view: { pressed: (s) => s.speakerView },
  record: { pressed: (s) => Boolean(s.recording), on: "Stop recording", off: "Record" },
};

function renderToggle(room, name, pressed = TOGGLES[name].pressed(room.state)) {
  const button = room.view.buttons[name];
  if (!button) return; // Record: hosts and co-hosts only
  const { on, off } = TOGGLES[name];
  button.setAttribute("aria-pressed", String(pressed));
  if (on) button.textContent = pressed ? on : off;
}

function renderPanel(room) {
  const { state, view } = room;
  renderToggle(room, "chat");
  renderToggle(room, "people");
  view.panel.hidden = !state.panel;
  view.roomBox.classList.toggle("with-panel", Boolean(state.panel));
  if (state.panel === "chat") view.panel.replaceChildren(h("h2", { text: "Chat" }), view.chatLog, view.chatForm);
  if (state.panel === "people") {
    renderPeople(room);
    view.panel.replaceChildren(h("h2", { text: "Participants" }), view.peopleList);
  }
}

function renderQuality(room, level, text = `Connection: ${level}`) {
  room.view.quality.className = `badge ${level}`;
  room.view.quality.textContent = text;
}

const nameOf = ({ client }, identity) => client.participants.get(identity)?.name ?? (identity === client.identity ? "You" : "Someone");

// A chat message's sender: signaling sends {identity, name}, the REST history {id, display_name}.
function senderName(sender, fallback) {
  return sender?.name ?? sender?.display_name ?? fallback;
}

function renderChatMessage({ view }, message) {
  const who = senderName(message.sender, "System");
  view.chatLog.append(h("li", {}, h("span", { class: "who", text: `${who}: ` }), h("span", { text: message.body })));
  view.chatLog.scrollTop = view.chatLog.scrollHeight;
}

function renderPeople(room) {
  const { client, admin } = room;
  room.view.peopleList.replaceChildren(...[...client.participants.values()].map((p) => h("li", {},
    h("span", { text: `${p.name}${p.identity === client.identity ? " (you)" : ""}${p.role === "host" ? " · host" : ""}${p.hand_raised ? " ✋" : ""}` }),
    admin && p.identity !== client.identity ? h("span", { class: "row" },
      h("button", { text: "Mute", "aria-label": `Mute ${p.name}`, onclick: () => client.muteParticipant(p.identity, "audio") }),
      h("button", { class: "danger", text: "Remove", "aria-label": `Remove ${p.name}`, onclick: () => { if (confirm(`Remove ${p.name} from the meeting?`)) client.removeParticipant(p.identity); } })) : null)));
}

// Every tile and the participant list.
function renderAll(room) {
  for (const identity of room.client.participants.keys()) renderTile(room, identity);
  renderTile(room, room.client.identity);
  renderPeople(room);
}

// A participant's camera tile (or screen-share tile), made on first use.
function tileFor(room, identity, screen = false) {
  const key = screen ? `${identity}:screen` : identity;
  let tile = room.state.tiles.get(key);
  if (tile) return tile;
  const name = nameOf(room, identity) + (identity === room.client.identity ? " (you)" : "") + (screen ? " · screen" : "");
  tile = h("li", { class: "tile", "aria-label": name, "data-identity": identity },
    h("div", { class: "placeholder" }, h("span", { class: "avatar", "aria-hidden": "true", text: initials(nameOf(room, identity)) })),
    h("div", { class: "label" }, h("span", { class: "name", text: name }), h("span", { class: "state mic", hidden: true, text: "Muted" }), h("span", { class: "state hand", hidden: true, text: "✋ Hand raised" })));
  room.state.tiles.set(key, tile);
  room.view.tileList.append(tile);
  return tile;
}

function attachVideo(room, tile, mediaStream, trackId = null, local = false) {
  let video = tile.querySelector("video");
  if (!video) {
    video = h("video", { autoplay: true, playsinline: true });
    video.muted = true;
    tile.prepend(video);
  }
  video.srcObject = mediaStream;
  tile.querySelector(".placeholder").hidden = true;
  if (local) video.style.transform = "scaleX(-1)";
  if (trackId) {
    video.dataset.track = trackId;
    video.observer?.disconnect(); // a tile's video can change tracks (a new session after a rejoin)
    // Ask the SFU for the layer that fits the size the tile is drawn at.
    const observer = new ResizeObserver(([entry]) => {
      const scale = window.devicePixelRatio || 1;
      const { width, height } = entry.contentRect;
      if (width > 0 && room.client.ws) room.client.trackSettings(trackId, { width: width * scale, height: height * scale });
    });
    observer.observe(video);
    video.observer = observer;
  }
}

function dropTile(room, key) {
  const tile = room.state.tiles.get(key);
  if (!tile) return;
  tile.querySelector("video")?.observer?.disconnect();
  tile.remove();
  room.state.tiles.delete(key);
}

// A tile's marks from the state: muted, hand raised, camera off (the avatar shows), speaking.
function renderTile(room, identity) {
  const { client, state } = room;
  const tile = state.tiles.get(identity);
  if (!tile) return;
  const info = client.participants.get(identity);
  const audio = [...client.tracks.values()].find((t) => t.participant === identity && t.kind === "audio");
  const micMuted = identity === client.identity ? state.micMuted : (!audio || audio.muted);
  tile.querySelector(".mic").hidden = !micMuted;
  tile.querySelector(".hand").hidden = !info?.hand_raised;
  const cam = [...client.tracks.values()].find((t) => t.participant === identity && t.kind === "video" && t.source === "camera");
  const video = tile.querySelector("video");
  const camOffNow = identity === client.identity ? state.camMuted : (!cam || cam.muted);
  if (video) video.hidden = camOffNow;
  tile.querySelector(".placeholder").hidden = Boolean(video) && !camOffNow;
  tile.classList.toggle("speaking", state.speaking.has(identity));
  tile.classList.toggle("dominant", state.dominant === identity);
}
