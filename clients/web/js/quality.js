// Connection quality from the media itself: getStats() of the subscriber connection gives each
// remote video's loss, frame rate and size, and the round trip; getStats() of the publisher
// connection gives one's own uplink (loss and round trip the SFU reports back, and whether the
// encoder is held back by bandwidth).  Sampled every few seconds; the rules are plain functions.

// Levels: "good", "fair", "poor", or null when there is nothing to judge yet.
// A video that should play but decodes no frames at all is frozen: poor.  A low frame rate alone
// is not judged (a screen share of a still slide sends a frame a second, and rightly so).
export function judge({ loss = null, rtt = null, fps = null, expectFrames = false }) {
  if (loss === null && rtt === null && fps === null) return null;
  if ((loss ?? 0) >= 0.08 || (rtt ?? 0) >= 0.5 || (expectFrames && fps === 0)) return "poor";
  if ((loss ?? 0) >= 0.02 || (rtt ?? 0) >= 0.25) return "fair";
  return "good";
}

// The loss over the last interval from two samples of cumulative counters (packetsLost can fall
// when late packets arrive: never below zero).
export function intervalLoss(before, after) {
  if (!before || !after) return null;
  const lost = Math.max(0, (after.packetsLost ?? 0) - (before.packetsLost ?? 0));
  const received = Math.max(0, (after.packetsReceived ?? 0) - (before.packetsReceived ?? 0));
  return lost + received > 0 ? lost / (lost + received) : null;
}

function roundTrip(report) {
  for (const stat of report.values()) {
    if (stat.type === "candidate-pair" && stat.nominated && stat.state === "succeeded" && stat.currentRoundTripTime !== undefined) {
      return stat.currentRoundTripTime;
    }
  }
  return null;
}

// Per remote video track: { loss, fps, width, height, rtt, level } from the subscriber's stats.
// `midTracks` maps the subscriber's mids to track ids, `previous` is the last sample's counters
// (updated in place), `forwarding` the SFU's last track-forwarding message per track.
export function remoteQuality(report, midTracks, previous, forwarding) {
  const rtt = roundTrip(report);
  const out = new Map();
  for (const stat of report.values()) {
    if (stat.type !== "inbound-rtp" || stat.kind !== "video") continue;
    const trackId = midTracks.get(stat.mid);
    if (!trackId) continue;
    const sent = forwarding.get(trackId);
    const counters = { packetsLost: stat.packetsLost, packetsReceived: stat.packetsReceived, forwarding: Boolean(sent?.forwarding) };
    const before = previous.get(trackId);
    const loss = intervalLoss(before, counters);
    previous.set(trackId, counters);
    // Frames are due once the SFU has forwarded the track for a whole interval.
    const expectFrames = counters.forwarding && Boolean(before?.forwarding);
    const fps = stat.framesPerSecond ?? (expectFrames ? 0 : null);
    const sample = { loss, fps, width: stat.frameWidth ?? null, height: stat.frameHeight ?? null, rtt, expectFrames };
    out.set(trackId, { ...sample, level: counters.forwarding ? judge(sample) : null, limited: sent?.reason === "bandwidth", layer: sent?.layer ?? null });
  }
  return out;
}

// One's own uplink from the publisher's stats: { loss, rtt, limited, level }.
export function uplinkQuality(report) {
  let loss = null;
  let rtt = null;
  let limited = false;
  for (const stat of report.values()) {
    if (stat.type === "remote-inbound-rtp") {
      if (stat.fractionLost !== undefined) loss = Math.max(loss ?? 0, stat.fractionLost);
      if (stat.roundTripTime !== undefined) rtt = Math.max(rtt ?? 0, stat.roundTripTime);
    }
    if (stat.type === "outbound-rtp" && stat.kind === "video" && stat.qualityLimitationReason === "bandwidth") limited = true;
  }
  rtt = rtt ?? roundTrip(report);
  const level = judge({ loss, rtt });
  return { loss, rtt, limited, level: limited && level === "good" ? "fair" : level };
}

// Words for a tile's quality badge, or null when it is good (nothing to show).
export function qualityText(quality) {
  if (!quality) return null;
  if (quality.limited) return "Low bandwidth";
  if (quality.level === "poor") return "Poor connection";
  if (quality.level === "fair") return "Unstable connection";
  return null;
}

// The details behind a badge, for its tooltip and accessible description.
export function qualityDetails(quality) {
  const parts = [];
  if (quality.loss !== null && quality.loss !== undefined) parts.push(`loss ${(quality.loss * 100).toFixed(1)}%`);
  if (quality.rtt !== null && quality.rtt !== undefined) parts.push(`round trip ${Math.round(quality.rtt * 1000)} ms`);
  if (quality.fps !== null && quality.fps !== undefined) parts.push(`${Math.round(quality.fps)} fps`);
  if (quality.height) parts.push(`${quality.width}x${quality.height}`);
  if (quality.layer !== null && quality.layer !== undefined) parts.push(`layer ${quality.layer}`);
  return parts.join(", ");
}
