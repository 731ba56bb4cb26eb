// What the meeting room shows, as plain values: which tiles are on screen, how many fit a page,
// and what the SFU should forward for each remote video track.  No DOM and no clock here, so that
// the rules can be checked on their own (tests/media/test_large_meeting.py runs them in Chromium).
//
// A tile is { key, identity, screen, trackId } where key is the identity, or identity + ":screen"
// for a screen share.  The room's own tile is never in these lists: the self view stands apart.

// Pages never hold more than this, so that the page, the pins and the speaker fit the SFU's limit
// of 16 pinned participants (signaling/protocol.py Pin).
export const MAX_PAGE = 12;
export const MAX_PINS = 16;

// How many tiles a page of the grid holds in a stage of `width` x `height` CSS pixels: about 3 x 3
// on a laptop, 2 x 3 on a phone held upright, 3 x 2 on its side.
export function gridShape(width, height) {
  const landscape = width > height;
  let cols = width >= 1500 ? 4 : width >= 640 ? 3 : 2;
  let rows = height >= 900 ? 4 : height >= 420 ? 3 : 2;
  if (landscape && height < 420) cols = Math.max(cols, 3);
  if (!landscape && width < 640) rows = Math.max(rows, 3);
  while (cols * rows > MAX_PAGE) rows -= 1;
  return { cols, rows, size: cols * rows };
}

// How many small tiles the speaker view's filmstrip shows under the stage.
export function filmstripSize(width) {
  return width >= 1200 ? 6 : width >= 640 ? 4 : 3;
}

// Tiles in the order the grid shows them: screen shares, then what this person pinned (in the
// order pinned), then everyone else in the order they joined.
export function orderTiles(tiles, pins) {
  const rank = (tile) => (tile.screen ? 0 : pins.includes(tile.identity) ? 1 : 2);
  const pinIndex = (tile) => (rank(tile) === 1 ? pins.indexOf(tile.identity) : 0);
  return tiles
    .map((tile, index) => ({ tile, index }))
    .sort((a, b) => rank(a.tile) - rank(b.tile) || pinIndex(a.tile) - pinIndex(b.tile) || a.index - b.index)
    .map(({ tile }) => tile);
}

export function pageCount(total, size) {
  return Math.max(1, Math.ceil(total / Math.max(1, size)));
}

export function clampPage(page, total, size) {
  return Math.min(Math.max(0, page), pageCount(total, size) - 1);
}

// The tile the speaker view puts on its stage: a screen share first, then the first pin, then the
// dominant speaker, then whoever spoke last, then the first tile.
export function stageTile(tiles, pins, dominant, lastSpeaker) {
  return tiles.find((t) => t.screen)
    ?? tiles.find((t) => !t.screen && pins.includes(t.identity))
    ?? tiles.find((t) => !t.screen && t.identity === dominant)
    ?? tiles.find((t) => !t.screen && t.identity === lastSpeaker)
    ?? tiles[0]
    ?? null;
}

// What is on screen.  Returns { shown: [tile], stage: tile|null, floating: tile|null, page, pages }.
// Grid: one page of the ordered tiles; when the dominant speaker is on another page a small
// floating tile shows them.  Speaker view: the stage tile large and a page of the others in the
// filmstrip.  `visible` false (a hidden tab) shows nothing.
export function arrange({ tiles, pins, dominant, lastSpeaker = null, view, page, pageSize, filmSize, visible = true }) {
  if (!visible) return { shown: [], stage: null, floating: null, page: 0, pages: 1 };
  const ordered = orderTiles(tiles, pins);
  if (view === "speaker") {
    const stage = stageTile(ordered, pins, dominant, lastSpeaker);
    const rest = ordered.filter((t) => t !== stage);
    const current = clampPage(page, rest.length, filmSize);
    const strip = rest.slice(current * filmSize, (current + 1) * filmSize);
    return { shown: stage ? [stage, ...strip] : strip, stage, floating: null, page: current, pages: pageCount(rest.length, filmSize) };
  }
  const current = clampPage(page, ordered.length, pageSize);
  const shown = ordered.slice(current * pageSize, (current + 1) * pageSize);
  const speaker = dominant ? ordered.find((t) => !t.screen && t.identity === dominant) : null;
  const floating = speaker && !shown.includes(speaker) ? speaker : null;
  return { shown, stage: null, floating, page: current, pages: pageCount(ordered.length, pageSize) };
}

// The page that holds `identity`'s tile in the grid, or null.
export function pageOf(tiles, pins, identity, pageSize) {
  const index = orderTiles(tiles, pins).findIndex((t) => !t.screen && t.identity === identity);
  return index < 0 ? null : Math.floor(index / pageSize);
}

// The SFU's pin list for this view: what the person pinned, the dominant speaker, then the shown
// camera tiles, at most MAX_PINS.  The SFU forwards pinned participants' video whatever its
// last-N says, so that every tile on screen plays.
export function pinsFor(arrangement, pins, dominant) {
  const out = [];
  const add = (identity) => identity && !out.includes(identity) && out.length < MAX_PINS && out.push(identity);
  pins.forEach(add);
  if (arrangement.shown.length || arrangement.floating) add(dominant);
  for (const tile of [...arrangement.shown, arrangement.floating]) if (tile && !tile.screen) add(tile.identity);
  return out;
}

// What to ask the SFU for each remote video track: { trackId: {width, height} } for what is drawn
// (its size in device pixels, `sizes` keyed by tile key) and { quality: "off" } for the rest.
// `hiddenKeys` are shown tiles scrolled out of sight (they ask for nothing either).
export function trackRequests(tiles, arrangement, sizes, hiddenKeys = new Set()) {
  const drawn = new Set([...arrangement.shown, arrangement.floating].filter(Boolean).map((t) => t.key));
  const out = {};
  for (const tile of tiles) {
    if (!tile.trackId) continue;
    const size = sizes[tile.key];
    if (drawn.has(tile.key) && !hiddenKeys.has(tile.key) && size && size.width > 0 && size.height > 0) {
      out[tile.trackId] = { width: Math.round(size.width), height: Math.round(size.height) };
    } else {
      out[tile.trackId] = { quality: "off" };
    }
  }
  return out;
}

// The requests that differ from those sent before: a size counts as changed when it moved by
// more than a tenth (a window dragged by a few pixels asks for nothing new).
export function changedRequests(previous, next) {
  const changes = [];
  for (const [trackId, want] of Object.entries(next)) {
    const was = previous[trackId];
    if (!was || Boolean(was.quality) !== Boolean(want.quality)) changes.push({ track_id: trackId, ...want });
    else if (!want.quality && (Math.abs(was.width - want.width) > was.width / 10 || Math.abs(was.height - want.height) > was.height / 10)) {
      changes.push({ track_id: trackId, ...want });
    }
  }
  return changes;
}

// The participant list's order: hands up first, in the order raised, then everyone else by name;
// `query` keeps those whose name holds it (any case).
export function peopleOrder(people, query = "") {
  const needle = query.trim().toLowerCase();
  const matching = people.filter((p) => !needle || (p.name || "").toLowerCase().includes(needle));
  const raised = matching.filter((p) => p.hand_raised).sort((a, b) => (a.hand_raised_at ?? Infinity) - (b.hand_raised_at ?? Infinity));
  const rest = matching.filter((p) => !p.hand_raised).sort((a, b) => (a.name || "").localeCompare(b.name || ""));
  return [...raised, ...rest];
}
