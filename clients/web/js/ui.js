// What every screen of the web client builds with: DOM elements from plain values (never HTML
// strings, so that the Content-Security-Policy holds), the screen swap, announcements to screen
// readers, and the words for an error.

import { ApiError } from "./api.js";

const main = document.getElementById("main");
const announcer = document.getElementById("announcer");

export function h(tag, attrs = {}, ...children) {
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

export function show(title, ...content) {
  document.title = `${title} · VideoConf`;
  main.replaceChildren(...content);
  main.focus({ preventScroll: true });
  window.scrollTo(0, 0);
}

export function errorText(error) {
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

// Browsers give camera, microphone and screen only to secure pages (https://, or localhost):
// elsewhere navigator.mediaDevices does not exist.  Why, in words, or null when media can work.
export function mediaUnavailable() {
  if (window.isSecureContext && navigator.mediaDevices?.getUserMedia) return null;
  if (!window.isSecureContext) {
    return `Your browser allows the camera and microphone only on secure pages, and this page was opened over plain HTTP (${location.origin}). ` +
      "Open it with https:// (ask whoever runs this server to set up HTTPS), or on this computer at localhost. You can still join to watch and listen.";
  }
  return "This browser gives this page no camera or microphone. You can still join to watch and listen.";
}

export function initials(name) {
  return (name || "?").split(/\s+/).filter(Boolean).slice(0, 2).map((w) => w[0].toUpperCase()).join("") || "?";
}
