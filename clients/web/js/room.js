// The meeting room screen.  Its parts, each in its own section below:
//   - the room's state, declared once (roomState);
//   - one named handler per server event it shows (the `handlers` table), and per event of the
//     SfuClient itself (`clientEvents`: remote tracks and the connection's life);
//   - reconnection: resume, or join again with a new room token after a node restart;
//   - the controls (microphone, camera, screen share, hand, reactions, panels, view, pages,
//     picture-in-picture, recording) and their keyboard shortcuts;
//   - the stage: which tiles are on screen (layout.js decides, as values) and what the SFU
//     forwards for them (`syncForwarding`: the page, the pins and the speaker; everything else off);
//   - connection quality from getStats() (quality.js), per tile and for one's own uplink;
//   - render functions that draw the state: tiles, participant list, chat log, toolbar, badges.
// Participants, tracks and forwarding reports are the SfuClient's (client.participants,
// client.tracks, client.forwarding): it applies each server message to them before the handler
// here runs.  app.js opens the room with enterRoom().

import { api, session } from "./api.js";
import { icon } from "./icons.js";
import { arrange, changedRequests, filmstripSize, gridShape, pageOf, peopleOrder, pinsFor, trackRequests } from "./layout.js";
import { qualityDetails, qualityText, remoteQuality, uplinkQuality } from "./quality.js";
import { SfuClient } from "./sfu-client.js";
import { bindShortcuts, keysFor, shortcutsDialog } from "./shortcuts.js";
import { announce, errorText, h, initials, mediaUnavailable, show } from "./ui.js";

// The reactions anyone can send (the server accepts these and no others), with their names.
export const REACTIONS = [["👍", "thumbs up"], ["👏", "clapping"], ["😂", "laughing"], ["❤️", "heart"], ["🎉", "celebration"], ["😮", "surprise"]];
const REACTION_SECONDS = 4;
const QUALITY_EVERY_MS = 2000;
const SYNC_DELAY_MS = 80; // requests to the SFU are gathered for this long after a change

// State --------------------------------------------------------------------------------------------

function roomState() {
  return {
    tiles: new Map(), // key (identity, or identity:screen) -> tile element, in the order made
    own: { audio: null, video: null, screen: null }, // the track ids of what we publish
    micMuted: false,
    camMuted: false,
    handRaised: false,
    talking: false, // the space bar holds the microphone open
    speaking: new Set(), // identities of the active speakers
    dominant: null, // identity of the dominant speaker
    lastSpeaker: null, // the last dominant speaker, kept when everyone falls silent
    panel: null, // "chat", "people" or null
    view: "grid", // or "speaker"
    page: 0,
    pins: [], // identities this person pinned, in the order pinned
    arrangement: null, // layout.arrange()'s last answer
    outOfSight: new Set(), // keys of shown tiles scrolled out of view
    sent: {}, // track id -> the request the SFU has for it (layout.trackRequests' values)
    sentPins: null, // the pin list the SFU has
    quality: new Map(), // remote video track id -> remoteQuality() sample
    previousStats: new Map(), // track id -> counters of the last sample
    uplink: null, // uplinkQuality() of our own publisher connection
    pipKey: null, // the tile shown in the picture-in-picture window
    unread: 0, // chat messages since the chat was last open
    peopleQuery: "",
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
  const room = { meeting, joined, stream, hooks, admin: joined.grants.room_admin, state: roomState(), timers: [], unbind: [] };
  room.client = new SfuClient(signalingUrl(joined), joined.token, {
    // A page that joined with a token from an application has no account to ask for another.
    iceServers: joined.ice_servers, tokenProvider: joined.tokenOnly ? null : () => newRoomToken(room, joinBody),
  });
  const search = h("input", { type: "search", id: "people-search", placeholder: "Search", autocomplete: "off" });
  search.addEventListener("input", () => { room.state.peopleQuery = search.value; renderPeople(room); });
  room.view = {
    tileList: h("ul", { class: "tiles", "aria-label": "Participants' video" }),
    selfList: h("ul", { class: "self-view", "aria-label": "Your video" }),
    stage: h("div", { class: "stage" }),
    pager: pagerView(room),
    audioBox: h("div", { class: "audio", "aria-hidden": "true" }),
    chatLog: h("ul", { class: "chat-log", role: "log", "aria-label": "Chat messages" }),
    chatForm: chatForm(room),
    peopleList: h("ul", { class: "plain people", "aria-label": "Participants" }),
    peopleCount: h("p", { class: "people-count", text: "1 person" }),
    peopleSearch: h("label", { class: "search" }, h("span", { class: "visually-hidden", text: "Search participants" }), search),
    quality: h("span", { class: "badge good", role: "status", text: "Connection: good" }),
    recording: h("span", { class: "badge rec", hidden: true, text: "● Recording" }),
    uplinkBanner: h("p", { class: "banner", role: "status", hidden: true }),
    panel: h("aside", { class: "panel", hidden: true }),
    roomBox: h("div", { class: "room" }),
    reactions: reactionMenu(room),
    shortcuts: shortcutsDialog(),
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
  room.timers.push(setInterval(() => ping(room), 5000));
  try {
    const welcome = await room.client.connect();
    setRecording(room, welcome.recording ?? null);
    if (welcome.meeting) Object.assign(meeting, welcome.meeting);
    if (!room.client.iceServers?.length && welcome.ice_servers?.length) room.client.iceServers = welcome.ice_servers;
  } catch (e) {
    teardown(room);
    throw e;
  }
  hooks.entered(() => teardown(room));
  window.videoconfRoom = room.client; // for diagnostics from the console
  window.videoconfRoomState = room.state;
  addSelf(room);
  watchPage(room);
  const earlier = joined.tokenOnly ? { items: [] } : await api("GET", `/api/meetings/${meeting.id}/messages?limit=50`).catch(() => ({ items: [] }));
  for (const message of earlier.items.reverse()) renderChatMessage(room, message);
  renderRoom(room);
  if (stream) await publishOwn(room, stream, { micOff, camOff });
  renderAll(room);
  announce(`You joined ${meeting.title}.`);
}

// What the room follows outside itself: the keyboard, the tab's visibility, the stage's size and
// which tiles are scrolled into view; and the quality samples.  Undone by teardown().
function watchPage(room) {
  document.body.classList.add("in-room");
  room.unbind.push(() => document.body.classList.remove("in-room"));
  room.unbind.push(bindShortcuts(shortcutActions(room), (down) => pushToTalk(room, down)));
  const onVisibility = () => layout(room);
  document.addEventListener("visibilitychange", onVisibility);
  room.unbind.push(() => document.removeEventListener("visibilitychange", onVisibility));
  const resized = new ResizeObserver(() => layout(room));
  resized.observe(room.view.stage);
  room.unbind.push(() => resized.disconnect());
  room.sight = new IntersectionObserver((entries) => {
    for (const entry of entries) {
      const key = entry.target.dataset.key;
      if (entry.isIntersecting) room.state.outOfSight.delete(key);
      else room.state.outOfSight.add(key);
    }
    scheduleSync(room);
  });
  room.unbind.push(() => room.sight.disconnect());
  room.timers.push(setInterval(() => sampleQuality(room), QUALITY_EVERY_MS));
  swipes(room);
}

// The participant list has us too, also when the server's list does not.
function addSelf({ client, joined }) {
  if (client.identity && !client.participants.has(client.identity)) {
    client.participants.set(client.identity, { identity: client.identity, name: joined.display_name ?? session()?.user.display_name ?? "You", role: joined.grants.room_admin ? "host" : "participant", hand_raised: false });
  }
}

async function publishOwn(room, stream, { micOff, camOff, again = false }) {
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
    if (micOff || (!again && room.joined.mute_on_join)) setMic(room, true);
    if (camOff) setCam(room, true);
  } catch (e) {
    announce(`Your camera and microphone could not be sent: ${errorText(e)}`);
  }
}

// Leaving and end states ---------------------------------------------------------------------------

function teardown(room) {
  for (const timer of room.timers) clearInterval(timer);
  clearTimeout(room.syncTimer);
  for (const undo of room.unbind.splice(0)) undo();
  if (document.pictureInPictureElement) document.exitPictureInPicture().catch(() => {});
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
  layout(room);
  announce(`${participant.name} joined.`);
}

function onParticipantLeft(room, { identity }) {
  dropTile(room, identity);
  dropTile(room, `${identity}:screen`);
  room.state.pins = room.state.pins.filter((pin) => pin !== identity);
  renderPeople(room);
  layout(room);
  announce("Someone left the meeting.");
}

function onParticipantUpdated(room, { participant }) {
  // The server says when a hand went up; a server without it: when this page heard of it.
  if (participant.hand_raised && participant.hand_raised_at == null) participant.hand_raised_at = Date.now() / 1000;
  renderTile(room, participant.identity);
  renderPeople(room);
  if (participant.hand_raised) announce(`${participant.name} raised a hand.`);
}

function onTrackMuted(room, { participant }) {
  renderTile(room, participant);
}

function onTrackPublished(room, { track }) {
  if (track.source === "screen") tileFor(room, track.participant, true);
  renderTile(room, track.participant);
  layout(room);
}

// A screen share's tile goes with its track; a camera's or microphone's tile stays.
function onTrackUnpublished(room, { track_id: trackId, participant }) {
  const shown = [...room.state.tiles.entries()].find(([, tile]) => tile.querySelector(`video[data-track="${trackId}"]`));
  if (shown && shown[0].endsWith(":screen")) dropTile(room, shown[0]);
  else renderTile(room, participant);
  room.view.audioBox.querySelector(`audio[data-track="${trackId}"]`)?.remove();
  delete room.state.sent[trackId];
  room.state.quality.delete(trackId);
  layout(room);
}

function onScreenShareStarted(room, { participant }) {
  announce(`${nameOf(room, participant)} is sharing a screen.`);
}

function onChat(room, { message }) {
  renderChatMessage(room, message);
  if (room.state.panel !== "chat" || document.hidden) {
    room.state.unread += 1;
    renderUnread(room);
    announce(`New message from ${senderName(message.sender, "someone")}.`);
  }
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
  const { state } = room;
  state.speaking = new Set(speakers);
  const changed = dominant !== state.dominant;
  state.dominant = dominant;
  if (dominant && dominant !== room.client.identity) state.lastSpeaker = dominant;
  renderAll(room);
  if (changed) {
    layout(room);
    followInPictureInPicture(room);
  }
}

function onTrackForwarding(room, { participant }) {
  renderQuality(room, qualityLevel(room));
  renderTile(room, participant);
}

// The server API changed what we may do.  Without can_publish the SFU has unpublished our tracks:
// the controls that send are disabled; allowed again, the camera and microphone go out again.
async function onGrantsUpdated(room, { grants }) {
  const { state, view, client } = room;
  const allowed = Boolean(grants.can_publish);
  const was = !view.buttons.mic.disabled;
  for (const name of ["mic", "cam", "share"]) view.buttons[name].disabled = !allowed;
  if (allowed === was) return;
  if (!allowed) {
    if (state.own.screen) dropTile(room, `${client.identity}:screen`);
    state.own = { audio: null, video: null, screen: null };
    announce("You can no longer send audio or video in this meeting.");
    return;
  }
  announce("You can send audio and video again.");
  const live = (room.stream?.getTracks() ?? []).filter((t) => t.readyState === "live");
  if (live.length) await publishOwn(room, new MediaStream(live), { micOff: state.micMuted, camOff: state.camMuted, again: true });
}

function onReaction(room, { participant, emoji }) {
  const named = REACTIONS.find(([e]) => e === emoji);
  if (!named) return;
  const tile = room.state.tiles.get(participant);
  if (tile) {
    const shown = h("span", { class: "reaction", "aria-hidden": "true", text: emoji });
    tile.append(shown);
    setTimeout(() => shown.remove(), REACTION_SECONDS * 1000);
  }
  const who = participant === room.client.identity ? "You" : nameOf(room, participant);
  announce(`${who} reacted with ${named[1]} ${emoji}`);
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
  "reaction": onReaction,
  "grants-updated": onGrantsUpdated,
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
    // Audio plays apart from the tiles: a tile off the page (or moved) never silences anyone.
    room.view.audioBox.querySelector(`audio[data-track="${trackId}"]`)?.remove();
    const audio = h("audio", { autoplay: true, "data-track": trackId, "data-identity": info.participant });
    audio.srcObject = stream;
    room.view.audioBox.append(audio);
  } else {
    attachVideo(room, tileFor(room, info.participant, info.source === "screen"), stream, trackId);
  }
  renderTile(room, info.participant);
  layout(room);
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
  room.view.audioBox.replaceChildren();
  // A new session: the SFU knows none of this page's requests.
  room.state.sent = {};
  room.state.sentPins = null;
  room.state.quality.clear();
  room.state.previousStats.clear();
}

function onRejoined(room, { joined, ids }) {
  const { own } = room.state;
  for (const kind of Object.keys(own)) if (own[kind]) own[kind] = ids.get(own[kind]) ?? null;
  setRecording(room, joined.recording ?? null);
  for (const p of room.client.participants.values()) tileFor(room, p.identity);
  renderAll(room);
  layout(room);
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

// A toolbar button: an icon beside its text (the text is its accessible name; phones show only
// the icon), with its keyboard shortcut announced to assistive technology.
function button(text, iconName, onclick, { toggle = true, action = null, cls = null, popup = null } = {}) {
  return h("button", {
    class: cls, "aria-pressed": toggle ? "false" : null, "aria-keyshortcuts": action ? keysFor(action) : null,
    "aria-haspopup": popup, "aria-expanded": popup ? "false" : null, onclick,
  }, icon(iconName), h("span", { class: "label", text }));
}

function toolbarButtons(room) {
  const { state } = room;
  const pip = document.pictureInPictureEnabled ? button("Picture-in-picture", "pip", () => togglePictureInPicture(room)) : null;
  return { // in toolbar order
    mic: button("Mute microphone", "mic", () => setMic(room, !state.micMuted), { action: "mic" }),
    cam: button("Turn camera off", "camera", () => setCam(room, !state.camMuted), { action: "cam" }),
    share: button("Share screen", "screen", () => (state.own.screen ? stopShare(room) : startShare(room))),
    hand: button("Raise hand", "hand", () => toggleHand(room), { action: "hand" }),
    react: button("Reactions", "smile", () => toggleReactions(room), { toggle: false, action: "react", popup: "menu" }),
    chat: button("Chat", "chat", () => togglePanel(room, "chat"), { action: "chat" }),
    people: button("Participants", "people", () => togglePanel(room, "people"), { action: "people" }),
    view: button("Speaker view", "speaker", () => setView(room, state.view === "grid" ? "speaker" : "grid"), { action: "view" }),
    pip,
    keys: button("Keyboard shortcuts", "keyboard", () => showShortcuts(room), { toggle: false, action: "help" }),
    record: room.admin ? button("Record", "record", () => (state.recording ? room.client.stopRecording() : room.client.startRecording())) : null,
    end: room.admin ? button("End meeting for all", "end", () => { if (confirm("End the meeting for everyone?")) room.client.endMeeting(); }, { toggle: false, cls: "danger" }) : null,
    leave: button("Leave", "leave", () => leaveMeeting(room), { toggle: false, cls: "danger" }),
  };
}

// To the dashboard; a page that joined with an application's token has none: it says goodbye.
function leaveMeeting(room) {
  if (room.joined.tokenOnly) finish(room, "You left the meeting", "You can close this page.");
  else location.hash = "#/dashboard";
}

function shortcutActions(room) {
  const { state } = room;
  return {
    mic: () => { setMic(room, !state.micMuted); announce(state.micMuted ? "Microphone muted." : "Microphone on."); },
    cam: () => { setCam(room, !state.camMuted); announce(state.camMuted ? "Camera off." : "Camera on."); },
    hand: () => { toggleHand(room); announce(state.handRaised ? "Hand raised." : "Hand lowered."); },
    chat: () => togglePanel(room, "chat"),
    people: () => togglePanel(room, "people"),
    react: () => toggleReactions(room, true),
    view: () => setView(room, state.view === "grid" ? "speaker" : "grid"),
    nextPage: () => turnPage(room, 1),
    previousPage: () => turnPage(room, -1),
    help: () => showShortcuts(room),
  };
}

// Push-to-talk: true when the space bar took the microphone (it was muted); the microphone is
// muted again when the bar comes up.
function pushToTalk(room, down) {
  const { state } = room;
  if (down) {
    if (!state.micMuted || !state.own.audio) return false;
    state.talking = true;
    setMic(room, false);
    announce("Talking: release the space bar to mute.");
    return true;
  }
  if (state.talking) {
    state.talking = false;
    setMic(room, true);
    announce("Microphone muted.");
  }
  return false;
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

function setView(room, view) {
  room.state.view = view;
  room.state.page = 0;
  renderToggle(room, "view");
  layout(room);
  announce(view === "speaker" ? "Speaker view." : "Grid view.");
}

function turnPage(room, step) {
  const { arrangement } = room.state;
  if (!arrangement || arrangement.pages < 2) return;
  const page = Math.min(Math.max(arrangement.page + step, 0), arrangement.pages - 1);
  if (page === arrangement.page) return;
  room.state.page = page;
  layout(room);
  announce(`Page ${page + 1} of ${arrangement.pages}.`);
}

function togglePin(room, identity) {
  const { state } = room;
  const pinned = state.pins.includes(identity);
  state.pins = pinned ? state.pins.filter((p) => p !== identity) : [...state.pins, identity].slice(-4);
  // The grid puts pins first: show the first page, where the pin now is.
  if (!pinned && state.view === "grid") state.page = 0;
  renderPeople(room);
  layout(room);
  announce(`${nameOf(room, identity)} ${pinned ? "unpinned" : "pinned"}.`);
}

function togglePanel(room, which) {
  room.state.panel = room.state.panel === which ? null : which;
  if (room.state.panel === "chat") {
    room.state.unread = 0;
    renderUnread(room);
  }
  renderPanel(room);
  layout(room);
}

function setRecording(room, status) {
  room.state.recording = status;
  room.view.recording.hidden = !status;
  renderToggle(room, "record");
}

// The reactions menu: a button per emoji; the toolbar button (or E) opens it.
function reactionMenu(room) {
  const menu = h("div", { class: "reactions", role: "menu", "aria-label": "Reactions", hidden: true },
    REACTIONS.map(([emoji, name]) => h("button", {
      role: "menuitem", "aria-label": `React with ${name}`, text: emoji,
      onclick: () => { room.client.react(emoji); toggleReactions(room, false); },
    })));
  menu.addEventListener("keydown", (event) => {
    const items = [...menu.querySelectorAll("button")];
    const at = items.indexOf(document.activeElement);
    if (event.key === "Escape") toggleReactions(room, false);
    else if (event.key === "ArrowRight" || event.key === "ArrowLeft") items[(at + (event.key === "ArrowRight" ? 1 : items.length - 1)) % items.length].focus();
    else return;
    event.preventDefault();
    event.stopPropagation();
  });
  return menu;
}

function toggleReactions(room, open = null) {
  const { reactions, buttons } = room.view;
  const show = open ?? reactions.hidden;
  reactions.hidden = !show;
  buttons.react.setAttribute("aria-expanded", String(show));
  if (show) reactions.querySelector("button").focus();
  else if (reactions.contains(document.activeElement)) buttons.react.focus();
}

function showShortcuts(room) {
  const dialog = room.view.shortcuts;
  if (!dialog.open) dialog.showModal();
}

// Picture-in-picture of whoever speaks: it follows the dominant speaker while it is open.
function speakerVideo(room) {
  const { state } = room;
  const keys = [state.dominant, state.lastSpeaker, state.arrangement?.stage?.key, ...(state.arrangement?.shown ?? []).map((t) => t.key)];
  for (const key of keys) {
    const video = key && key !== room.client.identity ? state.tiles.get(key)?.querySelector("video[data-track]") : null;
    if (video && video.videoWidth > 0) return video;
  }
  return null;
}

async function togglePictureInPicture(room) {
  try {
    if (document.pictureInPictureElement) {
      await document.exitPictureInPicture();
    } else {
      const video = speakerVideo(room);
      if (!video) throw new Error("nobody's video is playing yet");
      await enterPictureInPicture(room, video);
    }
    renderToggle(room, "pip", Boolean(document.pictureInPictureElement));
    layout(room);
  } catch (e) {
    announce(`Picture-in-picture failed: ${errorText(e)}`);
  }
}

function followInPictureInPicture(room) {
  if (!document.pictureInPictureElement) return;
  const video = speakerVideo(room);
  if (video && video !== document.pictureInPictureElement) enterPictureInPicture(room, video).catch(() => {});
}

async function enterPictureInPicture(room, video) {
  await video.requestPictureInPicture();
  room.state.pipKey = video.closest("li")?.dataset.key ?? null;
  video.addEventListener("leavepictureinpicture", () => setTimeout(() => {
    if (!document.pictureInPictureElement) room.state.pipKey = null;
    renderToggle(room, "pip", Boolean(document.pictureInPictureElement));
    layout(room);
  }, 0), { once: true });
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
    view.uplinkBanner,
    view.roomBox);
  view.stage.replaceChildren(view.tileList, view.selfList);
  view.roomBox.replaceChildren(h("div", { class: "room-main" }, view.stage, view.pager,
    h("div", { class: "toolbar", role: "toolbar", "aria-label": "Meeting controls" }, Object.values(view.buttons), view.reactions)), view.panel, view.audioBox, view.shortcuts);
  tileFor(room, client.identity);
  for (const p of client.participants.values()) tileFor(room, p.identity);
  renderAll(room);
  layout(room);
}

// Previous and next page, and where one is.
function pagerView(room) {
  const previous = h("button", { text: "", "aria-label": "Previous page", "aria-keyshortcuts": "ArrowLeft PageUp", onclick: () => turnPage(room, -1) }, icon("prev"));
  const next = h("button", { "aria-label": "Next page", "aria-keyshortcuts": "ArrowRight PageDown", onclick: () => turnPage(room, 1) }, icon("next"));
  const where = h("span", { class: "where", text: "Page 1 of 1" });
  const nav = h("nav", { class: "pager", "aria-label": "Pages", hidden: true }, previous, where, next);
  nav.parts = { previous, next, where };
  return nav;
}

// A swipe across the stage turns the page (phones and tablets).
function swipes(room) {
  const stage = room.view.stage;
  let start = null;
  const down = (e) => { start = { x: e.clientX, y: e.clientY }; };
  const up = (e) => {
    if (!start) return;
    const dx = e.clientX - start.x;
    const dy = e.clientY - start.y;
    start = null;
    if (Math.abs(dx) > 60 && Math.abs(dx) > 2 * Math.abs(dy)) turnPage(room, dx < 0 ? 1 : -1);
  };
  stage.addEventListener("pointerdown", down);
  stage.addEventListener("pointerup", up);
  stage.addEventListener("pointercancel", () => { start = null; });
}

// The toolbar's toggle buttons: whether each is pressed in the state, its text when pressed and
// when not (none: the text stays), and its icon when pressed and when not.
const TOGGLES = {
  mic: { pressed: (s) => s.micMuted, on: "Unmute microphone", off: "Mute microphone", icons: ["mic-off", "mic"] },
  cam: { pressed: (s) => s.camMuted, on: "Turn camera on", off: "Turn camera off", icons: ["camera-off", "camera"] },
  share: { on: "Stop sharing", off: "Share screen" }, // pressed while our share is being sent
  hand: { pressed: (s) => s.handRaised, on: "Lower hand", off: "Raise hand" },
  chat: { pressed: (s) => s.panel === "chat" },
  people: { pressed: (s) => s.panel === "people" },
  view: { pressed: (s) => s.view === "speaker", icons: ["grid", "speaker"], on: "Grid view", off: "Speaker view" },
  pip: { pressed: () => Boolean(document.pictureInPictureElement) },
  record: { pressed: (s) => Boolean(s.recording), on: "Stop recording", off: "Record" },
};

function renderToggle(room, name, pressed = TOGGLES[name].pressed(room.state)) {
  const button = room.view.buttons[name];
  if (!button) return; // Record: hosts and co-hosts only; picture-in-picture where supported
  const { on, off, icons } = TOGGLES[name];
  button.setAttribute("aria-pressed", String(pressed));
  if (on) button.querySelector(".label").textContent = pressed ? on : off;
  if (icons) button.querySelector("svg").replaceWith(icon(icons[pressed ? 0 : 1]));
}

// The chat button's count of messages not read yet.
function renderUnread(room) {
  const button = room.view.buttons.chat;
  const count = room.state.unread;
  button.querySelector(".unread")?.remove();
  if (count > 0) {
    button.append(h("span", { class: "unread", "aria-hidden": "true", text: count > 99 ? "99+" : String(count) }));
    button.setAttribute("aria-label", `Chat, ${count} unread`);
  } else {
    button.removeAttribute("aria-label");
  }
}

function renderPanel(room) {
  const { state, view } = room;
  renderToggle(room, "chat");
  renderToggle(room, "people");
  view.panel.hidden = !state.panel;
  view.roomBox.classList.toggle("with-panel", Boolean(state.panel));
  const head = (title) => h("div", { class: "panel-head" }, h("h2", { text: title }),
    h("button", { "aria-label": "Close panel", text: "✕", onclick: () => togglePanel(room, state.panel) }));
  if (state.panel === "chat") view.panel.replaceChildren(head("Chat"), view.chatLog, view.chatForm);
  if (state.panel === "people") {
    renderPeople(room);
    view.panel.replaceChildren(head("Participants"), view.peopleCount, view.peopleSearch, view.peopleList);
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

// The participant list: "N people", a search box, hands up first in the order raised, who is
// speaking, and a pin (and, for hosts, mute and remove) per person.
function renderPeople(room) {
  const { client, admin, state, view } = room;
  const everyone = [...client.participants.values()];
  view.peopleCount.textContent = everyone.length === 1 ? "1 person" : `${everyone.length} people`;
  view.peopleList.replaceChildren(...peopleOrder(everyone, state.peopleQuery).map((p) => {
    const me = p.identity === client.identity;
    const pinned = state.pins.includes(p.identity);
    return h("li", { "data-identity": p.identity },
      h("span", { class: "who" },
        h("span", { text: `${p.name}${me ? " (you)" : ""}${p.role === "host" ? " · host" : ""}` }),
        p.hand_raised ? h("span", { class: "state hand", text: "✋ Hand raised" }) : null,
        state.speaking.has(p.identity) ? h("span", { class: "state speaking", text: "Speaking" }) : null),
      h("span", { class: "row" },
        me ? null : h("button", { "aria-pressed": String(pinned), "aria-label": `${pinned ? "Unpin" : "Pin"} ${p.name}`, onclick: () => togglePin(room, p.identity) }, icon("pin")),
        admin && !me ? h("button", { text: "Mute", "aria-label": `Mute ${p.name}`, onclick: () => client.muteParticipant(p.identity, "audio") }) : null,
        admin && !me ? h("button", { class: "danger", text: "Remove", "aria-label": `Remove ${p.name}`, onclick: () => { if (confirm(`Remove ${p.name} from the meeting?`)) client.removeParticipant(p.identity); } }) : null));
  }));
}

// Every tile and the participant list.
function renderAll(room) {
  for (const identity of room.client.participants.keys()) renderTile(room, identity);
  renderTile(room, room.client.identity);
  renderPeople(room);
}

// A participant's camera tile (or screen-share tile), made on first use.  Our own tiles go to the
// self view, everyone else's to the grid.
function tileFor(room, identity, screen = false) {
  const key = screen ? `${identity}:screen` : identity;
  let tile = room.state.tiles.get(key);
  if (tile) return tile;
  const mine = identity === room.client.identity;
  const name = nameOf(room, identity) + (mine ? " (you)" : "") + (screen ? " · screen" : "");
  tile = h("li", { class: "tile", "aria-label": name, "data-identity": identity, "data-key": key },
    h("div", { class: "placeholder" }, h("span", { class: "avatar", "aria-hidden": "true", text: initials(nameOf(room, identity)) })),
    h("div", { class: "label" }, h("span", { class: "name", text: name }), h("span", { class: "state mic", hidden: true, text: "Muted" }),
      h("span", { class: "state hand", hidden: true, text: "✋ Hand raised" }), h("span", { class: "state quality", hidden: true })));
  room.state.tiles.set(key, tile);
  (mine ? room.view.selfList : room.view.tileList).append(tile);
  if (!mine) room.sight?.observe(tile);
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
  if (trackId) video.dataset.track = trackId;
}

function dropTile(room, key) {
  const tile = room.state.tiles.get(key);
  if (!tile) return;
  room.sight?.unobserve(tile);
  tile.remove();
  room.state.tiles.delete(key);
  room.state.outOfSight.delete(key);
  if (!key.endsWith(":screen")) room.view.audioBox.querySelectorAll(`audio[data-identity="${key}"]`).forEach((a) => a.remove());
}

// A tile's marks from the state: muted, hand raised, camera off (the avatar shows), speaking,
// and the quality of its video.
function renderTile(room, identity) {
  const { client, state } = room;
  const tile = state.tiles.get(identity);
  if (!tile) return;
  const info = client.participants.get(identity);
  const mine = identity === client.identity;
  const audio = [...client.tracks.values()].find((t) => t.participant === identity && t.kind === "audio");
  const micMuted = mine ? state.micMuted : (!audio || audio.muted);
  tile.querySelector(".mic").hidden = !micMuted;
  tile.querySelector(".hand").hidden = !info?.hand_raised;
  const cam = cameraTrack(client, identity);
  const video = tile.querySelector("video");
  const camOffNow = mine ? state.camMuted : (!cam || cam.muted);
  if (video) video.hidden = camOffNow;
  tile.querySelector(".placeholder").hidden = Boolean(video) && !camOffNow;
  tile.classList.toggle("speaking", state.speaking.has(identity));
  tile.classList.toggle("dominant", state.dominant === identity);
  // Our own tile: only a poor uplink (the encoder starts held back by bandwidth on every call).
  const ownPoor = state.uplink?.level === "poor" ? { ...state.uplink, limited: false } : null;
  renderTileQuality(tile, mine ? ownPoor : cam && !camOffNow ? state.quality.get(cam.track_id) : null);
}

function renderTileQuality(tile, quality) {
  const badge = tile.querySelector(".quality");
  const text = qualityText(quality);
  badge.hidden = !text;
  badge.className = `state quality ${quality?.limited ? "limited" : quality?.level ?? ""}`;
  badge.textContent = text ? `⚠ ${text}` : "";
  badge.title = text ? qualityDetails(quality) : "";
}

function cameraTrack(client, identity) {
  return [...client.tracks.values()].find((t) => t.participant === identity && t.kind === "video" && t.source !== "screen") ?? null;
}

// The stage --------------------------------------------------------------------------------------

// Everyone else's tiles as layout.js sees them, in the order they were made (the order people
// joined), each with the video track it shows.
function tileList(room) {
  const { client, state } = room;
  const out = [];
  for (const key of state.tiles.keys()) {
    const screen = key.endsWith(":screen");
    const identity = screen ? key.slice(0, -7) : key;
    if (identity === client.identity) continue;
    const track = screen
      ? [...client.tracks.values()].find((t) => t.participant === identity && t.kind === "video" && t.source === "screen")
      : cameraTrack(client, identity);
    out.push({ key, identity, screen, trackId: track?.track_id ?? null });
  }
  return out;
}

// Lays the stage out from the state: which tiles show, the stage tile, the floating speaker, the
// grid's shape and the pager; then asks the SFU for what is now on screen.
function layout(room) {
  const { state, view } = room;
  if (state.ended) return;
  const tiles = tileList(room);
  const width = window.innerWidth;
  const shape = gridShape(width, window.innerHeight);
  const arrangement = arrange({
    tiles, pins: state.pins, dominant: state.dominant, lastSpeaker: state.lastSpeaker, view: state.view,
    page: state.page, pageSize: shape.size, filmSize: filmstripSize(width),
  });
  state.arrangement = arrangement;
  state.page = arrangement.page;
  const shown = new Set(arrangement.shown.map((t) => t.key));
  for (const tile of tiles) {
    const element = state.tiles.get(tile.key);
    element.hidden = !shown.has(tile.key) && arrangement.floating?.key !== tile.key;
    element.classList.toggle("on-stage", arrangement.stage?.key === tile.key);
    element.classList.toggle("floating", arrangement.floating?.key === tile.key);
  }
  // The shown tiles in their order (moving a playing video keeps it playing).
  const order = [...arrangement.shown, arrangement.floating].filter(Boolean).map((t) => state.tiles.get(t.key));
  const current = [...view.tileList.children].filter((e) => !e.hidden);
  if (order.some((e, i) => current[i] !== e)) for (const element of order) view.tileList.append(element);
  for (const element of order) element.querySelector("video")?.play().catch(() => {});
  setGrid(view.tileList, state.view, arrangement.shown.length, shape, width < window.innerHeight);
  view.tileList.classList.toggle("speaker-view", state.view === "speaker");
  view.selfList.classList.toggle("alone", tiles.length === 0);
  view.selfList.classList.toggle("top", state.view === "speaker");
  const { previous, next, where } = view.pager.parts;
  view.pager.hidden = arrangement.pages < 2;
  where.textContent = `Page ${arrangement.page + 1} of ${arrangement.pages}`;
  previous.disabled = arrangement.page === 0;
  next.disabled = arrangement.page >= arrangement.pages - 1;
  scheduleSync(room);
}

// The grid's columns and rows for `count` tiles: as square as the page's shape allows (two people
// get two large tiles, not two cells of a 3 x 3 grid); upright screens stack before they widen.
function setGrid(list, view, count, shape, upright) {
  let cols;
  let rows;
  if (view === "speaker") {
    cols = Math.max(1, count - 1);
    rows = 2;
  } else if (upright) {
    rows = Math.min(shape.rows, Math.max(1, Math.ceil(Math.sqrt(count))));
    cols = Math.max(1, Math.ceil(count / rows));
  } else {
    cols = Math.min(shape.cols, Math.max(1, Math.ceil(Math.sqrt(count))));
    rows = Math.max(1, Math.ceil(count / cols));
  }
  list.style.setProperty("--cols", String(cols));
  list.style.setProperty("--rows", String(rows));
}

function scheduleSync(room) {
  clearTimeout(room.syncTimer);
  room.syncTimer = setTimeout(() => syncForwarding(room), SYNC_DELAY_MS);
}

// Tells the SFU what this page shows: the pins (the page, the speaker and what the person pinned),
// each drawn track's size, and "off" for every other video track.  A hidden tab asks for nothing
// but the picture-in-picture window.  Only what changed is sent, in one message.
function syncForwarding(room) {
  const { state, client } = room;
  if (state.ended || !client.ws || client.ws.readyState !== WebSocket.OPEN || !state.arrangement) return;
  const tiles = tileList(room);
  let arrangement = state.arrangement;
  if (document.hidden) {
    const pip = tiles.find((t) => t.key === state.pipKey);
    arrangement = { shown: pip ? [pip] : [], stage: null, floating: null };
  }
  const scale = window.devicePixelRatio || 1;
  const sizes = {};
  for (const tile of [...arrangement.shown, arrangement.floating].filter(Boolean)) {
    const rect = tile.key === state.pipKey && document.pictureInPictureElement
      ? { width: 640, height: 360 }
      : state.tiles.get(tile.key)?.getBoundingClientRect();
    if (rect) sizes[tile.key] = { width: rect.width * scale, height: rect.height * scale };
  }
  const hiddenKeys = document.hidden ? new Set() : state.outOfSight;
  const changes = changedRequests(state.sent, trackRequests(tiles, arrangement, sizes, hiddenKeys));
  const pins = document.hidden ? (state.pipKey ? pinsFor(arrangement, [], null) : []) : pinsFor(arrangement, state.pins, state.dominant);
  try {
    if (!state.sentPins || pins.join() !== state.sentPins.join()) {
      client.pin(pins);
      state.sentPins = pins;
    }
    if (changes.length) {
      client.trackSettingsMany(changes);
      for (const { track_id: trackId, ...want } of changes) state.sent[trackId] = want;
    }
  } catch {
    // the connection closed meanwhile: the next layout after reconnecting sends it all
  }
}

// Quality ----------------------------------------------------------------------------------------

// Samples both connections' stats: each remote video's quality on its tile, and a banner when
// one's own uplink is poor.
async function sampleQuality(room) {
  const { client, state, view } = room;
  try {
    if (client.subscriber) {
      const report = await client.subscriber.getStats();
      state.quality = remoteQuality(report, client.midTracks, state.previousStats, client.forwarding);
    }
    if (client.publisher) state.uplink = uplinkQuality(await client.publisher.getStats());
  } catch {
    return; // a connection closed under the sample: the next one tells
  }
  for (const identity of client.participants.keys()) renderTile(room, identity);
  renderTile(room, client.identity);
  const poor = state.uplink?.level === "poor";
  if (poor !== !view.uplinkBanner.hidden) {
    view.uplinkBanner.hidden = !poor;
    view.uplinkBanner.textContent = poor ? `Your connection is poor: others may not see or hear you well (${qualityDetails(state.uplink)}).` : "";
  }
}
