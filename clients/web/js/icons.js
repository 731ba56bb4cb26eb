// Line icons for the room's controls, drawn as SVG elements (no markup strings, so the
// Content-Security-Policy holds).  Each is decoration beside a text label: aria-hidden.

const SVG = "http://www.w3.org/2000/svg";

// 24 x 24 outlines, stroked with the text colour.
const PATHS = {
  mic: ["M12 3a3 3 0 0 1 3 3v6a3 3 0 0 1-6 0V6a3 3 0 0 1 3-3z", "M5 11a7 7 0 0 0 14 0", "M12 18v3"],
  "mic-off": ["M9 9v3a3 3 0 0 0 5.1 2.1", "M15 9.3V6a3 3 0 0 0-5.7-1.3", "M5 11a7 7 0 0 0 11.6 5.3", "M19 11a7 7 0 0 1-.6 2.8", "M12 18v3", "M3 3l18 18"],
  camera: ["M3 7h12v10H3z", "M15 10l6-3v10l-6-3"],
  "camera-off": ["M3 7h9", "M15 11v6H5", "M15 10l6-3v10l-6-3", "M3 3l18 18"],
  screen: ["M3 4h18v12H3z", "M8 20h8", "M12 16v4", "M12 13V7", "M9 10l3-3 3 3"],
  hand: ["M7 12V6a1.5 1.5 0 0 1 3 0v5", "M10 11V4.5a1.5 1.5 0 0 1 3 0V11", "M13 11V5.5a1.5 1.5 0 0 1 3 0V12", "M16 12V8.5a1.5 1.5 0 0 1 3 0V15a6 6 0 0 1-6 6h-1a6 6 0 0 1-5-2.7L4.5 14a1.5 1.5 0 0 1 2.5-1.6L7 12"],
  smile: ["M12 21a9 9 0 1 0 0-18 9 9 0 0 0 0 18z", "M8 14a5 5 0 0 0 8 0", "M9 9.5h.01", "M15 9.5h.01"],
  chat: ["M4 5h16v11H9l-5 4z"],
  people: ["M9 11a3.5 3.5 0 1 0 0-7 3.5 3.5 0 0 0 0 7z", "M2.5 20a6.5 6.5 0 0 1 13 0", "M16 4.5a3.5 3.5 0 0 1 0 6.5", "M18 14a6.5 6.5 0 0 1 3.5 6"],
  grid: ["M4 4h7v7H4z", "M13 4h7v7h-7z", "M4 13h7v7H4z", "M13 13h7v7h-7z"],
  speaker: ["M3 4h18v11H3z", "M3 18h5v2H3z", "M10 18h4v2h-4z", "M16 18h5v2h-5z"],
  pip: ["M3 5h18v14H3z", "M12 12h7v5h-7z"],
  record: ["M12 21a9 9 0 1 0 0-18 9 9 0 0 0 0 18z", "M12 15a3 3 0 1 0 0-6 3 3 0 0 0 0 6z"],
  keyboard: ["M2 6h20v12H2z", "M6 10h.01", "M10 10h.01", "M14 10h.01", "M18 10h.01", "M7 14h10"],
  leave: ["M10 4H5v16h5", "M14 8l4 4-4 4", "M18 12H9"],
  end: ["M3 15c5-5 13-5 18 0l-2.5 2.5-3-1.5v-3a9 9 0 0 0-7 0v3l-3 1.5z"],
  prev: ["M15 5l-7 7 7 7"],
  next: ["M9 5l7 7-7 7"],
  pin: ["M9 3h6l-1 6 4 4H6l4-4z", "M12 13v8"],
  signal: ["M4 20v-3", "M9 20v-7", "M14 20v-11", "M19 20V5"],
};

export function icon(name) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("class", "icon");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  for (const d of PATHS[name] ?? []) {
    const path = document.createElementNS(SVG, "path");
    path.setAttribute("d", d);
    svg.append(path);
  }
  return svg;
}
