// The meeting room's keyboard shortcuts, listed under "?", and push-to-talk: holding the space bar
// while muted opens the microphone until it is let go.  Keys do nothing while a text field, a
// select or a dialog other than the list has the focus, and never with Ctrl, Alt or Meta held.

import { h } from "./ui.js";

// key -> [action name, what it does]; the room supplies one function per action.
export const SHORTCUTS = [
  ["m", "mic", "Mute or unmute the microphone"],
  ["v", "cam", "Turn the camera off or on"],
  ["h", "hand", "Raise or lower your hand"],
  ["c", "chat", "Open or close the chat"],
  ["p", "people", "Open or close the participant list"],
  ["e", "react", "Send a reaction"],
  ["g", "view", "Switch between grid and speaker view"],
  ["ArrowRight", "nextPage", "Next page of participants"],
  ["ArrowLeft", "previousPage", "Previous page of participants"],
  ["PageDown", "nextPage", "Next page of participants"],
  ["PageUp", "previousPage", "Previous page of participants"],
  ["?", "help", "Show these shortcuts"],
];

const KEY_NAMES = { ArrowRight: "→", ArrowLeft: "←", PageDown: "Page Down", PageUp: "Page Up", " ": "Space" };

export function keyName(key) {
  return KEY_NAMES[key] ?? key.toUpperCase();
}

// The aria-keyshortcuts value of an action's button.
export function keysFor(action) {
  return SHORTCUTS.filter(([, name]) => name === action).map(([key]) => key).join(" ") || null;
}

function typing(target) {
  if (!(target instanceof Element)) return false;
  return Boolean(target.closest("input, textarea, select, [contenteditable=true]")) || (target.closest("dialog") && !target.closest("dialog.shortcuts"));
}

// Listens on the document until the returned function is called.  `actions` maps action names to
// functions; `pushToTalk(down)` is called with true when the space bar goes down while muted and
// with false when it comes up.
export function bindShortcuts(actions, pushToTalk) {
  let talking = false;
  const onDown = (event) => {
    if (event.ctrlKey || event.altKey || event.metaKey || typing(event.target)) return;
    if (event.key === " " && !event.repeat) {
      if (event.target instanceof HTMLButtonElement) return; // Space presses the focused button
      if (pushToTalk(true)) {
        talking = true;
        event.preventDefault();
      }
      return;
    }
    const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
    const found = SHORTCUTS.find(([k]) => k === key || (k === "?" && event.key === "?"));
    if (!found || event.repeat) return;
    const action = actions[found[1]];
    if (!action) return;
    event.preventDefault();
    action();
  };
  const onUp = (event) => {
    if (event.key === " " && talking) {
      talking = false;
      pushToTalk(false);
      event.preventDefault();
    }
  };
  // Letting go elsewhere (the window lost the focus) ends push-to-talk too.
  const onBlur = () => {
    if (talking) {
      talking = false;
      pushToTalk(false);
    }
  };
  document.addEventListener("keydown", onDown);
  document.addEventListener("keyup", onUp);
  window.addEventListener("blur", onBlur);
  return () => {
    document.removeEventListener("keydown", onDown);
    document.removeEventListener("keyup", onUp);
    window.removeEventListener("blur", onBlur);
  };
}

// The list of shortcuts, as a modal dialog.
export function shortcutsDialog() {
  const rows = SHORTCUTS.map(([key, , what]) => h("tr", {}, h("th", { scope: "row" }, h("kbd", { text: keyName(key) })), h("td", { text: what })));
  rows.push(h("tr", {}, h("th", { scope: "row" }, h("kbd", { text: "Space" })), h("td", { text: "Hold to talk while muted" })));
  const dialog = h("dialog", { class: "shortcuts", "aria-labelledby": "shortcuts-title" },
    h("h2", { id: "shortcuts-title", text: "Keyboard shortcuts" }),
    h("table", {}, h("tbody", {}, rows)),
    h("form", { method: "dialog" }, h("button", { class: "primary", text: "Close" })));
  return dialog;
}
