// VideoConf web client: screens for accounts, meetings and the meeting room.  No build step:
// ES modules served as they are.  Routes live in the hash (#/dashboard, #/join/CODE, ...);
// invite links (/j/CODE) land on the join screen.

import { api, ApiError, blobUrl, login, logout, register, session, updateUser } from "./api.js";
import { SfuClient } from "./sfu-client.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const announcer = document.getElementById("announcer");

// Helpers ----------------------------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) if (child !== null && child !== undefined) node.append(child);
  return node;
}

export function announce(text) {
  announcer.textContent = "";
  setTimeout(() => (announcer.textContent = text), 50);
}

function show(title, ...content) {
  document.title = `${title} · VideoConf`;
  main.replaceChildren(...content);
  main.focus({ preventScroll: true });
  window.scrollTo(0, 0);
}

function errorText(error) {
  if (error instanceof ApiError) {
    const messages = {
      invalid_credentials: "Wrong email or password.",
      wrong_passcode: "That passcode is not right.",
      passcode_required: "This meeting needs a passcode.",
      meeting_ended: "This meeting has ended.",
      meeting_cancelled: "This meeting was cancelled.",
      meeting_not_started: "The host has not started this meeting yet.",
      not_found: "No meeting has that code.",
      email_taken: "An account with this email exists already.",
    };
    if (error.status === 422 && Array.isArray(error.details)) {
      return error.details.map((d) => `${(d.loc || []).slice(-1)[0] ?? "field"}: ${d.msg ?? d.message ?? "invalid"}`).join("; ");
    }
    return messages[error.code] ?? error.message;
  }
  if (error?.name === "NotAllowedError") return "The camera or microphone was blocked. Allow it in the browser to take part with media.";
  if (error?.name === "NotFoundError") return "No camera or microphone was found.";
  return error?.message ?? String(error);
}

function errorBox() {
  return h("p", { class: "error", role: "alert" });
}

// Runs `action` when `form` is submitted; what it throws is shown in `error` (cleared first,
// with any `others`, such as a "saved" status).
function onSubmit(form, error, action, ...others) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    for (const node of [error, ...others]) node.textContent = "";
    try {
      await action();
    } catch (e) {
      error.textContent = errorText(e);
    }
  });
}

function field(label, attrs) {
  return h("label", {}, label, h("input", attrs));
}

function check(label, attrs) {
  return h("label", { class: "check" }, h("input", { type: "checkbox", ...attrs }), label);
}

function when(iso) {
  return new Date(iso).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

function inviteLink(meeting) {
  return `${location.origin}/j/${meeting.code}`;
}

// A chat message's sender: signaling sends {identity, name}, the REST history {id, display_name}.
function senderName(sender, fallback) {
  return sender?.name ?? sender?.display_name ?? fallback;
}

function initials(name) {
  return (name || "?").split(/\s+/).filter(Boolean).slice(0, 2).map((w) => w[0].toUpperCase()).join("") || "?";
}

// Routing ----------------------------------------------------------------------------------------

const routes = [
  [/^#\/login$/, loginView, false],
  [/^#\/register$/, registerView, false],
  [/^#\/profile$/, profileView, true],
  [/^#\/recordings$/, recordingsView, true],
  [/^#\/join\/([\w-]+)$/, joinView, true],
  [/^#\/meeting\/([\w-]+)$/, preJoinView, true],
  [/^#\/(dashboard)?$/, dashboardView, true],
];

let leaveRoom = null; // set while in a meeting: called before another screen replaces it

async function route() {
  if (location.pathname.startsWith("/j/")) {
    const code = location.pathname.slice(3);
    history.replaceState(null, "", `/#/join/${code}`);
  }
  const hash = location.hash || "#/";
  if (leaveRoom) {
    const leave = leaveRoom;
    leaveRoom = null;
    leave();
  }
  renderNav();
  for (const [pattern, view, needsAuth] of routes) {
    const match = hash.match(pattern);
    if (!match) continue;
    if (needsAuth && !session()) {
      sessionStorage.setItem("videoconf.next", hash);
      location.hash = "#/login";
      return;
    }
    try {
      await view(...match.slice(1));
    } catch (error) {
      show("Error", h("h1", { text: "Something went wrong" }), h("p", { class: "error", role: "alert", text: errorText(error) }));
    }
    return;
  }
  show("Not found", h("h1", { text: "Page not found" }), h("a", { href: "#/", text: "Go to the dashboard" }));
}

function renderNav() {
  const user = session()?.user;
  if (!user) {
    nav.replaceChildren(h("a", { class: "button", href: "#/login", text: "Sign in" }), h("a", { class: "button", href: "#/register", text: "Create account" }));
    return;
  }
  nav.replaceChildren(
    h("a", { class: "button", href: "#/dashboard", text: "Dashboard" }),
    h("a", { class: "button", href: "#/recordings", text: "Recordings" }),
    h("a", { class: "button", href: "#/profile", "aria-label": `Profile of ${user.display_name}` }, h("span", { class: "avatar", "aria-hidden": "true", text: user.initials || initials(user.display_name) })),
  );
}

function afterSignIn() {
  const next = sessionStorage.getItem("videoconf.next");
  sessionStorage.removeItem("videoconf.next");
  location.hash = next && next !== "#/login" ? next : "#/dashboard";
}

// Accounts -----------------------------------------------------------------------------------------

function loginView() {
  const error = errorBox();
  const form = h("form", { "aria-label": "Sign in" },
    field("Email", { name: "email", type: "email", autocomplete: "email", required: true }),
    field("Password", { name: "password", type: "password", autocomplete: "current-password", required: true }),
    error,
    h("button", { class: "primary", type: "submit", text: "Sign in" }));
  onSubmit(form, error, async () => {
    await login(form.email.value.trim(), form.password.value);
    afterSignIn();
  });
  show("Sign in", h("div", { class: "card" }, h("h1", { text: "Sign in" }), form,
    h("p", {}, "No account yet? ", h("a", { href: "#/register", text: "Create one" }))));
}

function registerView() {
  const error = errorBox();
  const form = h("form", { "aria-label": "Create account" },
    field("Name", { name: "name", autocomplete: "name", required: true, maxlength: 100 }),
    field("Email", { name: "email", type: "email", autocomplete: "email", required: true }),
    field("Password", { name: "password", type: "password", autocomplete: "new-password", required: true, minlength: 8 }),
    error,
    h("button", { class: "primary", type: "submit", text: "Create account" }));
  onSubmit(form, error, async () => {
    await register(form.email.value.trim(), form.password.value, form.name.value.trim());
    afterSignIn();
  });
  show("Create account", h("div", { class: "card" }, h("h1", { text: "Create account" }), form,
    h("p", {}, "Have an account? ", h("a", { href: "#/login", text: "Sign in" }))));
}

async function profileView() {
  const me = await api("GET", "/api/users/me");
  const saved = h("p", { role: "status" });
  const error = errorBox();
  const profile = h("form", { "aria-label": "Profile" },
    field("Name", { name: "name", value: me.display_name, required: true, maxlength: 100 }),
    field("Time zone", { name: "timezone", value: me.timezone, required: true }),
    error, saved,
    h("button", { class: "primary", type: "submit", text: "Save profile" }));
  onSubmit(profile, error, async () => {
    const user = await api("PUT", "/api/users/me", { display_name: profile.name.value.trim(), timezone: profile.timezone.value.trim() });
    updateUser(user);
    renderNav();
    saved.textContent = "Profile saved.";
  }, saved);
  const pwError = errorBox();
  const pwSaved = h("p", { role: "status" });
  const password = h("form", { "aria-label": "Change password" },
    field("Current password", { name: "current", type: "password", autocomplete: "current-password", required: true }),
    field("New password", { name: "next", type: "password", autocomplete: "new-password", required: true, minlength: 8 }),
    pwError, pwSaved,
    h("button", { type: "submit", text: "Change password" }));
  onSubmit(password, pwError, async () => {
    await api("POST", "/api/users/me/password", { current_password: password.current.value, new_password: password.next.value });
    pwSaved.textContent = "Password changed.";
    password.reset();
  }, pwSaved);
  show("Profile",
    h("h1", { text: "Profile" }),
    h("div", { class: "row card" }, h("span", { class: "avatar", "aria-hidden": "true", text: me.initials }), h("span", { text: `${me.display_name} · ${me.email}` })),
    h("div", { class: "grid2" }, h("section", { class: "card", "aria-label": "Profile details" }, profile), h("section", { class: "card", "aria-label": "Password" }, password)),
    h("button", { onclick: async () => { await logout(); location.hash = "#/login"; }, text: "Sign out" }));
}

// Dashboard ----------------------------------------------------------------------------------------

function meetingItem(meeting) {
  const status = h("span", { role: "status" });
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(inviteLink(meeting));
      status.textContent = "Link copied.";
    } catch {
      status.textContent = inviteLink(meeting);
    }
  };
  const ics = async () => {
    const url = await blobUrl(`/api/meetings/${meeting.id}/calendar.ics`);
    const a = h("a", { href: url, download: `${meeting.title}.ics` });
    document.body.append(a);
    a.click();
    a.remove();
  };
  const invite = h("form", { class: "row", "aria-label": `Invite to ${meeting.title}` },
    h("label", { class: "visually-hidden", for: `invite-${meeting.id}`, text: `Emails to invite to ${meeting.title}` }),
    h("input", { id: `invite-${meeting.id}`, name: "emails", placeholder: "Emails, comma separated", class: "grow" }),
    h("button", { type: "submit", text: "Invite" }));
  onSubmit(invite, status, async () => {
    const emails = invite.emails.value.split(/[,\s]+/).filter(Boolean);
    if (!emails.length) return;
    const result = await api("POST", `/api/meetings/${meeting.id}/invitations`, { emails });
    status.textContent = `Invited ${result.invited.length}.` + (result.unknown_emails.length ? ` No account for ${result.unknown_emails.join(", ")}.` : "");
    invite.reset();
  });
  const admin = meeting.my_role === "host" || meeting.my_role === "cohost";
  return h("li", { class: "meeting-item" },
    h("strong", { text: meeting.title }),
    h("span", { class: "meta", text: `${when(meeting.start_time)} · ${meeting.status} · code ${meeting.code}${meeting.passcode ? ` · passcode ${meeting.passcode}` : ""}` }),
    h("div", { class: "row" },
      meeting.status === "ended" || meeting.status === "cancelled" ? null : h("a", { class: "button primary", href: `#/meeting/${meeting.id}`, text: admin && meeting.status === "scheduled" ? "Start" : "Join", "aria-label": `${admin && meeting.status === "scheduled" ? "Start" : "Join"} ${meeting.title}` }),
      h("button", { onclick: copy, text: "Copy invite link", "aria-label": `Copy invite link of ${meeting.title}` }),
      h("button", { onclick: ics, text: "Download .ics", "aria-label": `Download calendar file of ${meeting.title}` })),
    admin ? invite : null,
    status);
}

async function dashboardView() {
  const [upcoming, mine, notifications] = await Promise.all([
    api("GET", "/api/meetings/upcoming?limit=20"),
    api("GET", "/api/meetings/my-meetings?limit=20"),
    api("GET", "/api/notifications?limit=10").catch(() => ({ items: [], unread_count: 0 })),
  ]);
  const error = errorBox();
  const instant = h("button", { class: "primary", text: "New meeting", onclick: async () => {
    try {
      const meeting = await api("POST", "/api/meetings", { title: `${session().user.display_name}'s meeting`, kind: "instant" });
      location.hash = `#/meeting/${meeting.id}`;
    } catch (e) {
      error.textContent = errorText(e);
    }
  } });

  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  const schedule = h("form", { "aria-label": "Schedule a meeting" },
    field("Title", { name: "title", required: true, maxlength: 200 }),
    h("div", { class: "grid2" }, field("Date", { name: "date", type: "date", required: true }), field("Time", { name: "time", type: "time", required: true })),
    field("Time zone", { name: "timezone", value: zone, required: true }),
    field("Duration (minutes)", { name: "duration", type: "number", min: 5, max: 1440, value: 60 }),
    field("Passcode (optional)", { name: "passcode", maxlength: 64 }),
    check("Waiting room", { name: "waiting_room" }),
    check("Mute participants on join", { name: "mute_on_join" }),
    h("button", { type: "submit", text: "Schedule" }));
  onSubmit(schedule, error, async () => {
    const body = {
      title: schedule.title.value.trim(), kind: "scheduled",
      start_time: new Date(`${schedule.date.value}T${schedule.time.value}`).toISOString(),
      duration_minutes: Number(schedule.duration.value) || 60, timezone: schedule.timezone.value.trim(),
      settings: { waiting_room: schedule.waiting_room.checked, mute_on_join: schedule.mute_on_join.checked },
    };
    if (schedule.passcode.value) body.passcode = schedule.passcode.value;
    await api("POST", "/api/meetings", body);
    announce("Meeting scheduled.");
    await dashboardView();
  });

  const join = h("form", { "aria-label": "Join a meeting" },
    field("Meeting code or link", { name: "code", required: true, autocomplete: "off" }),
    h("button", { class: "primary", type: "submit", text: "Join" }));
  join.addEventListener("submit", (event) => {
    event.preventDefault();
    const value = join.code.value.trim();
    const code = value.includes("/j/") ? value.split("/j/")[1].split(/[?#]/)[0] : value;
    location.hash = `#/join/${encodeURIComponent(code)}`;
  });

  const list = (items, empty) => items.length ? h("ul", { class: "plain" }, items.map(meetingItem)) : h("p", { class: "notice", text: empty });
  show("Dashboard",
    h("h1", { text: "Dashboard" }),
    error,
    h("div", { class: "grid2" },
      h("section", { class: "card", "aria-labelledby": "start-h" }, h("h2", { id: "start-h", text: "Start or join" }), h("div", { class: "row" }, instant), h("h3", { text: "Join by code" }), join),
      h("section", { class: "card", "aria-labelledby": "schedule-h" }, h("h2", { id: "schedule-h", text: "Schedule" }), schedule)),
    h("section", { class: "card", "aria-labelledby": "upcoming-h" }, h("h2", { id: "upcoming-h", text: "Upcoming meetings" }), list(upcoming.items, "Nothing scheduled.")),
    h("section", { class: "card", "aria-labelledby": "mine-h" }, h("h2", { id: "mine-h", text: "My meetings" }), list(mine.items, "No meetings yet.")),
    h("section", { class: "card", "aria-labelledby": "notes-h" }, h("h2", { id: "notes-h", text: `Notifications (${notifications.unread_count} unread)` }),
      notifications.items.length
        ? h("ul", { class: "plain" }, notifications.items.map((n) => h("li", { text: `${when(n.created_at)}: ${n.kind.replaceAll("_", " ")}${n.data?.title ? ` · ${n.data.title}` : ""}` })))
        : h("p", { class: "notice", text: "No notifications." })));
}

// Joining ------------------------------------------------------------------------------------------

async function joinView(code) {
  let meeting;
  try {
    meeting = await api("GET", `/api/meetings/by-code/${encodeURIComponent(code)}`);
  } catch (e) {
    show("Join", h("h1", { text: "Join a meeting" }), h("p", { class: "error", role: "alert", text: e.status === 404 ? "No meeting has that code." : errorText(e) }), h("a", { href: "#/dashboard", text: "Back to the dashboard" }));
    return;
  }
  if (meeting.status === "ended" || meeting.status === "cancelled") {
    show("Join", h("h1", { text: meeting.title }), h("p", { class: "error", role: "alert", text: meeting.status === "ended" ? "This meeting has ended." : "This meeting was cancelled." }));
    return;
  }
  await preJoinView(meeting.id, meeting);
}

async function preJoinView(meetingId, known = null) {
  const meeting = known ?? (await api("GET", `/api/meetings/${meetingId}`));
  const video = h("video", { class: "preview", autoplay: true, muted: true, playsinline: true, "aria-label": "Your camera preview" });
  video.muted = true;
  const mediaError = h("p", { class: "error", role: "alert" });
  const error = errorBox();
  const cameras = h("select", { name: "camera" });
  const mics = h("select", { name: "microphone" });
  let stream = null;

  async function preview() {
    if (stream) stream.getTracks().forEach((t) => t.stop());
    stream = null;
    mediaError.textContent = "";
    const constraints = {
      video: { width: { ideal: 1280 }, height: { ideal: 720 }, ...(cameras.value ? { deviceId: { exact: cameras.value } } : {}) },
      audio: mics.value ? { deviceId: { exact: mics.value } } : true,
    };
    try {
      stream = await navigator.mediaDevices.getUserMedia(constraints);
    } catch (e) {
      mediaError.textContent = errorText(e) + " You can still join without media.";
      try {
        stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      } catch {
        stream = null;
      }
    }
    video.srcObject = stream;
    const devices = await navigator.mediaDevices.enumerateDevices().catch(() => []);
    for (const [select, kind, label] of [[cameras, "videoinput", "Camera"], [mics, "audioinput", "Microphone"]]) {
      const current = select.value;
      select.replaceChildren(...devices.filter((d) => d.kind === kind).map((d, i) => h("option", { value: d.deviceId, text: d.label || `${label} ${i + 1}` })));
      if (current) select.value = current;
    }
  }
  let previewing = Promise.resolve();
  const restart = () => (previewing = preview());
  cameras.addEventListener("change", restart);
  mics.addEventListener("change", restart);

  const form = h("form", { "aria-label": "Join settings" },
    field("Your name in the meeting", { name: "display_name", value: session().user.display_name, maxlength: 100, required: true }),
    h("label", {}, "Camera", cameras),
    h("label", {}, "Microphone", mics),
    meeting.has_passcode && !meeting.passcode ? field("Passcode", { name: "passcode", required: true, autocomplete: "off" }) : null,
    check("Join with microphone off", { name: "mic_off", checked: meeting.settings?.mute_on_join }),
    check("Join with camera off", { name: "cam_off" }),
    error,
    h("button", { class: "primary", type: "submit", text: "Join now" }));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    const body = { display_name: form.display_name.value.trim() || undefined };
    if (form.passcode) body.passcode = form.passcode.value;
    const submit = form.querySelector("button[type=submit]");
    submit.disabled = true;
    try {
      await previewing; // join with the camera and microphone once they are open
      const joined = await api("POST", `/api/meetings/${meeting.id}/join`, body);
      const media = stream;
      stream = null;
      await roomView(meeting, joined, media, { micOff: form.mic_off.checked, camOff: form.cam_off.checked, joinBody: body });
    } catch (e) {
      error.textContent = errorText(e);
      submit.disabled = false;
    }
  });
  leaveRoom = () => stream && stream.getTracks().forEach((t) => t.stop());
  show(`Join ${meeting.title}`,
    h("h1", { text: `Join “${meeting.title}”` }),
    h("div", { class: "grid2" }, h("div", {}, video, mediaError), h("div", { class: "card" }, form)));
  await restart();
}

// The meeting room -------------------------------------------------------------------------------

async function roomView(meeting, joined, stream, { micOff, camOff, joinBody = {} }) {
  // The node that served this page is the node to signal (the configured base URL may name
  // another address for the same server).  After the node lost the session (it restarted), the
  // client joins again with a new room token, asked for as the first one was.
  const tokenProvider = async () => {
    const again = await api("POST", `/api/meetings/${meeting.id}/join`, joinBody);
    client.iceServers = again.ice_servers;
    return again.token;
  };
  const client = new SfuClient(`${location.origin.replace(/^http/, "ws")}/signaling`, joined.token, { iceServers: joined.ice_servers, tokenProvider });
  const state = {
    own: { audio: null, video: null, screen: null }, // track ids
    handRaised: false, speaking: new Set(), dominant: null, panel: null, speakerView: false, ended: false,
  };
  const tiles = new Map(); // key (identity or identity:screen) -> tile element
  const tileList = h("ul", { class: "tiles", "aria-label": "Participants' video" });
  const chatLog = h("ul", { class: "chat-log", role: "log", "aria-label": "Chat messages" });
  const peopleList = h("ul", { class: "plain people", "aria-label": "Participants" });
  const quality = h("span", { class: "badge good", role: "status", text: "Connection: good" });
  const recording = h("span", { class: "badge rec", hidden: true, text: "● Recording" });
  const panel = h("aside", { class: "panel", hidden: true });
  const roomBox = h("div", { class: "room" });

  const admin = joined.grants.room_admin;
  const nameOf = (identity) => client.participants.get(identity)?.name ?? (identity === client.identity ? "You" : "Someone");

  // Tiles ----------------------------------------------------------------------------------------
  function tileFor(identity, screen = false) {
    const key = screen ? `${identity}:screen` : identity;
    let tile = tiles.get(key);
    if (tile) return tile;
    const name = nameOf(identity) + (identity === client.identity ? " (you)" : "") + (screen ? " · screen" : "");
    tile = h("li", { class: "tile", "aria-label": name, "data-identity": identity },
      h("div", { class: "placeholder" }, h("span", { class: "avatar", "aria-hidden": "true", text: initials(nameOf(identity)) })),
      h("div", { class: "label" }, h("span", { class: "name", text: name }), h("span", { class: "state mic", hidden: true, text: "Muted" }), h("span", { class: "state hand", hidden: true, text: "✋ Hand raised" })));
    tiles.set(key, tile);
    tileList.append(tile);
    return tile;
  }

  function attachVideo(tile, mediaStream, trackId = null, local = false) {
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
        if (width > 0 && client.ws) client.trackSettings(trackId, { width: width * scale, height: height * scale });
      });
      observer.observe(video);
      video.observer = observer;
    }
  }

  function dropTile(key) {
    const tile = tiles.get(key);
    if (!tile) return;
    tile.querySelector("video")?.observer?.disconnect();
    tile.remove();
    tiles.delete(key);
  }

  function refreshTile(identity) {
    const tile = tiles.get(identity);
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

  const refreshAll = () => { for (const identity of client.participants.keys()) refreshTile(identity); refreshTile(client.identity); renderPeople(); };

  // Panels ---------------------------------------------------------------------------------------
  function renderPeople() {
    const everyone = [...client.participants.values()];
    peopleList.replaceChildren(...everyone.map((p) => h("li", {},
      h("span", { text: `${p.name}${p.identity === client.identity ? " (you)" : ""}${p.role === "host" ? " · host" : ""}${p.hand_raised ? " ✋" : ""}` }),
      admin && p.identity !== client.identity ? h("span", { class: "row" },
        h("button", { text: "Mute", "aria-label": `Mute ${p.name}`, onclick: () => client.muteParticipant(p.identity, "audio") }),
        h("button", { class: "danger", text: "Remove", "aria-label": `Remove ${p.name}`, onclick: () => { if (confirm(`Remove ${p.name} from the meeting?`)) client.removeParticipant(p.identity); } })) : null)));
  }

  const chatForm = h("form", { "aria-label": "Send a chat message", class: "row" },
    h("label", { class: "visually-hidden", for: "chat-input", text: "Message" }),
    h("input", { id: "chat-input", name: "text", placeholder: "Message everyone", maxlength: 4000, autocomplete: "off", class: "grow" }),
    h("button", { type: "submit", class: "primary", text: "Send" }));
  chatForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = chatForm.text.value.trim();
    if (!text) return;
    client.chat(text);
    chatForm.reset();
  });

  function addChat(message) {
    const who = senderName(message.sender, "System");
    chatLog.append(h("li", {}, h("span", { class: "who", text: `${who}: ` }), h("span", { text: message.body })));
    chatLog.scrollTop = chatLog.scrollHeight;
  }

  function openPanel(which) {
    state.panel = state.panel === which ? null : which;
    chatButton.setAttribute("aria-pressed", String(state.panel === "chat"));
    peopleButton.setAttribute("aria-pressed", String(state.panel === "people"));
    panel.hidden = !state.panel;
    roomBox.classList.toggle("with-panel", Boolean(state.panel));
    if (state.panel === "chat") panel.replaceChildren(h("h2", { text: "Chat" }), chatLog, chatForm);
    if (state.panel === "people") { renderPeople(); panel.replaceChildren(h("h2", { text: "Participants" }), peopleList); }
  }

  // Controls -------------------------------------------------------------------------------------
  const micButton = h("button", { "aria-pressed": "false", text: "Mute microphone", onclick: () => setMic(!state.micMuted) });
  const camButton = h("button", { "aria-pressed": "false", text: "Turn camera off", onclick: () => setCam(!state.camMuted) });
  const shareButton = h("button", { "aria-pressed": "false", text: "Share screen", onclick: () => (state.own.screen ? stopShare() : startShare()) });
  const handButton = h("button", { "aria-pressed": "false", text: "Raise hand", onclick: () => { state.handRaised = !state.handRaised; client.raiseHand(state.handRaised); handButton.setAttribute("aria-pressed", String(state.handRaised)); handButton.textContent = state.handRaised ? "Lower hand" : "Raise hand"; } });
  const chatButton = h("button", { "aria-pressed": "false", text: "Chat", onclick: () => openPanel("chat") });
  const peopleButton = h("button", { "aria-pressed": "false", text: "Participants", onclick: () => openPanel("people") });
  const viewButton = h("button", { "aria-pressed": "false", text: "Speaker view", onclick: () => { state.speakerView = !state.speakerView; tileList.classList.toggle("speaker-view", state.speakerView); viewButton.setAttribute("aria-pressed", String(state.speakerView)); } });
  const leaveButton = h("button", { class: "danger", text: "Leave", onclick: () => { location.hash = "#/dashboard"; } });
  const recordButton = admin ? h("button", { "aria-pressed": "false", text: "Record", onclick: () => (state.recording ? client.stopRecording() : client.startRecording()) }) : null;
  function setRecording(status) {
    state.recording = status;
    recording.hidden = !status;
    if (recordButton) {
      recordButton.setAttribute("aria-pressed", String(Boolean(status)));
      recordButton.textContent = status ? "Stop recording" : "Record";
    }
  }
  const endButton = admin ? h("button", { class: "danger", text: "End meeting for all", onclick: () => { if (confirm("End the meeting for everyone?")) client.endMeeting(); } }) : null;

  function setMic(muted) {
    state.micMuted = muted;
    if (state.own.audio) client.mute(state.own.audio, muted);
    micButton.setAttribute("aria-pressed", String(muted));
    micButton.textContent = muted ? "Unmute microphone" : "Mute microphone";
    refreshTile(client.identity);
  }

  function setCam(muted) {
    state.camMuted = muted;
    if (state.own.video) client.mute(state.own.video, muted);
    camButton.setAttribute("aria-pressed", String(muted));
    camButton.textContent = muted ? "Turn camera on" : "Turn camera off";
    refreshTile(client.identity);
  }

  async function startShare() {
    try {
      const display = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
      const track = display.getVideoTracks()[0];
      const [trackId] = await client.publish([{ track, source: "screen", simulcast: false }]);
      state.own.screen = trackId;
      attachVideo(tileFor(client.identity, true), display);
      track.addEventListener("ended", stopShare);
      shareButton.setAttribute("aria-pressed", "true");
      shareButton.textContent = "Stop sharing";
      announce("You are sharing your screen.");
    } catch (e) {
      announce(`Screen sharing failed: ${errorText(e)}`);
    }
  }

  async function stopShare() {
    if (!state.own.screen) return;
    const trackId = state.own.screen;
    state.own.screen = null;
    const own = client.published.get(trackId);
    own?.track.stop();
    await client.unpublish(trackId);
    dropTile(`${client.identity}:screen`);
    shareButton.setAttribute("aria-pressed", "false");
    shareButton.textContent = "Share screen";
  }

  // End states -----------------------------------------------------------------------------------
  function finish(title, text) {
    if (state.ended) return;
    state.ended = true;
    teardown();
    leaveRoom = null;
    show(title, h("h1", { text: title }), h("p", { role: "alert", text }), h("a", { class: "button primary", href: "#/dashboard", text: "Back to the dashboard" }));
    renderNav();
  }

  function teardown() {
    clearInterval(pinger);
    for (const key of [...tiles.keys()]) dropTile(key);
    client.close();
    if (stream) stream.getTracks().forEach((t) => t.stop());
    for (const own of client.published.values()) own.track.stop();
  }

  // Signaling events -----------------------------------------------------------------------------
  client.addEventListener("participant-joined", ({ detail }) => { tileFor(detail.participant.identity); refreshAll(); announce(`${detail.participant.name} joined.`); });
  client.addEventListener("participant-left", ({ detail }) => { dropTile(detail.identity); dropTile(`${detail.identity}:screen`); renderPeople(); announce(`Someone left the meeting.`); });
  client.addEventListener("participant-updated", ({ detail }) => { refreshTile(detail.participant.identity); renderPeople(); if (detail.participant.hand_raised) announce(`${detail.participant.name} raised a hand.`); });
  client.addEventListener("track-muted", ({ detail }) => refreshTile(detail.participant));
  client.addEventListener("track-published", ({ detail }) => refreshTile(detail.track.participant));
  client.addEventListener("track-unpublished", ({ detail }) => {
    const info = [...tiles.entries()].find(([, tile]) => tile.querySelector(`video[data-track="${detail.track_id}"]`));
    if (info && info[0].endsWith(":screen")) dropTile(info[0]);
    else refreshTile(detail.participant);
  });
  client.addEventListener("screen-share-started", ({ detail }) => announce(`${nameOf(detail.participant)} is sharing a screen.`));
  client.addEventListener("chat", ({ detail }) => { addChat(detail.message); if (state.panel !== "chat") announce(`New message from ${senderName(detail.message.sender, "someone")}.`); });
  client.addEventListener("muted-by-host", ({ detail }) => { if (detail.kind === "audio") setMic(true); else setCam(true); announce("The host muted you."); });
  client.addEventListener("removed", ({ detail }) => finish("You were removed", detail.message || "The host removed you from the meeting."));
  client.addEventListener("meeting-ended", () => finish("Meeting ended", "The host ended the meeting for everyone."));
  client.addEventListener("active-speakers", ({ detail }) => { state.speaking = new Set(detail.speakers); state.dominant = detail.dominant; refreshAll(); });
  client.addEventListener("track-forwarding", () => updateQuality());
  client.addEventListener("recording-started", ({ detail }) => { setRecording(detail); announce("This meeting is being recorded."); });
  client.addEventListener("recording-stopped", ({ detail }) => {
    setRecording(null);
    announce(detail.reason === "recorder_failed" ? "Recording stopped: the recorder failed." : "Recording stopped.");
  });
  client.addEventListener("error", ({ detail }) => { if (/recording/.test(detail.code ?? "")) announce(detail.message); });
  client.addEventListener("track", ({ detail }) => {
    const info = client.tracks.get(detail.trackId);
    if (!info) return;
    if (detail.track.kind === "audio") {
      const audio = h("audio", { autoplay: true, "data-track": detail.trackId });
      audio.srcObject = detail.stream;
      tileFor(info.participant).append(audio);
    } else {
      attachVideo(tileFor(info.participant, info.source === "screen"), detail.stream, detail.trackId);
    }
    refreshTile(info.participant);
  });
  client.addEventListener("disconnected", async () => {
    if (state.ended || client.closed || state.reconnecting) return; // failed attempts disconnect too
    state.reconnecting = true;
    quality.className = "badge poor";
    quality.textContent = "Connection: lost, reconnecting";
    announce("Connection lost. Reconnecting.");
    try {
      // Resume, or join again if the node restarted meanwhile; about 30 s in all.
      for (let attempt = 0; attempt < 8 && !state.ended; attempt++) {
        await new Promise((r) => setTimeout(r, Math.min(1000 * (attempt + 1), 5000)));
        try {
          await client.reconnect();
          quality.className = "badge good";
          quality.textContent = "Connection: good";
          announce("Reconnected.");
          return;
        } catch {
          // try again
        }
      }
    } finally {
      state.reconnecting = false;
    }
    finish("Connection lost", "The connection to the meeting was lost. Rejoin from the dashboard.");
  });
  // A new session after the node lost the old one: other people's tiles come back with their
  // tracks, ours keep their local preview under new track ids.
  client.addEventListener("rejoining", () => {
    for (const key of [...tiles.keys()]) if (key !== client.identity && key !== `${client.identity}:screen`) dropTile(key);
  });
  client.addEventListener("rejoined", ({ detail }) => {
    for (const kind of Object.keys(state.own)) if (state.own[kind]) state.own[kind] = detail.ids.get(state.own[kind]) ?? null;
    setRecording(detail.joined.recording ?? null);
    for (const p of client.participants.values()) tileFor(p.identity);
    refreshAll();
  });

  let lastRtt = 0;
  function updateQuality() {
    const limited = [...client.forwarding.values()].some((f) => f.reason === "bandwidth");
    const level = lastRtt > 400 || (limited && lastRtt > 200) ? "poor" : limited || lastRtt > 150 ? "fair" : "good";
    quality.className = `badge ${level}`;
    quality.textContent = `Connection: ${level}`;
  }
  const pinger = setInterval(async () => {
    if (!client.ws || client.ws.readyState !== WebSocket.OPEN) return;
    const started = performance.now();
    try {
      await client.ping();
      lastRtt = performance.now() - started;
      updateQuality();
    } catch {
      // reported by the disconnect handler
    }
  }, 5000);

  // Join -----------------------------------------------------------------------------------------
  try {
    const welcome = await client.connect();
    setRecording(welcome.recording ?? null);
  } catch (e) {
    teardown();
    throw e;
  }
  leaveRoom = teardown;
  window.videoconfRoom = client; // for diagnostics from the console
  if (client.identity && !client.participants.has(client.identity)) {
    client.participants.set(client.identity, { identity: client.identity, name: session().user.display_name, role: joined.grants.room_admin ? "host" : "participant", hand_raised: false });
  }
  const earlier = await api("GET", `/api/meetings/${meeting.id}/messages?limit=50`).catch(() => ({ items: [] }));
  for (const message of earlier.items.reverse()) addChat(message);

  show(meeting.title,
    h("div", { class: "room-head" }, h("h1", { text: meeting.title }), h("div", { class: "badges" }, recording, quality, h("span", { class: "badge", text: `Code ${meeting.code}` }))),
    roomBox);
  roomBox.replaceChildren(h("div", { class: "room-main" }, tileList,
    h("div", { class: "toolbar", role: "toolbar", "aria-label": "Meeting controls" }, micButton, camButton, shareButton, handButton, chatButton, peopleButton, viewButton, recordButton, endButton, leaveButton)), panel);
  tileFor(client.identity);
  for (const p of client.participants.values()) tileFor(p.identity);
  refreshAll();

  if (stream) {
    const tracks = [];
    const audio = stream.getAudioTracks()[0];
    const video = stream.getVideoTracks()[0];
    if (audio) tracks.push({ track: audio, source: "microphone" });
    if (video) tracks.push({ track: video, source: "camera" });
    if (micOff && audio) audio.enabled = false;
    if (camOff && video) video.enabled = false;
    try {
      const ids = await client.publish(tracks);
      tracks.forEach((t, i) => { state.own[t.track.kind] = ids[i]; });
      if (video) attachVideo(tileFor(client.identity), new MediaStream([video]), null, true);
      if (micOff || joined.mute_on_join) setMic(true);
      if (camOff) setCam(true);
    } catch (e) {
      announce(`Your camera and microphone could not be sent: ${errorText(e)}`);
    }
  }
  refreshAll();
  announce(`You joined ${meeting.title}.`);
}

// Recordings -------------------------------------------------------------------------------------

async function recordingsView() {
  const page = await api("GET", "/api/recordings?limit=50");
  const player = h("div");
  const items = page.items.map((r) => h("li", { class: "meeting-item" },
    h("strong", { text: r.meeting_title }),
    h("span", { class: "meta", text: `${when(r.started_at)} · ${r.status}${r.duration_seconds ? ` · ${Math.max(1, Math.round(r.duration_seconds / 60))} min` : ""}` }),
    r.error ? h("span", { class: "meta", text: r.download_url ? `${r.error}; the file holds what was recorded until then.` : r.error }) : null,
    r.download_url ? h("div", { class: "row" },
      h("button", { text: "Play", "aria-label": `Play recording of ${r.meeting_title}`, onclick: async () => {
        player.replaceChildren(h("video", { controls: true, src: await blobUrl(`/api/recordings/${r.id}/download`), class: "full-width", "aria-label": `Recording of ${r.meeting_title}` }));
      } }),
      h("button", { text: "Download", "aria-label": `Download recording of ${r.meeting_title}`, onclick: async () => {
        const a = h("a", { href: await blobUrl(`/api/recordings/${r.id}/download`), download: `${r.meeting_title}.mp4` });
        document.body.append(a);
        a.click();
        a.remove();
      } })) : null));
  show("Recordings", h("h1", { text: "Recordings" }), player,
    items.length ? h("ul", { class: "plain" }, items) : h("p", { class: "notice", text: "No recordings yet." }));
}

// Start --------------------------------------------------------------------------------------------

window.addEventListener("hashchange", route);
route();
if ("serviceWorker" in navigator) {
  navigator.serviceWorker.register("/sw.js").catch(() => {});
}
