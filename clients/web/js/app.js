// VideoConf web client: screens for accounts, meetings and the meeting room.  No build step:
// ES modules served as they are.  Routes live in the hash (#/dashboard, #/join/CODE, ...);
// invite links (/j/CODE) land on the join screen.

import { api, blobUrl, login, logout, register, session, updateUser } from "./api.js";
import { enterRoom } from "./room.js";
import { announce, errorText, h, initials, mediaUnavailable, show } from "./ui.js";

const nav = document.getElementById("nav");

// Helpers ----------------------------------------------------------------------------------------

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

// Routing ----------------------------------------------------------------------------------------

const routes = [
  [/^#\/login$/, loginView, false],
  [/^#\/register$/, registerView, false],
  [/^#\/profile$/, profileView, true],
  [/^#\/recordings$/, recordingsView, true],
  [/^#\/join\/([\w-]+)$/, joinView, true],
  [/^#\/meeting\/([\w-]+)$/, preJoinView, true],
  [/^#\/(dashboard)?$/, dashboardView, true],
  [/^#\/room\/([\w-]+\.[\w-]+\.[\w-]+)$/, tokenJoinView, false],
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

// The microphone's processing, as getUserMedia constraints; the choice is kept for next time.
const AUDIO_PROCESSING = [["noiseSuppression", "Noise suppression"], ["echoCancellation", "Echo cancellation"]];

function audioProcessing() {
  let saved = {};
  try {
    saved = JSON.parse(localStorage.getItem("videoconf.audio") || "{}") ?? {};
  } catch {
    // a value from elsewhere: the defaults
  }
  return Object.fromEntries(AUDIO_PROCESSING.map(([key]) => [key, saved[key] ?? true]));
}

function audioProcessingChecks(changed) {
  const current = audioProcessing();
  return h("fieldset", { class: "checks" }, h("legend", { text: "Microphone processing" }),
    AUDIO_PROCESSING.map(([key, label]) => check(label, {
      name: key, checked: current[key],
      onchange: (event) => {
        localStorage.setItem("videoconf.audio", JSON.stringify({ ...audioProcessing(), [key]: event.target.checked }));
        changed();
      },
    })));
}

// The camera preview and the device and processing choices of a join screen.  `take()` hands the
// open stream over (the screen no longer stops it); `stop()` closes it.
function mediaChooser() {
  const video = h("video", { class: "preview", autoplay: true, muted: true, playsinline: true, "aria-label": "Your camera preview" });
  video.muted = true;
  const mediaError = h("p", { class: "error", role: "alert" });
  const cameras = h("select", { name: "camera" });
  const mics = h("select", { name: "microphone" });
  let stream = null;

  async function preview() {
    if (stream) stream.getTracks().forEach((t) => t.stop());
    stream = null;
    mediaError.textContent = mediaUnavailable() ?? "";
    if (mediaError.textContent) return;
    const constraints = {
      video: { width: { ideal: 1280 }, height: { ideal: 720 }, ...(cameras.value ? { deviceId: { exact: cameras.value } } : {}) },
      audio: { ...(mics.value ? { deviceId: { exact: mics.value } } : {}), ...audioProcessing() },
    };
    try {
      stream = await navigator.mediaDevices.getUserMedia(constraints);
    } catch (e) {
      mediaError.textContent = errorText(e) + " You can still join without media.";
      try {
        stream = await navigator.mediaDevices.getUserMedia({ audio: audioProcessing() });
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
  // One preview at a time: a change while the camera opens waits for it (else two streams race
  // and the older, opened with the old choices, could win and never be stopped).
  const restart = () => (previewing = previewing.then(preview, preview));
  cameras.addEventListener("change", restart);
  mics.addEventListener("change", restart);
  return {
    preview: h("div", {}, video, mediaError),
    fields: [h("label", {}, "Camera", cameras), h("label", {}, "Microphone", mics), audioProcessingChecks(restart)],
    restart,
    ready: () => previewing, // join once the camera and microphone are open
    take() {
      const media = stream;
      stream = null;
      return media;
    },
    stop: () => stream && stream.getTracks().forEach((t) => t.stop()),
  };
}

async function preJoinView(meetingId, known = null) {
  const meeting = known ?? (await api("GET", `/api/meetings/${meetingId}`));
  const media = mediaChooser();
  const error = errorBox();
  const form = h("form", { "aria-label": "Join settings" },
    field("Your name in the meeting", { name: "display_name", value: session().user.display_name, maxlength: 100, required: true }),
    media.fields,
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
      await media.ready();
      const joined = await api("POST", `/api/meetings/${meeting.id}/join`, body);
      await roomView(meeting, joined, media.take(), { micOff: form.mic_off.checked, camOff: form.cam_off.checked, joinBody: body });
    } catch (e) {
      error.textContent = errorText(e);
      submit.disabled = false;
    }
  });
  leaveRoom = media.stop;
  show(`Join ${meeting.title}`,
    h("h1", { text: `Join “${meeting.title}”` }),
    h("div", { class: "grid2" }, media.preview, h("div", { class: "card" }, form)));
  await media.restart();
}

// A room token from an application's backend (the server API's POST /api/server/tokens, its
// join_url): no account here.  The token says who and where; the node's answer brings the title.
function tokenClaims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(decodeURIComponent(escape(atob(part))));
  } catch {
    return null;
  }
}

async function tokenJoinView(token) {
  const claims = tokenClaims(token);
  if (!claims?.room || (claims.exp && claims.exp * 1000 < Date.now())) {
    show("Link not valid", h("h1", { text: "This link cannot be used" }),
      h("p", { role: "alert", text: "The link to the meeting is not valid or has expired. Ask for a new one." }));
    return;
  }
  const media = mediaChooser();
  const error = errorBox();
  const form = h("form", { "aria-label": "Join settings" },
    h("p", { text: `You join as ${claims.name || claims.sub}.` }),
    media.fields,
    check("Join with microphone off", { name: "mic_off" }),
    check("Join with camera off", { name: "cam_off" }),
    error,
    h("button", { class: "primary", type: "submit", text: "Join now" }));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    const submit = form.querySelector("button[type=submit]");
    submit.disabled = true;
    const joined = { token, grants: claims.grants ?? {}, ice_servers: [], node: null, display_name: claims.name || claims.sub, tokenOnly: true };
    try {
      await media.ready();
      await roomView({ id: claims.room, title: "Meeting", code: "" }, joined, media.take(), { micOff: form.mic_off.checked, camOff: form.cam_off.checked });
    } catch (e) {
      error.textContent = errorText(e);
      submit.disabled = false;
    }
  });
  leaveRoom = media.stop;
  show("Join the meeting", h("h1", { text: "Join the meeting" }),
    h("div", { class: "grid2" }, media.preview, h("div", { class: "card" }, form)));
  await media.restart();
}

// The meeting room -------------------------------------------------------------------------------

// The room itself is room.js's; here it is one of the screens.
async function roomView(meeting, joined, stream, options) {
  await enterRoom(meeting, joined, stream, options, {
    entered: (leave) => { leaveRoom = leave; },
    finished: () => { leaveRoom = null; renderNav(); },
  });
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
