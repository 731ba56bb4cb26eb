// The control API from the browser: tokens kept in localStorage, refreshed once on a 401.

const STORE = "videoconf.session";

export class ApiError extends Error {
  constructor(status, code, message, details = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

export function session() {
  try {
    return JSON.parse(localStorage.getItem(STORE) || "null");
  } catch {
    return null;
  }
}

function save(pair) {
  if (pair) localStorage.setItem(STORE, JSON.stringify(pair));
  else localStorage.removeItem(STORE);
}

async function send(method, path, body, token) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (token) headers.Authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw new ApiError(0, "network", "The server cannot be reached. Check your connection.");
  }
  return response;
}

async function refresh() {
  const current = session();
  if (!current?.refresh_token) return false;
  const response = await send("POST", "/api/auth/refresh", { refresh_token: current.refresh_token });
  if (!response.ok) {
    save(null);
    return false;
  }
  save(await response.json());
  return true;
}

// Calls the API; returns the parsed JSON (or the Response for `raw`), throws ApiError.
export async function api(method, path, body = undefined, { raw = false, auth = true } = {}) {
  let response = await send(method, path, body, auth ? session()?.access_token : null);
  if (response.status === 401 && auth && (await refresh())) {
    response = await send(method, path, body, session()?.access_token);
  }
  if (!response.ok) {
    let error = { code: "http_" + response.status, message: response.statusText || "Request failed" };
    try {
      error = (await response.json()).error ?? error;
    } catch {
      // not JSON
    }
    if (response.status === 401 && auth) save(null);
    throw new ApiError(response.status, error.code, error.message, error.details);
  }
  if (raw) return response;
  if (response.status === 204) return null;
  return response.json();
}

export async function login(email, password) {
  const pair = await api("POST", "/api/auth/login", { email, password }, { auth: false });
  save(pair);
  return pair;
}

export async function register(email, password, displayName) {
  const timezone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  const pair = await api("POST", "/api/auth/register", { email, password, display_name: displayName, timezone }, { auth: false });
  save(pair);
  return pair;
}

export async function logout() {
  const current = session();
  if (current?.refresh_token) {
    try {
      await api("POST", "/api/auth/logout", { refresh_token: current.refresh_token });
    } catch {
      // signed out locally anyway
    }
  }
  save(null);
}

export function updateUser(user) {
  const current = session();
  if (current) save({ ...current, user });
}

// A file behind authentication (an .ics, a recording) as an object URL.
export async function blobUrl(path) {
  const response = await api("GET", path, undefined, { raw: true });
  return URL.createObjectURL(await response.blob());
}
